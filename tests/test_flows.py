"""Flow guides and the flow prior: densities against brute force, the estimators and objectives on flowed sites.

The linear-Gaussian pair is probabilistic PCA as in tests/test_estimate.py:
z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_4), so p(x) = N(x; b, W W^T + s^2 I).
Everything that compares numbers runs in float64.
"""

import copy
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from conftest import pair_sites
from torch import nn
from torch.distributions import kl_divergence

import pyrovae
from pyrovae.evaluate.diagnostics import active_units, elbo_surgery
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.guides import FLOWS, FlowGuide, GaussianGuide, IAFGuide, PlanarGuide
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.iwae import IWAE
from pyrovae.infer.trace import check_pair
from pyrovae.models import VAE
from pyrovae.nn.likelihoods import Bernoulli
from pyrovae.nn.nets import ContextEncoder, ConvEncoder, MLPDecoder, MLPEncoder
from pyrovae.nn.priors import PRIORS, FlowPrior, make_prior

DT = torch.float64
X_DIM, LATENT, NOISE, CONTEXT = 4, 2, 0.5, 3
INVERTIBLE = ("iaf", "householder")  # flows whose guide can score a value it did not draw


class PPCA(nn.Module):
    def __init__(self):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(X_DIM, LATENT, generator=torch.Generator().manual_seed(0), dtype=DT))
        self.W = nn.Parameter(q * torch.tensor([1.5, 0.8], dtype=DT))
        self.b = nn.Parameter(torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=DT))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(LATENT, dtype=DT), 1.0).to_event(1))
            return pyro.sample("x", dist.Normal(z @ self.W.T + self.b, NOISE).to_event(1), obs=x)

    def log_px(self, x):
        cov = self.W @ self.W.T + NOISE ** 2 * torch.eye(X_DIM, dtype=DT)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)


class LinearContextEncoder(nn.Module):
    """x ``[*batch, 4]`` -> (A x + c, log_scale, tanh(V x)): a flow guide's encoder for the PPCA pair."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Linear(X_DIM, LATENT)
        self.log_scale = nn.Parameter(torch.zeros(LATENT))
        self.context = nn.Linear(X_DIM, CONTEXT)
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.loc(x), self.log_scale.expand(*x.shape[:-1], LATENT), torch.tanh(self.context(x))


def flow_guide(kind, steps=2, seed=0):
    torch.manual_seed(seed)
    return FLOWS[kind](LinearContextEncoder(), LATENT, CONTEXT, steps=steps, hidden=[16]).double()


def make_data(model, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, LATENT, generator=g, dtype=DT)
    with torch.no_grad():
        return z @ model.W.T + model.b + NOISE * torch.randn(n, X_DIM, generator=g, dtype=DT)


def _scrambled(guide, scale=0.5):
    """Move every parameter off its initial value so that each flow step is far from the identity."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return guide


# -- the log-density against brute-force change of variables ------------------

@pytest.mark.parametrize("kind", sorted(FLOWS))
def test_log_density_is_the_change_of_variables(kind):
    """log q(z) = log N(z0; mu, sigma) - log |det dz/dz0|, the Jacobian by autograd, D = 2."""
    guide = _scrambled(flow_guide(kind, steps=2))
    x = torch.randn(4, X_DIM, dtype=DT)
    q = guide.distribution(x)
    z0 = q.base_dist.sample()
    z = z0
    for t in q.transforms:  # the forward pass a draw takes: Pyro caches each step's input
        z = t(z)

    fresh = guide.distribution(x)

    def flow(v):
        for t in fresh.transforms:
            v = t(v)
        return v

    jac = torch.autograd.functional.jacobian(flow, z0)  # [B, D, B, D]
    blocks = torch.stack([jac[i, :, i, :] for i in range(x.shape[0])])
    off_diagonal = jac.clone()
    for i in range(x.shape[0]):
        off_diagonal[i, :, i, :] = 0
    assert off_diagonal.abs().max() == 0  # each datum's draw depends on its own base draw only
    log_det = torch.linalg.slogdet(blocks).logabsdet
    expected = q.base_dist.log_prob(z0) - log_det
    assert (z - z0).abs().min() > 1e-3  # every step moves the draw
    if kind == "householder":  # reflections preserve volume
        assert log_det.abs().max() < 1e-12
    else:
        assert log_det.abs().max() > 1e-2
    torch.testing.assert_close(q.log_prob(z), expected, rtol=1e-10, atol=1e-10)
    # a value the guide did not draw: the flow is inverted (IAF: D sequential passes per step)
    if kind in INVERTIBLE:
        torch.testing.assert_close(guide.distribution(x).log_prob(z.clone()), expected, rtol=1e-9, atol=1e-9)
    else:
        with pytest.raises(NotImplementedError, match="planar flow"):
            guide.distribution(x).log_prob(z.clone())


