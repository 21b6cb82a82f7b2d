"""Posterior predictive checks (pyrovae.evaluate.ppc) on pairs whose true model is known.

Data are drawn from the model itself with fixed parameters, so the checks must
pass on them and flag data the model cannot produce (inverted images, rescaled
vectors).
"""

import os

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrovae.evaluate import ppc
from pyrovae.guides import GaussianGuide
from pyrovae.nn.likelihoods import Bernoulli
from pyrovae.models import VAE
from pyrovae.nn.nets import MLPDecoder, MLPEncoder
from pyrovae.infer.trace import PairError
from pyrovae.nn.priors import StandardNormal

SHAPE = (1, 8, 8)
NUM_DATA = 256
NUM_SAMPLES = 200


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tensors here are tiny: one thread avoids oversubscribing a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------
# A tiny Bernoulli VAE with fixed random decoder weights, and a guide fitted to it

@pytest.fixture(scope="module")
def vae_pair():
    torch.manual_seed(0)
    decoder = MLPDecoder(SHAPE, 2, hidden=(32,))
    with torch.no_grad():
        for p in decoder.parameters():
            p.mul_(3.0)  # sharper images than at initialization
        decoder.net[-1].bias.sub_(1.5)  # mostly dark images: their inverse is far from anything the model makes
    model = VAE(decoder, StandardNormal(2), Bernoulli())
    model.requires_grad_(False)
    x = ppc.prior_predictive(model, torch.zeros(NUM_DATA, *SHAPE), num_samples=1, seed=1)["x"][0]
    # fit only the guide, so q(z|x) approaches the model's true posterior p(z|x)
    guide = GaussianGuide(MLPEncoder(SHAPE, 2, hidden=(32,)))
    opt = torch.optim.Adam(guide.parameters(), lr=1e-2)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    for _ in range(300):
        opt.zero_grad()
        elbo.differentiable_loss(model, guide, x).backward()
        opt.step()
    guide.requires_grad_(False)
    return model, guide, x


@pytest.fixture(scope="module")
def result_on_model_data(vae_pair, tmp_path_factory):
    model, guide, x = vae_pair
    folder = tmp_path_factory.mktemp("ppc_plots")
    return ppc.run_ppc(model, guide, x, num_samples=NUM_SAMPLES, folder=str(folder), seed=0)


def test_data_from_the_model_passes(result_on_model_data):
    summary = result_on_model_data["summary"]
    assert set(summary["p_value"]) == {"mean_intensity", "mean_ink", "ink_sd"}
    for name, p in summary["p_value"].items():
        assert 0.01 <= p <= 0.99, (name, p)
    # per-datum and per-pixel p-values: few extremes (posterior predictive p-values are conservative)
    for name in ("intensity", "ink", "pixel_means"):
        assert summary["extreme_fraction"][name] <= 0.15, (name, summary["extreme_fraction"][name])


def test_inverted_images_are_flagged(vae_pair):
    model, guide, x = vae_pair
    result = ppc.run_ppc(model, guide, 1 - x, num_samples=NUM_SAMPLES, seed=0)
    p = result["summary"]["p_value"]
    assert p["mean_intensity"] < 0.01 or p["mean_intensity"] > 0.99
    assert p["mean_ink"] < 0.01 or p["mean_ink"] > 0.99
    assert result["summary"]["extreme_fraction"]["ink"] > 0.5
    assert result["summary"]["extreme_fraction"]["pixel_means"] > 0.5


def test_shapes_of_draws_and_statistics(vae_pair, result_on_model_data):
    _, _, x = vae_pair
    stats = result_on_model_data["statistics"]
    obs, rep = stats["ink"]
    assert obs.shape == (NUM_DATA,) and rep.shape == (NUM_SAMPLES, NUM_DATA)
    assert torch.equal(obs, x.sum((1, 2, 3)))
    obs, rep = stats["pixel_means"]
    assert obs.shape == SHAPE and rep.shape == (NUM_SAMPLES, *SHAPE)
    assert stats["mean_intensity"][0].shape == () and stats["mean_intensity"][1].shape == (NUM_SAMPLES,)
    assert result_on_model_data["p_values"]["ink"].shape == (NUM_DATA,)
    assert result_on_model_data["num_data"] == NUM_DATA


