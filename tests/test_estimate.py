"""Importance-sampled log p(x), the IWAE objective and DReG, checked on probabilistic PCA.

Probabilistic PCA (Tipping & Bishop 1999): z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D),
so p(x) = N(x; b, W W^T + s^2 I) and p(z | x) = N(S W^T (x - b) / s^2, S) with
S = (I + W^T W / s^2)^{-1}. W has orthogonal columns, so S is diagonal and the
exact posterior is a diagonal-Gaussian guide. Everything runs in float64.
"""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrovae.data import Batch
from pyrovae.evaluate.likelihood import iwae_bound, log_likelihood, naive_log_likelihood
from pyrovae.infer.iwae import IWAE
from pyrovae.infer.elbo import ELBO
from pyrovae.util import peak_tensor_bytes

D, LATENT, NOISE = 4, 2, 0.5
DT = torch.float64


class PPCA(nn.Module):
    def __init__(self):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(D, LATENT, generator=torch.Generator().manual_seed(0), dtype=DT))
        self.W = nn.Parameter(q * torch.tensor([1.5, 0.8], dtype=DT))
        self.b = nn.Parameter(torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=DT))
        self.max_particles = 0
        self.particles_seen = 0

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(LATENT, dtype=DT), 1.0).to_event(1))
            if z.dim() == 3:  # [K, B, d] under the particle plate: record the chunk size
                self.max_particles = max(self.max_particles, z.shape[0])
                self.particles_seen += z.shape[0]
            return pyro.sample("x", dist.Normal(z @ self.W.T + self.b, NOISE).to_event(1), obs=x)

    def log_px(self, x):
        cov = self.W @ self.W.T + NOISE ** 2 * torch.eye(D, dtype=DT)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def posterior(self):
        """(A, c, log_scale) of the exact posterior: loc = A x + c."""
        prec = torch.eye(LATENT, dtype=DT) + self.W.T @ self.W / NOISE ** 2
        cov = torch.linalg.inv(prec)
        a = cov @ self.W.T / NOISE ** 2
        return a, -a @ self.b, 0.5 * torch.log(torch.diagonal(cov))


class LinearGuide(nn.Module):
    """q(z | x) = N(A x + c, diag(exp(log_scale))^2)."""

    def __init__(self, a, c, log_scale):
        super().__init__()
        self.A = nn.Parameter(a.clone())
        self.c = nn.Parameter(c.clone())
        self.log_scale = nn.Parameter(log_scale.clone())

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.log_scale.exp()).to_event(1))


def make_pair(exact=False):
    model = PPCA()
    a, c, log_scale = (t.detach() for t in model.posterior())
    if not exact:  # a reasonable guide: shifted mean, 1.4x wider
        a, c, log_scale = 1.1 * a, c + 0.3, log_scale + math.log(1.4)
    return model, LinearGuide(a, c, log_scale)


def make_data(model, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, LATENT, generator=g, dtype=DT)
    with torch.no_grad():
        return z @ model.W.T + model.b + NOISE * torch.randn(n, D, generator=g, dtype=DT)


def test_log_likelihood_k5000_within_three_standard_errors():
    model, guide = make_pair()
    x = make_data(model, 20)
    exact = model.log_px(x).detach()
    res = log_likelihood(model, guide, x, num_samples=5000, chunk_size=1000, batch_size=8, seed=0)
    assert res.log_px.shape == (20,)
    assert torch.all(res.std_error > 0)
    # per datapoint, and the mean NLL against its own Monte Carlo standard error
    assert torch.all((res.log_px - exact).abs() <= 4 * res.std_error)
    assert abs(res.nll - float(-exact.mean())) <= 3 * res.nll_std_error
    assert res.nll > 0
    assert res.to_dict()["num_datapoints"] == 20


def test_naive_estimator_within_three_standard_errors():
    model, _ = make_pair()
    x = make_data(model, 10)
    exact = model.log_px(x).detach()
    res = naive_log_likelihood(model, x, num_samples=5000, chunk_size=2500, seed=0)
    assert torch.all((res.log_px - exact).abs() <= 4 * res.std_error)
    assert abs(res.nll - float(-exact.mean())) <= 3 * res.nll_std_error