def test_iaf_steps_are_autoregressive_in_alternating_orders():
    guide = _scrambled(flow_guide("iaf", steps=2))
    orders = [t.nn.permutation.tolist() for t in guide.transforms]
    assert orders == [[0, 1], [1, 0]]
    x = torch.randn(1, X_DIM, dtype=DT)
    step = guide.distribution(x).transforms[0]
    jac = torch.autograd.functional.jacobian(step, torch.randn(1, LATENT, dtype=DT))[0, :, 0, :]
    assert jac[0, 1] == 0 and jac[1, 0] != 0  # z_1 of the first step reads z0_0 only


# -- the pair contract --------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(FLOWS))
def test_draws_under_a_particle_plate_have_shape_k_b_d_and_one_context_per_datum(kind):
    guide = flow_guide(kind)
    model = PPCA()
    x = make_data(model, 3)
    assert check_pair(model, guide, x).latents == ["z"]
    guide.encoder.calls.clear()
    guide_sites, model_sites = pair_sites(model, guide, x, num_particles=5, nesting=1)
    site = guide_sites["z"]
    assert site["value"].shape == (5, 3, LATENT)
    assert site["fn"].batch_shape == (5, 3) and site["fn"].event_shape == (LATENT,)
    assert site["log_prob"].shape == (5, 3)
    assert guide.encoder.calls == [(3, X_DIM)]  # the context is computed once and broadcast over particles
    assert not torch.allclose(site["value"][0], site["value"][1])
    assert model_sites["x"]["log_prob"].shape == (5, 3)
    if kind in INVERTIBLE:  # the site is the flow distribution of each datum
        q = guide.distribution(x)
        torch.testing.assert_close(site["log_prob"], q.log_prob(site["value"].clone()), rtol=1e-9, atol=1e-9)


def test_context_encoder_wraps_the_image_encoders():
    for enc in (MLPEncoder((1, 28, 28), 3, (16,)), ConvEncoder((1, 28, 28), 3, hidden=16)):
        ctx_enc = ContextEncoder(enc, 5)
        x = torch.rand(2, 4, 1, 28, 28)
        loc, log_scale, h = ctx_enc(x)
        assert loc.shape == log_scale.shape == (2, 4, 3) and h.shape == (2, 4, 5)
        torch.testing.assert_close(loc, enc(x)[0])  # the wrapped encoder's Gaussian is unchanged
    with pytest.raises(TypeError, match="wraps an MLPEncoder or ConvEncoder"):
        ContextEncoder(nn.Linear(3, 3), 4)
    with pytest.raises(ValueError, match="context_dim"):
        ContextEncoder(MLPEncoder((1, 4, 4), 2, (8,)), 0)
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 2"):
        IAFGuide(LinearContextEncoder(), 1, CONTEXT)
    with pytest.raises(ValueError, match="steps"):
        PlanarGuide(LinearContextEncoder(), LATENT, CONTEXT, steps=0)
    with pytest.raises(ValueError, match="at least one transform"):
        FlowGuide(LinearContextEncoder(), [])


