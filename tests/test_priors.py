"""Priors: mixture densities against brute force, the VampPrior as an aggregate posterior, prior swaps."""

import math

import pyro
import pytest
import torch

from pyrovae.app.build import build_pair
from pyrovae.data import Split
from pyrovae.nn.nets import MLPEncoder
from pyrovae.nn.priors import MixtureOfGaussians, StandardNormal, VampPrior, make_prior
from pyrovae.app.config import make_config

DT = torch.float64


def _normal_log_density(z, loc, scale):
    """log N(z; loc, diag(scale^2)) summed over the last dim, written out."""
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def _brute_force_mixture(z, locs, scales, weights):
    """log sum_k w_k N(z; loc_k, scale_k) by an explicit loop over components."""
    total = torch.zeros(z.shape[:-1], dtype=z.dtype)
    for loc, scale, w in zip(locs, scales, weights):
        total = total + w * _normal_log_density(z, loc, scale).exp()
    return total.log()


def test_mixture_of_gaussians_log_density_is_the_mixture():
    torch.manual_seed(0)
    prior = MixtureOfGaussians(3, num_components=5).double()
    with torch.no_grad():
        prior.logits.copy_(torch.randn(5, dtype=DT))
        prior.log_scale.copy_(0.3 * torch.randn(5, 3, dtype=DT))
    z = torch.randn(7, 2, 3, dtype=DT)
    expected = _brute_force_mixture(z, prior.loc, prior.log_scale.exp(), torch.softmax(prior.logits, 0))
    got = prior().log_prob(z)
    assert got.shape == (7, 2)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_vampprior_log_density_is_the_mean_of_the_encoder_posteriors():
    torch.manual_seed(1)
    encoder = MLPEncoder((1, 4, 4), 3, hidden=(8,)).double()
    prior = VampPrior(encoder, (1, 4, 4), num_components=6).double()
    z = torch.randn(5, 3, dtype=DT)
    locs, scales = [], []
    for u in prior.pseudo_inputs:  # one pseudo-input at a time through the encoder
        loc, log_scale = encoder(u.unsqueeze(0))
        locs.append(loc[0]), scales.append(log_scale[0].exp())
    expected = _brute_force_mixture(z, locs, scales, [1 / 6] * 6)
    torch.testing.assert_close(prior().log_prob(z), expected, rtol=1e-10, atol=1e-10)


def test_vampprior_pseudo_inputs_are_clipped_to_the_pixel_range_and_initialised_as_in_the_paper():
    torch.manual_seed(0)
    prior = VampPrior(MLPEncoder((1, 8, 8), 2, hidden=(4,)), (1, 8, 8), num_components=500)
    raw = prior.pseudo_inputs_raw.detach()
    assert abs(raw.mean().item() - 0.05) < 0.001 and abs(raw.std().item() - 0.01) < 0.001
    with torch.no_grad():
        prior.pseudo_inputs_raw[0].fill_(2.0)
        prior.pseudo_inputs_raw[1].fill_(-1.0)
    u = prior.pseudo_inputs
    assert u.min() >= 0 and u.max() <= 1 and u[0].eq(1).all() and u[1].eq(0).all()


def test_vampprior_on_the_training_points_is_the_aggregate_posterior():
    """With u_n = x_n (n = 1..N), p(z) = (1/N) sum_n q(z | x_n), Tomczak & Welling 2018 eq. 8."""
    torch.manual_seed(2)
    x = torch.rand(12, 1, 5, 5, dtype=DT)
    encoder = MLPEncoder((1, 5, 5), 4, hidden=(16,)).double()
    prior = VampPrior(encoder, (1, 5, 5), num_components=12, init="data", data=x).double()
    loc, log_scale = encoder(x)
    q = torch.distributions.Independent(torch.distributions.Normal(loc, log_scale.exp()), 1)
    z = torch.randn(9, 1, 4, dtype=DT)
    aggregate = torch.logsumexp(q.log_prob(z), dim=-1) - math.log(12)
    torch.testing.assert_close(prior().log_prob(z[:, 0]), aggregate, rtol=1e-10, atol=1e-10)