def test_inference_data_groups_dims_and_netcdf(vae_pair, result_on_model_data, tmp_path):
    _, _, x = vae_pair
    idata = result_on_model_data["idata"]
    for group in ("posterior", "posterior_predictive", "observed_data", "log_likelihood"):
        assert group in idata.groups(), group
    assert idata.posterior["z"].dims == ("chain", "draw", "datum", "z_dim")
    assert idata.posterior["z"].shape == (1, NUM_SAMPLES, NUM_DATA, 2)
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "datum", "channel", "row", "column")
    assert idata.observed_data["x"].dims == ("datum", "channel", "row", "column")
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "datum")
    np.testing.assert_array_equal(idata.observed_data["x"].values, x.numpy())
    path = tmp_path / "ppc.nc"
    idata.to_netcdf(str(path), engine="h5netcdf")
    back = az.from_netcdf(str(path), engine="h5netcdf")
    for group in ("posterior", "posterior_predictive", "observed_data", "log_likelihood"):
        for name, var in getattr(idata, group).data_vars.items():
            loaded = getattr(back, group)[name]
            assert loaded.dims == var.dims
            np.testing.assert_array_equal(loaded.values, var.values)


def test_log_likelihood_is_log_p_x_given_the_posterior_draws(vae_pair, result_on_model_data):
    model, _, x = vae_pair
    idata = result_on_model_data["idata"]
    z = torch.as_tensor(idata.posterior["z"].values[0, :5])  # [5, B, 2]
    expected = dist.Bernoulli(logits=model.decoder(z)).log_prob(x).sum((-3, -2, -1))
    got = torch.as_tensor(idata.log_likelihood["x"].values[0, :5])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert bool((got < 0).all())
    draws, log_lik = ppc.posterior_predictive(model, vae_pair[1], x, num_samples=5, chunk_size=2, seed=3)
    expected = dist.Bernoulli(logits=model.decoder(draws["z"])).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(log_lik, expected, rtol=1e-5, atol=1e-4)


def test_plots_are_written(result_on_model_data):
    plots = result_on_model_data["plots"]
    names = {os.path.basename(p) for p in plots}
    assert {"ppc_x.png", "ppc_ink.png", "ppc_intensity.png", "stat_mean_intensity.png", "stat_ink_sd.png",
            "stat_pixel_means.png"} <= names
    for path in plots:
        assert os.path.getsize(path) > 1000, path
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_draws_and_global_rng_untouched(vae_pair):
    model, guide, x = vae_pair
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, _ = ppc.posterior_predictive(model, guide, x[:16], num_samples=7, seed=5)
    after = torch.rand(3)
    b, _ = ppc.posterior_predictive(model, guide, x[:16], num_samples=7, seed=5, chunk_size=3)
    c, _ = ppc.posterior_predictive(model, guide, x[:16], num_samples=7, seed=6)
    assert torch.equal(before, after)
    assert set(a) == {"z", "x"}
    assert a["z"].shape == (7, 16, 2) and a["x"].shape == (7, 16, *SHAPE)
    assert b["x"].shape == a["x"].shape
    assert not torch.equal(a["z"], c["z"])
    torch.testing.assert_close(a, ppc.posterior_predictive(model, guide, x[:16], num_samples=7, seed=5)[0])


def test_prior_predictive(vae_pair):
    model, _, x = vae_pair
    draws = ppc.prior_predictive(model, x[:10], num_samples=4, seed=0)
    assert draws["z"].shape == (4, 10, 2) and draws["x"].shape == (4, 10, *SHAPE)
    assert bool(((draws["x"] == 0) | (draws["x"] == 1)).all())
    post, _ = ppc.posterior_predictive(model, vae_pair[1], x[:12], num_samples=4, seed=0)
    idata = ppc.to_inference_data(x[:12], post, obs_site="x", prior_samples=draws)
    assert {"prior", "prior_predictive"} <= set(idata.groups())
    assert idata.prior_predictive["x"].shape == (1, 4, 10, *SHAPE)


# ---------------------------------------------------------------------------
# p-values by hand

def test_bayesian_p_values_by_hand():
    rep = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert float(ppc.bayesian_p_values(rep, torch.tensor(2.0))) == 0.5
    assert float(ppc.bayesian_p_values(rep, torch.tensor(2.0), mid_p=True)) == 0.375
    assert float(ppc.bayesian_p_values(rep, torch.tensor(5.0))) == 0.0
    p = ppc.bayesian_p_values({"a": torch.tensor([[0.0, 5.0], [1.0, 6.0]])}, {"a": torch.tensor([1.0, 0.0])})
    torch.testing.assert_close(p["a"], torch.tensor([0.5, 1.0], dtype=torch.float64))
    assert ppc.extreme_fraction(torch.tensor([0.0, 0.5, 0.6, 1.0])) == 0.5
    with pytest.raises(ValueError, match="stats_rep must have shape"):
        ppc.bayesian_p_values(torch.zeros(4, 3), torch.zeros(2))