def test_exact_posterior_guide_makes_every_estimator_exact():
    model, guide = make_pair(exact=True)
    x = make_data(model, 12)
    exact = model.log_px(x).detach()
    res = log_likelihood(model, guide, x, num_samples=50, chunk_size=16, seed=0)
    torch.testing.assert_close(res.log_px, exact, atol=1e-9, rtol=0)
    assert torch.all(res.std_error < 1e-6)
    for k in (1, 5, 50):
        torch.testing.assert_close(iwae_bound(model, guide, x, k), exact, atol=1e-9, rtol=0)
    _, stats = ELBO(analytic_kl=False).loss(model, guide, x)
    torch.testing.assert_close(stats["elbo"], exact.mean(), atol=1e-9, rtol=0)
    loss, _ = IWAE(num_particles=5).loss(model, guide, x)
    torch.testing.assert_close(-loss.detach(), exact.mean(), atol=1e-9, rtol=0)


def test_bounds_are_ordered_elbo_iwae5_iwae50_log_px():
    torch.manual_seed(0)
    model, guide = make_pair()
    x = make_data(model, 10)
    exact = float(model.log_px(x).detach().mean())
    reps = 200
    xs = x.repeat(reps, 1)
    means, ses = {}, {}
    for k in (1, 5, 50):
        per_rep = iwae_bound(model, guide, xs, k).reshape(reps, -1).mean(1)
        means[k], ses[k] = float(per_rep.mean()), float(per_rep.std() / math.sqrt(reps))

    def le(a, b, se):
        return a <= b + 3 * se

    assert le(means[1], means[5], math.hypot(ses[1], ses[5]))
    assert le(means[5], means[50], math.hypot(ses[5], ses[50]))
    assert le(means[50], exact, ses[50])
    # the guide is imperfect: the gaps are real, not just allowed
    assert means[1] < means[50] - 3 * math.hypot(ses[1], ses[50])


def test_chunks_bound_the_particles_run_at_once():
    model, guide = make_pair()
    x = make_data(model, 6)
    log_likelihood(model, guide, x, num_samples=5000, chunk_size=512, seed=0)
    assert model.max_particles == 512
    assert model.particles_seen == 5000
    model.max_particles = model.particles_seen = 0
    naive_log_likelihood(model, x, num_samples=1000, chunk_size=300, seed=0)
    assert model.max_particles == 300 and model.particles_seen == 1000


def test_log_likelihood_is_reproducible_and_leaves_global_rng_alone():
    model, guide = make_pair()
    x = make_data(model, 5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = log_likelihood(model, guide, x, num_samples=100, chunk_size=30, seed=7)
    b = log_likelihood(model, guide, x, num_samples=100, chunk_size=30, seed=7)
    assert torch.equal(a.log_px, b.log_px)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="chunk_size"):
        log_likelihood(model, guide, x, chunk_size=0)