def test_vampprior_shares_the_guide_encoder_registered_once():
    cfg = make_config(model="vae", prior="vamp", components=7, latent_dim=3, hidden=[8], out="unused")
    cfg["image_shape"] = [1, 6, 6]
    model, guide, _ = build_pair(cfg)
    assert model.prior.encoder is guide.encoder
    model_names = dict(model.named_parameters())
    assert not any(name.startswith("prior.encoder") for name in model_names)  # the guide owns it
    assert "prior.pseudo_inputs_raw" in model_names
    from pyrovae.infer.elbo import ELBO

    module = ELBO()(model, guide)
    ids = [id(p) for p in module.parameters()]
    assert len(ids) == len(set(ids))
    assert {id(p) for p in guide.encoder.parameters()} <= set(ids)
    # a gradient step through the prior reaches the shared encoder
    x = (torch.rand(4, 1, 6, 6) < 0.5).float()
    model.zero_grad(), guide.zero_grad()
    (-model.prior().log_prob(torch.randn(4, 3)).sum()).backward()
    assert guide.encoder.head.loc.weight.grad.abs().sum() > 0
    assert module(x).isfinite()


@pytest.mark.parametrize("model_name", ["vae", "hvae"])
def test_swapping_the_prior_changes_nothing_else(model_name):
    """Same seed, same networks and parameter names; only the prior's own parameters differ."""
    pairs = {}
    for prior in ("standard", "mog", "vamp"):
        cfg = make_config(model=model_name, prior=prior, components=5, latent_dim=3, hidden=[8], out="unused")
        cfg["image_shape"] = [1, 6, 6]
        pyro.set_rng_seed(0)
        pairs[prior] = build_pair(cfg)[:2]

    def named(pair, own_prior):
        model, guide = pair
        params = {f"model.{k}": v for k, v in model.named_parameters() if not k.startswith("prior.")}
        params.update({f"guide.{k}": v for k, v in guide.named_parameters()})
        return params, {k for k, _ in model.prior.named_parameters()}

    base, base_prior = named(pairs["standard"], "standard")
    assert base_prior == set()
    for prior in ("mog", "vamp"):
        params, own = named(pairs[prior], prior)
        assert set(params) == set(base)
        for k in base:
            torch.testing.assert_close(params[k], base[k], rtol=0, atol=0)
        assert own == ({"loc", "log_scale", "logits"} if prior == "mog" else {"pseudo_inputs_raw"})


def test_pseudo_inputs_from_training_images():
    images = torch.rand(40, 1, 6, 6)
    cfg = make_config(model="vae", prior="vamp", prior_init="data", components=10, latent_dim=2, hidden=[8],
                      out="unused")
    cfg["image_shape"] = [1, 6, 6]
    model, _, _ = build_pair(cfg, Split(images))
    u = model.prior.pseudo_inputs.detach()
    assert all(any(torch.equal(ui, xi) for xi in images) for ui in u)
    with pytest.raises(ValueError, match="training data"):
        build_pair(cfg)
    cfg["components"] = 100
    with pytest.raises(ValueError, match="100 pseudo-inputs"):
        build_pair(cfg, Split(images))


def test_prior_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown prior 'gauss'"):
        make_prior("gauss", 3)
    with pytest.raises(ValueError, match="guide's encoder"):
        make_prior("vamp", 3)
    with pytest.raises(ValueError, match="num_components"):
        MixtureOfGaussians(3, 0)
    with pytest.raises(ValueError, match="unknown pseudo-input init"):
        VampPrior(MLPEncoder((1, 4, 4), 2, hidden=(4,)), (1, 4, 4), 3, init="kmeans")
    assert isinstance(make_prior("standard", 2), StandardNormal)