# ---------------------------------------------------------------------------
# A linear-Gaussian pair in Pyro's tutorial style, with its own site names and the exact posterior

DIM, LATENT, NOISE = 6, 2, 0.3


def _linear_gaussian():
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(DIM, LATENT, generator=g)
    bias = torch.randn(DIM, generator=g)

    def model(x, batch_size=None):
        with pyro.plate("data", x.shape[0] if x is not None else batch_size):
            h = pyro.sample("h", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
            return pyro.sample("obs", dist.Normal(h @ weight.T + bias, NOISE).to_event(1), obs=x)

    precision = torch.eye(LATENT) + weight.T @ weight / NOISE ** 2
    cov = torch.linalg.inv(precision)

    def guide(x, batch_size=None):  # the exact posterior p(h | x)
        with pyro.plate("data", x.shape[0]):
            loc = (x - bias) @ weight @ cov.T / NOISE ** 2
            pyro.sample("h", dist.MultivariateNormal(loc, covariance_matrix=cov))

    return model, guide


def _sq_norm(x):
    return (x ** 2).sum(-1)


def test_any_pair_with_its_own_site_names_and_user_statistics():
    model, guide = _linear_gaussian()
    x = ppc.prior_predictive(model, torch.zeros(200, DIM), num_samples=1, obs_site="obs", seed=2)["obs"][0]
    stats = {"sq_norm": ppc.TestStatistic(_sq_norm, per_datum=True), "max": lambda d: d.max(),
             "ink_sd": ppc.ink_sd}
    result = ppc.run_ppc(model, guide, x, num_samples=300, statistics=stats, obs_site="obs", seed=0)
    assert set(result["summary"]["p_value"]) == {"mean_sq_norm", "max", "ink_sd"}
    for name, p in result["summary"]["p_value"].items():
        assert 0.01 <= p <= 0.99, (name, p)
    assert result["summary"]["extreme_fraction"]["sq_norm"] <= 0.15
    idata = result["idata"]
    assert idata.posterior["h"].dims == ("chain", "draw", "datum", "h_dim")
    assert idata.posterior_predictive["obs"].dims == ("chain", "draw", "datum", "obs_dim")
    assert idata.log_likelihood["obs"].shape == (1, 300, 200)

    flagged = ppc.run_ppc(model, guide, 3 * x, num_samples=300, statistics=stats, obs_site="obs", seed=0)
    assert flagged["summary"]["p_value"]["mean_sq_norm"] < 0.01
    assert flagged["summary"]["extreme_fraction"]["sq_norm"] > 0.5


def test_a_model_that_only_scores_data_needs_no_batch_size():
    """Pyro's usual model(x): the replicated data are the observed site resampled, x giving only the shape."""
    _, guide = _linear_gaussian()

    def scoring_only_model(x):
        with pyro.plate("data", x.shape[0]):
            h = pyro.sample("h", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(h.sum(-1, keepdim=True).expand(*h.shape[:-1], DIM), 1.0).to_event(1), obs=x)

    x = torch.zeros(4, DIM)
    draws, log_lik = ppc.posterior_predictive(scoring_only_model, guide, x, num_samples=2000, obs_site="obs", seed=0)
    rep = draws["obs"] - draws["h"].sum(-1, keepdim=True)  # x^rep - E[x^rep | h] ~ N(0, 1)
    assert rep.shape == (2000, 4, DIM) and abs(float(rep.std()) - 1.0) < 0.03 and abs(float(rep.mean())) < 0.03
    prior = ppc.prior_predictive(scoring_only_model, x, num_samples=3, obs_site="obs", seed=0)
    assert prior["obs"].shape == (3, 4, DIM) and prior["h"].shape == (3, 4, LATENT)


def test_clear_errors():
    model, guide = _linear_gaussian()
    x = torch.zeros(4, DIM)
    with pytest.raises(PairError, match="obs_site 'x' is not an observed site"):
        ppc.posterior_predictive(model, guide, x, num_samples=2)
    with pytest.raises(ValueError, match="num_samples"):
        ppc.posterior_predictive(model, guide, x, num_samples=0, obs_site="obs")
    with pytest.raises(TypeError, match="data must be"):
        ppc.run_ppc(model, guide, [[0.0]], obs_site="obs")

    with pytest.raises(ValueError, match="per-datum statistic 'bad'"):
        ppc.compute_statistics(x, x[None], {"bad": ppc.TestStatistic(lambda d: d.sum(), per_datum=True)})
    with pytest.raises(ValueError, match="non-finite"):
        ppc.compute_statistics(x, x[None], {"nan": lambda d: d.sum() * float("nan")})