def test_iwae_k1_equals_monte_carlo_elbo_on_the_same_draws():
    model, guide = make_pair()
    x = make_data(model, 7)
    iwae = IWAE(num_particles=1)
    iwae.loss(model, guide, x)  # caches the plate nesting (one extra run of the pair)
    for seed in range(3):
        torch.manual_seed(seed)
        l_iwae, s_iwae = iwae.loss(model, guide, x)
        torch.manual_seed(seed)
        l_elbo, s_elbo = ELBO(analytic_kl=False).loss(model, guide, x)
        torch.testing.assert_close(l_iwae, l_elbo, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s_iwae["elbo"], s_elbo["elbo"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dreg", [False, True])
def test_iwae_matches_pyro_renyi_elbo_alpha0(dreg):
    model, guide = make_pair()
    x = make_data(model, 1)
    k = 10
    iwae = IWAE(num_particles=k, dreg=dreg)
    iwae.loss(model, guide, x)
    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    for seed in range(3):
        torch.manual_seed(seed)
        ours, _ = iwae.loss(model, guide, x)
        torch.manual_seed(seed)
        theirs = renyi.loss(model, guide, x)
        assert ours.item() == pytest.approx(theirs, rel=1e-10, abs=1e-10)


def _grads(objective, model, guide, x, seed):
    torch.manual_seed(seed)
    params = list(model.parameters()) + list(guide.parameters())
    loss, _ = objective.loss(model, guide, x)
    grads = torch.autograd.grad(loss, params)
    n = len(list(model.parameters()))
    return loss.detach(), torch.cat([g.flatten() for g in grads[:n]]), torch.cat([g.flatten() for g in grads[n:]])


class LocalGuide(nn.Module):
    """A non-amortized guide q(z_i) = N(loc[i], diag(exp(log_scale[i]))^2): one parameter row per datapoint,

    so the gradient for row i is one independent draw of datapoint i's guide gradient.
    """

    def __init__(self, loc, log_scale):
        super().__init__()
        self.loc = nn.Parameter(loc.clone())
        self.log_scale = nn.Parameter(log_scale.clone())

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))


def test_dreg_same_value_and_model_gradient_unbiased_and_lower_variance_guide_gradient():
    model, amortized = make_pair()
    x0 = make_data(model, 1)
    draws, k = 4000, 10
    x = x0.expand(draws, D)  # one datapoint, `draws` independent copies of its guide parameters
    with torch.no_grad():
        loc, log_scale = amortized.A @ x0[0] + amortized.c, amortized.log_scale
    guide = LocalGuide(loc.expand(draws, LATENT), log_scale.expand(draws, LATENT))
    std, dreg = IWAE(num_particles=k), IWAE(num_particles=k, dreg=True)
    std.loss(model, guide, x), dreg.loss(model, guide, x)
    grads = {}
    for name, objective in (("std", std), ("dreg", dreg)):
        grads[name] = _grads(objective, model, guide, x, seed=0)
    # same draws: same loss and same model gradient (DReG changes only the guide's)
    torch.testing.assert_close(grads["std"][0], grads["dreg"][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads["std"][1], grads["dreg"][1], rtol=1e-9, atol=1e-12)
    # per-draw guide gradients [draws, 2 * LATENT] (the loss is a mean over datapoints: undo the 1/draws)
    g_std = grads["std"][2].reshape(2, draws, LATENT).permute(1, 0, 2).reshape(draws, -1) * draws
    g_dreg = grads["dreg"][2].reshape(2, draws, LATENT).permute(1, 0, 2).reshape(draws, -1) * draws
    # same expectation: paired differences have mean zero within 4 standard errors
    diff = g_std - g_dreg
    se = diff.std(0) / math.sqrt(draws)
    assert torch.all(diff.mean(0).abs() <= 4 * se)
    # and the guide gradient is not trivially zero: its mean is resolved by DReG
    assert torch.any(g_dreg.mean(0).abs() > 4 * g_dreg.std(0) / math.sqrt(draws))
    # DReG's variance is lower, in total and for every coordinate
    assert g_dreg.var(0).sum() < 0.5 * g_std.var(0).sum()
    assert torch.all(g_dreg.var(0) < g_std.var(0))


def test_dreg_guide_gradient_vanishes_at_the_exact_posterior():
    model, guide = make_pair(exact=True)
    x = make_data(model, 4)
    dreg, std = IWAE(num_particles=5, dreg=True), IWAE(num_particles=5)
    dreg.loss(model, guide, x), std.loss(model, guide, x)
    _, _, q_dreg = _grads(dreg, model, guide, x, 0)
    _, _, q_std = _grads(std, model, guide, x, 0)
    assert q_dreg.abs().max() < 1e-10
    assert q_std.abs().max() > 1e-3  # the score term: zero mean, not zero


def test_dreg_survives_the_captured_svi_step():
    from pyrovae.infer.step import StepFunction

    model, guide = make_pair()
    x = make_data(model, 4)
    module = IWAE(num_particles=4, dreg=True)(model, guide)
    step = StepFunction(module, list(module.parameters()), mode="graph")
    # pyrovae's SVI run disables Pyro's validation around captured steps (its checks read tensor values)
    with warnings.catch_warnings(), pyro.validation_enabled(False):
        warnings.simplefilter("error")
        stats = step(Batch(x))
        stats = step(Batch(x))
    assert step.mode == "graph" and step._graphs
    assert torch.isfinite(stats["elbo"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_particles"):
        IWAE(num_particles=0)
    model, guide = make_pair()
    with pytest.raises(ValueError, match="k must be"):
        iwae_bound(model, guide, make_data(model, 2), 0)
    with pytest.raises(TypeError, match="data must be"):
        log_likelihood(model, guide, [1.0, 2.0])


def _peak_bytes(fn):
    return peak_tensor_bytes(fn)[0]


def test_peak_memory_is_set_by_the_chunk_size_not_by_k():
    model, guide = make_pair()
    x = make_data(model, 8)
    chunked = _peak_bytes(lambda: log_likelihood(model, guide, x, num_samples=5000, chunk_size=100, seed=0))
    half = _peak_bytes(lambda: log_likelihood(model, guide, x, num_samples=2500, chunk_size=100, seed=0))
    at_once = _peak_bytes(lambda: log_likelihood(model, guide, x, num_samples=5000, chunk_size=5000, seed=0))
    # beyond one chunk, memory grows with K only by the K x B log weights kept for k-hat (float64, a few copies)
    assert chunked - half <= 4 * 2500 * 8 * 8
    # a [chunk, B, D] float64 draw is 100 * 8 * 4 * 8 bytes; all K at once holds 50 times more
    assert at_once > 5 * chunked


class _LinearVAE(nn.Module):
    """x | z ~ N(W z + b, sigma^2 I), z ~ N(0, I_2), with W, b and sigma learned (probabilistic PCA)."""

    def __init__(self, dim, latent):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.W = nn.Parameter(0.1 * torch.randn(dim, latent, generator=g, dtype=DT))
        self.b = nn.Parameter(torch.zeros(dim, dtype=DT))
        self.log_noise = nn.Parameter(torch.zeros((), dtype=DT))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.W.shape[1], dtype=DT), 1.0).to_event(1))
            return pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.log_noise.exp()).to_event(1), obs=x)