# -- objectives and estimators ------------------------------------------------

@pytest.mark.parametrize("kind", sorted(FLOWS))
def test_closed_form_kl_does_not_apply_to_a_flowed_site(kind):
    model, guide = PPCA(), flow_guide(kind)
    x = make_data(model, 5)
    guide_sites, model_sites = pair_sites(model, guide, x)
    with pytest.raises(NotImplementedError):
        kl_divergence(guide_sites["z"]["fn"], model_sites["z"]["fn"])
    analytic = ELBO(analytic_kl=True)
    torch.manual_seed(7)
    kl_analytic = analytic.terms(model, guide, x).kl_sites["z"]
    torch.manual_seed(7)
    guide_sites, model_sites = pair_sites(model, guide, x)
    monte_carlo = (guide_sites["z"]["log_prob"] - model_sites["z"]["log_prob"]).sum()
    torch.testing.assert_close(kl_analytic, monte_carlo, rtol=1e-12, atol=1e-12)


def _fit(model, guide, x, steps=300, objective=None, lr=0.03):
    torch.manual_seed(0)
    loss_fn = (objective or ELBO())(model, guide)
    optimizer = torch.optim.Adam(guide.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(x).backward()
        optimizer.step()
    return guide


@pytest.mark.parametrize("kind", sorted(FLOWS))
def test_log_likelihood_with_a_flow_guide_within_three_standard_errors(kind):
    model = PPCA()
    x = make_data(model, 16)
    guide = _fit(model, flow_guide(kind), x)
    exact = model.log_px(x).detach()
    res = log_likelihood(model, guide, x, num_samples=2000, chunk_size=500, batch_size=8, seed=0)
    assert torch.all(res.std_error > 0) and torch.all(res.ess < 2000)  # an imperfect proposal: the test has teeth
    assert abs(res.nll - float(-exact.mean())) <= 3 * res.nll_std_error
    assert torch.all((res.log_px - exact).abs() <= 4 * res.std_error)
    # the trained flow guide is a good proposal: the ELBO gap is small but the bound holds
    torch.manual_seed(0)
    elbo = float(ELBO(num_particles=500).terms(model, guide, x).elbo.detach()) / x.shape[0]
    assert float(exact.mean()) - 0.2 < elbo < float(exact.mean())


def _guide_grads(objective, model, guide, x, seed):
    torch.manual_seed(seed)
    loss, _ = objective.loss(model, guide, x)
    model_grads = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    guide_grads = torch.autograd.grad(loss, list(guide.parameters()))
    flat = lambda gs: torch.cat([g.flatten() for g in gs])  # noqa: E731
    return loss.detach(), flat(model_grads), flat(guide_grads)


def _brute_force_dreg(model, guide, x, k, seed):
    """DReG by its definition (Tucker et al. 2018, eq. 5): -mean_b sum_k w~_k^2 d log w_k / d phi through z_k only.

    log q is evaluated by a frozen copy of the guide (inverting its flow), so phi reaches log w_k
    only through the draw z_k(eps_k, phi).
    """
    frozen = copy.deepcopy(guide)
    for p in frozen.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    with pyro.plate("particles", k, dim=-2):
        z = pyro.poutine.trace(guide).get_trace(x).nodes["z"]["value"]
        trace = pyro.poutine.trace(pyro.poutine.condition(model, data={"z": z})).get_trace(x)
    log_p = trace.nodes["z"]["fn"].log_prob(z) + trace.nodes["x"]["fn"].log_prob(x)
    log_w = log_p - frozen.distribution(x).log_prob(z)
    w_tilde = torch.softmax(log_w.detach(), 0)
    surrogate = -(w_tilde ** 2 * log_w).sum(0).mean()
    return torch.cat([g.flatten() for g in torch.autograd.grad(surrogate, list(guide.parameters()))])


@pytest.mark.parametrize("kind", INVERTIBLE)
def test_dreg_through_the_flow_inverse_is_the_doubly_reparameterized_gradient(kind):
    model, guide = PPCA(), _scrambled(flow_guide(kind), 0.2)
    x = make_data(model, 3)
    k = 6
    dreg, std = IWAE(num_particles=k, dreg=True), IWAE(num_particles=k)
    dreg.loss(model, guide, x), std.loss(model, guide, x)  # cache the plate nesting
    loss_d, model_d, guide_d = _guide_grads(dreg, model, guide, x, seed=11)
    loss_s, model_s, guide_s = _guide_grads(std, model, guide, x, seed=11)
    # same draws: same bound and same model gradient; only the guide's gradient changes
    torch.testing.assert_close(loss_d, loss_s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model_d, model_s, rtol=1e-9, atol=1e-12)
    assert (guide_d - guide_s).abs().max() > 1e-4
    torch.testing.assert_close(guide_d, _brute_force_dreg(model, guide, x, k, seed=11), rtol=1e-8, atol=1e-10)


def test_dreg_with_a_planar_guide_names_the_missing_inverse():
    model, guide = PPCA(), flow_guide("planar")
    x = make_data(model, 3)
    with pytest.raises(NotImplementedError, match="planar flow .* IAFGuide or HouseholderGuide"):
        IWAE(num_particles=3, dreg=True).loss(model, guide, x)
    loss, _ = IWAE(num_particles=3).loss(model, guide, x)  # the guide's own draws are fine
    assert loss.isfinite()


def test_diagnostics_run_on_a_flow_guide():
    model = PPCA()
    x = make_data(model, 40)
    guide = _fit(model, flow_guide("iaf"), x, steps=150)
    au = active_units(model, guide, x, num_samples=20)
    assert au.counts == {"z": 2}  # both PPCA directions carry information about x
    surgery = elbo_surgery(model, guide, x, num_points=40, num_samples=4)
    assert 0 < surgery.mutual_information <= math.log(40) + 1e-9
    with pytest.raises(NotImplementedError, match="planar flow"):
        elbo_surgery(model, flow_guide("planar"), x, num_points=8, num_samples=2)


def _image_vae(guide_kind, prior="standard", latent=2, seed=0):
    pyro.set_rng_seed(seed)
    shape = (1, 8, 8)
    decoder = MLPDecoder(shape, latent, (32,))
    model = VAE(decoder, make_prior(prior, latent, flow_steps=2), Bernoulli())
    if guide_kind == "gaussian":
        return model, GaussianGuide(MLPEncoder(shape, latent, (32,)))
    return model, FLOWS[guide_kind](ContextEncoder(MLPEncoder(shape, latent, (32,)), 8), latent, 8, steps=2)


@pytest.mark.parametrize("kind,objective", [("iaf", "elbo"), ("householder", "elbo"), ("iaf", "iwae-dreg")])
def test_svirun_trains_a_flow_guide_with_captured_steps(kind, objective, binary_images):
    model, guide = _image_vae(kind)
    obj = ELBO() if objective == "elbo" else IWAE(num_particles=4, dreg=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager steps would warn
        run = pyrovae.SVIRun(model, guide, binary_images, binary_images, obj, lr=1e-2, batch_size=32, epochs=4,
                             progress=False)
        history = run.fit()
    assert run.step_fn.mode == "graph"
    assert history[-1]["val_elbo"] > history[0]["val_elbo"] + 1.0


# -- the flow prior -----------------------------------------------------------

def _random_flow_prior(steps=3, seed=0):
    torch.manual_seed(seed)
    prior = FlowPrior(2, steps=steps, hidden=[16]).double()
    with torch.no_grad():
        for net in prior.made:  # leave the zero start, so the density is not N(0, I)
            net.layers[-1].weight.normal_(0, 0.3)
            net.layers[-1].bias.normal_(0, 0.3)
    return prior


def test_flow_prior_starts_as_the_standard_normal():
    prior = FlowPrior(3, steps=2)
    p = prior()
    assert p.batch_shape == () and p.event_shape == (3,)
    z = torch.randn(5, 4, 3)
    torch.testing.assert_close(p.log_prob(z), dist.Normal(0.0, 1.0).log_prob(z).sum(-1))


def _grid(half_width, n):
    axis = torch.linspace(-half_width, half_width, n, dtype=DT)
    return torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2), (axis[1] - axis[0]).item()


def test_flow_prior_density_integrates_to_one_and_its_samples_have_its_moments():
    prior = _random_flow_prior()
    p = prior()
    with torch.no_grad():
        samples = p.sample((20000,))
        # the grid [-12, 12]^2 holds every draw with room to spare
        assert samples.abs().max() < 8
        z, h = _grid(12.0, 801)
        density = p.log_prob(z).exp()
        z_coarse, h_coarse = _grid(12.0, 401)
        mass = float(density.sum() * h * h)
        mass_coarse = float(p.log_prob(z_coarse).exp().sum() * h_coarse * h_coarse)
    # a Riemann sum of a smooth density: the error is far below the tolerance, as the coarser grid shows
    assert abs(mass_coarse - mass) < 1e-4
    assert abs(mass - 1) < 1e-3
    # it is not N(0, I): moments by quadrature, then the draws' sample moments against them
    weights = density * h * h
    mean = (weights[:, None] * z).sum(0)
    second = (weights[:, None, None] * z[:, :, None] * z[:, None, :]).sum(0)
    cov = second - torch.outer(mean, mean)
    assert (cov - torch.eye(2, dtype=DT)).abs().max() > 0.1 or mean.abs().max() > 0.1
    n = samples.shape[0]
    features = torch.cat([samples, (samples[:, :, None] * samples[:, None, :]).reshape(n, 4)], 1)
    expected = torch.cat([mean, second.reshape(4)])
    se = features.std(0) / math.sqrt(n)
    assert torch.all((features.mean(0) - expected).abs() <= 4 * se)


def test_flow_prior_density_is_one_parallel_pass_and_sampling_is_sequential():
    prior = FlowPrior(5, steps=3)
    calls = []
    for i, net in enumerate(prior.made):
        net.register_forward_hook(lambda module, args, out, i=i: calls.append(i))
    p = prior()
    p.log_prob(torch.randn(7, 5))
    assert sorted(calls) == [0, 1, 2]  # each MADE once
    calls.clear()
    draw = p.sample((7,))
    assert draw.shape == (7, 5)
    assert sorted(calls) == [0] * 5 + [1] * 5 + [2] * 5  # D passes per step


def test_flow_prior_is_registered_and_checks_its_arguments():
    assert PRIORS["flow"] is FlowPrior
    prior = make_prior("flow", 4, flow_steps=3)
    assert isinstance(prior, FlowPrior) and prior.steps == 3 and len(prior.made) == 3
    assert make_prior("flow", 4).steps == 4
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 2"):
        FlowPrior(1)
    with pytest.raises(ValueError, match="steps"):
        make_prior("flow", 3, flow_steps=0)


def test_a_vae_with_the_flow_prior_trains_with_svirun(binary_images):
    model, guide = _image_vae("gaussian", prior="flow")
    assert isinstance(model.prior, FlowPrior)
    x = binary_images.data[:8]
    guide_sites, model_sites = pair_sites(model, guide, x)
    with pytest.raises(NotImplementedError):  # the ELBO's KL for this prior is a Monte Carlo term
        kl_divergence(guide_sites["z"]["fn"], model_sites["z"]["fn"])
    before = [p.detach().clone() for p in model.prior.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = pyrovae.SVIRun(model, guide, binary_images, binary_images, lr=1e-2, batch_size=32, epochs=4,
                             progress=False)
        history = run.fit()
    assert run.step_fn.mode == "graph"
    assert history[-1]["val_elbo"] > history[0]["val_elbo"] + 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.prior.parameters()))  # the prior learned
    samples = model(None, batch_size=3)
    assert samples.shape == (3, 1, 8, 8)