def _principal_angles(a, b):
    qa, qb = torch.linalg.qr(a)[0], torch.linalg.qr(b)[0]
    return torch.arccos(torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0))


def test_linear_vae_recovers_the_pca_subspace():
    # seed 001: a linear autoencoder finds the subspace of the top eigenvectors of the empirical covariance;
    # the linear VAE's decoder is the probabilistic PCA maximum-likelihood W (Tipping & Bishop 1999)
    dim, latent, n = 6, 2, 500
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(dim, latent, generator=g, dtype=DT))[0]
    x = (torch.randn(n, latent, generator=g, dtype=DT) * torch.tensor([3.0, 2.0], dtype=DT)) @ basis.T
    x = x + 0.5 * torch.randn(n, dim, generator=g, dtype=DT) + 1.0
    model = _LinearVAE(dim, latent)
    guide = LinearGuide(0.1 * torch.randn(latent, dim, generator=g, dtype=DT), torch.zeros(latent, dtype=DT),
                        torch.zeros(latent, dtype=DT))
    start = _principal_angles(model.W.detach(), basis)
    torch.manual_seed(0)
    loss_fn = ELBO()(model, guide)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
    for _ in range(150):
        optimizer.zero_grad()
        loss_fn(x).backward()
        optimizer.step()
    centred = x - x.mean(0)
    pca = torch.linalg.eigh(centred.T @ centred / n)[1][:, -latent:]
    learned = model.W.detach()
    assert start.max() > 0.3  # it did not start there
    assert _principal_angles(learned, pca).max() < 0.05
    assert _principal_angles(learned, basis).max() < 0.1
