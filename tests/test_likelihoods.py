"""Likelihoods for RGB images: log-densities against scipy, the discretized logistic's 256 levels, shapes, errors."""

import decimal
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from pyrovae.guides import GaussianGuide
from pyrovae.infer.trace import PairError, check_pair
from pyrovae.models import VAE
from pyrovae.nn.likelihoods import (LIKELIHOODS, Bernoulli, BernoulliImage, DiscretizedLogistic, DiscretizedLogisticImage,
                                    INIT_SCALE, Gaussian, GaussianImage, bits_per_dim, make_likelihood)
from pyrovae.nn.nets import MLPDecoder, MLPEncoder
from pyrovae.nn.priors import StandardNormal

LEVELS = torch.arange(256, dtype=torch.float64) / 255


def eight_bit(shape, seed=0):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).double() / 255


# ---------------------------------------------------------------------------
# the discretized logistic


def exact_log_probabilities(loc, scale):
    """log P(k) for k = 0..255 from the definition, in 60-digit decimal arithmetic.

    Above the loc the difference of CDFs is taken as a difference of survival functions, 1 - F(t) = F(-t),
    whose tiny values a Decimal holds exactly: no cancellation to fear on either side.
    """
    with decimal.localcontext(decimal.Context(prec=60)):
        loc, scale = decimal.Decimal(loc), decimal.Decimal(scale)

        def cdf(t):
            return 1 / (1 + (-t).exp())

        out = []
        for k in range(256):
            lo = None if k == 0 else (decimal.Decimal(2 * k - 1) / 510 - loc) / scale
            hi = None if k == 255 else (decimal.Decimal(2 * k + 1) / 510 - loc) / scale
            if lo is not None and lo > 0:
                p = cdf(-lo) - (0 if hi is None else cdf(-hi))
            else:
                p = (1 if hi is None else cdf(hi)) - (0 if lo is None else cdf(lo))
            out.append(float(p.ln()))
        return np.array(out)


@pytest.mark.parametrize("loc,scale", [(0.5, 0.1), (0.2, 0.02), (0.9, 0.3), (-0.1, 0.05), (1.2, 0.5), (0.4, 3.0),
                                       (0.3, 0.0005)])
def test_discretized_logistic_matches_its_definition(loc, scale):
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    ours = d.log_prob(LEVELS).numpy()
    reference = exact_log_probabilities(loc, scale)
    assert np.allclose(ours, reference, rtol=1e-9, atol=1e-9)


def test_discretized_logistic_matches_scipy_near_the_loc():
    # scipy's CDF difference, where it has all its digits (the levels holding most of the mass)
    loc, scale = 0.43, 0.04
    levels = LEVELS.numpy()[90:130]
    cdf = stats.logistic(loc, scale).cdf
    reference = np.log(cdf(levels + 1 / 510) - cdf(levels - 1 / 510))
    ours = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    assert np.allclose(ours.log_prob(LEVELS[90:130]).numpy(), reference, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_discretized_logistic_levels_sum_to_one_for_any_parameters(dtype):
    g = torch.Generator().manual_seed(0)
    loc = torch.cat([torch.randn(200, generator=g, dtype=dtype) * 2,
                     torch.tensor([-50.0, 50.0, 0.0, 1.0], dtype=dtype)])
    log_scale = torch.cat([torch.rand(200, generator=g, dtype=dtype) * 16 - 12,  # scales e^-12 .. e^4
                           torch.tensor([-15.0, 8.0, -20.0, 0.0], dtype=dtype)])
    d = DiscretizedLogistic(loc[:, None], log_scale.exp()[:, None])
    log_p = d.log_prob(LEVELS.to(dtype))
    assert torch.isfinite(log_p).all()
    total = log_p.exp().sum(1)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert (total - 1).abs().max() < tolerance


def test_discretized_logistic_is_stable_far_in_the_tails():
    # 500 scales from the loc, the CDF difference underflows in float32; the factored form does not. There
    # P(k) = e^{-c} 2 sinh(D/2) (1 + O(e^{-c})), with c = (x - loc)/s the bin centre's distance and D = 1/(255 s).
    d = DiscretizedLogistic(torch.tensor(0.0), torch.tensor(0.001))
    log_p = d.log_prob(torch.tensor([128 / 255, 1.0]))
    assert torch.isfinite(log_p).all()
    c, width = (128 / 255) / 0.001, 1 / (255 * 0.001)
    assert log_p[0].item() == pytest.approx(-c + math.log(2 * math.sinh(width / 2)), rel=1e-6)
    assert log_p[1].item() == pytest.approx(-(254.5 / 255) / 0.001, rel=1e-6)  # the open top level: 1 - F(edge)


def test_discretized_logistic_gradients_are_finite_at_the_edge_levels():
    loc = torch.tensor([-3.0, 0.0, 0.5, 1.0, 4.0, 0.999], requires_grad=True)
    log_scale = torch.tensor([-7.0, -2.0, 0.0, -9.0, 1.0, -12.0], requires_grad=True)
    for value in (0.0, 1.0, 1 / 255, 254 / 255):
        loc.grad, log_scale.grad = None, None
        DiscretizedLogistic(loc, log_scale.exp()).log_prob(torch.full((6,), value)).sum().backward()
        assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all(), value
        assert (loc.grad != 0).any()


def test_discretized_logistic_samples_and_mean():
    d = DiscretizedLogistic(torch.tensor([0.3, 0.98, 0.0]), torch.tensor([0.05, 0.02, 0.01]))
    torch.manual_seed(0)
    x = d.sample((100_000,))
    assert d.support.check(x).all()
    p = d.log_prob(LEVELS.float()[:, None]).exp()  # [256, 3]
    freq = torch.stack([(x[:, j, None] == LEVELS.float()).float().mean(0) for j in range(3)], 1)
    se = (p * (1 - p) / 100_000).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-6).all()  # 5 standard errors per level
    brute = (p * LEVELS.float()[:, None]).sum(0)
    assert torch.allclose(d.mean, brute, atol=1e-5)
    assert (d.mean - x.mean(0)).abs().max() < 5 * x.std(0).max() / math.sqrt(100_000)


def test_discretized_logistic_image_layouts_and_particle_dims():
    x = eight_bit((4, 3, 8, 8))
    params = torch.randn(5, 4, 6, 8, 8, dtype=torch.float64)  # [K, B, 2C, H, W]: locs then log-scales
    decoded = DiscretizedLogisticImage((3, 8, 8), scale="decoder")
    assert decoded.params_per_channel == 2 and decoded.output_shape == (6, 8, 8)
    log_p = decoded(params).log_prob(x)
    assert log_p.shape == (5, 4)
    direct = DiscretizedLogistic(params[:, :, :3], params[:, :, 3:].exp()).log_prob(x).sum((-3, -2, -1))
    assert torch.allclose(log_p, direct)
    channel = DiscretizedLogisticImage((3, 8, 8), scale="channel").double()
    assert channel.params_per_channel == 1 and channel.log_scale.shape == (3, 1, 1)
    loc = params[:, :, :3]
    expected = DiscretizedLogistic(loc, torch.full_like(loc, INIT_SCALE)).log_prob(x).sum((-3, -2, -1))
    assert torch.allclose(channel(loc).log_prob(x), expected)
    with pytest.raises(ValueError, match=r"takes decoder outputs \[\*batch, 6, 8, 8\]"):
        decoded(loc)


def test_the_discrete_check_names_values_off_the_levels():
    lik = DiscretizedLogisticImage((3, 4, 4))
    lik.check(eight_bit((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"8-bit data with values k/255.*values like \[0\.5"):
        lik.check(torch.full((2, 3, 4, 4), 0.5))
    with pytest.raises(ValueError, match="k/255"):
        lik.check(torch.full((1, 3, 4, 4), 2.0))  # 0..255 integers not yet divided
    assert not DiscretizedLogistic(0.5, 0.1).support.check(torch.tensor(0.5)).item()
    assert DiscretizedLogistic(0.5, 0.1).support.check(torch.tensor(128 / 255)).item()


# ---------------------------------------------------------------------------
# Gaussians with learned scales


@pytest.mark.parametrize("mode,shape", [("channel", (3, 1, 1)), ("pixel", (3, 5, 6))])
def test_gaussian_with_learned_scale_matches_scipy(mode, shape):
    lik = GaussianImage((3, 5, 6), scale=mode, init_scale=0.2).double()
    assert lik.log_scale.shape == shape and lik.params_per_channel == 1
    with torch.no_grad():
        lik.log_scale.copy_(torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.5)
    loc = torch.randn(7, 2, 3, 5, 6, dtype=torch.float64)
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    log_p = lik(loc).log_prob(x)
    assert log_p.shape == (7, 2)
    sigma = np.broadcast_to(lik.log_scale.detach().exp().numpy(), loc.shape)
    reference = stats.norm.logpdf(x.numpy(), loc.numpy(), sigma).sum((-3, -2, -1))
    assert np.allclose(log_p.detach().numpy(), reference, rtol=1e-12)
    assert torch.equal(lik.mean(loc), loc)


def test_gaussian_with_decoded_scale():
    lik = GaussianImage((3, 4, 4), scale="decoder")
    params = torch.randn(2, 6, 4, 4)
    x = torch.rand(2, 3, 4, 4)
    expected = dist.Normal(params[:, :3], params[:, 3:].exp()).log_prob(x).sum((-3, -2, -1))
    assert torch.allclose(lik(params).log_prob(x), expected)
    assert list(lik.parameters()) == []


def test_learned_scales_are_model_parameters_and_learn():
    # A VAE on 8-bit RGB images: the likelihood's log-scale is among the model's parameters and gets a gradient.
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x = eight_bit((6, 3, 4, 4)).float()
    for name in ("gaussian-channel", "gaussian-pixel", "discretized-logistic", "discretized-logistic-decoder"):
        lik = make_likelihood(name, image_shape=(3, 4, 4))
        out = (lik.params_per_channel * 3, 4, 4)
        model = VAE(MLPDecoder(out, 2, (8,)), StandardNormal(2), lik)
        guide = GaussianGuide(MLPEncoder((3, 4, 4), 2, (8,)))
        check_pair(model, guide, x)
        loss = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x)
        loss.backward()
        if lik.params_per_channel == 1:
            assert any(p is lik.log_scale for p in model.parameters())
            assert torch.isfinite(lik.log_scale.grad).all() and lik.log_scale.grad.abs().sum() > 0
        sample = model(None, batch_size=3)
        assert sample.shape == (3, 3, 4, 4)
        if name.startswith("discretized"):
            assert lik(model.decoder(torch.zeros(1, 2))).support.check(sample).all()
            with pytest.raises(PairError, match="outside the support"):
                check_pair(model, guide, x + 0.001)


def test_registry_and_errors():
    for name in ("gaussian-channel", "gaussian-pixel", "discretized-logistic", "discretized-logistic-decoder"):
        assert name in LIKELIHOODS
        with pytest.raises(ValueError, match="needs the image_shape"):
            make_likelihood(name)
    assert make_likelihood("bernoulli").params_per_channel == 1 == Bernoulli.params_per_channel
    assert Gaussian.params_per_channel == 1
    assert make_likelihood("discretized-logistic-decoder", image_shape=(3, 8, 8)).params_per_channel == 2
    with pytest.raises(ValueError, match="does not match image_shape"):
        make_likelihood("gaussian-pixel", event_dims=2, image_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="scale must be one of"):
        GaussianImage((3, 8, 8), scale="global")


def test_bits_per_dim():
    assert bits_per_dim(3 * 64 * 64 * math.log(2), (3, 64, 64)) == pytest.approx(1.0)
    assert bits_per_dim(12 * math.log(256), [3, 2, 2]) == pytest.approx(8.0)  # uniform over 256 levels: 8 bits
    assert torch.allclose(bits_per_dim(torch.tensor([12 * math.log(2)]), (3, 2, 2)), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="at least one element"):
        bits_per_dim(1.0, (3, 0, 2))


def test_the_discretized_logistic_starts_mean_seeking_not_median_seeking():
    """Issue 14: a river value on 10% of the data, 0.4 from the grass on the rest. The loc that maximises the
    mean log P (brute force over a grid of locs) sits half-way to the median (the grass) at scale 0.1 and
    near the mean at the initial scale INIT_SCALE (0.221 and 0.236; mean 0.24, median 0.2)."""
    values = torch.tensor([0.2] * 9 + [0.6]) * 255
    values = values.round() / 255
    locs = torch.linspace(0.1, 0.7, 601).unsqueeze(-1)
    mean, median = values.mean().item(), values.median().item()

    def best_loc(scale):
        return locs[DiscretizedLogistic(locs, scale).log_prob(values).mean(-1).argmax()].item()

    assert mean - best_loc(0.1) > 0.4 * (mean - median)
    assert mean - best_loc(INIT_SCALE) < 0.15 * (mean - median)
    assert DiscretizedLogisticImage((3, 4, 4)).log_scale.exp().allclose(torch.tensor(INIT_SCALE))


@pytest.mark.parametrize("event_shape", [(1, 5, 5), (7,)])
def test_the_bernoulli_image_density_is_the_sum_of_bernoulli_pixels(event_shape):
    """BernoulliImage.log_prob (-softplus((1 - 2x) l), summed per image) against log sigmoid per pixel and
    torch's Bernoulli in float64, with logits far in the tails, particles [K, B] against data [B], and gradients."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 3, *event_shape, generator=g, dtype=torch.float64) * 20).requires_grad_()
    x = torch.bernoulli(torch.full((3, *event_shape), 0.3, dtype=torch.float64), generator=g)
    n = len(event_shape)
    got = BernoulliImage(logits, n).log_prob(x)
    log_sigmoid = torch.nn.functional.logsigmoid
    expected = (x * log_sigmoid(logits) + (1 - x) * log_sigmoid(-logits)).sum(tuple(range(-n, 0)))
    torch_bernoulli = torch.distributions.Bernoulli(logits=logits).log_prob(x.expand_as(logits))
    torch.testing.assert_close(torch_bernoulli.sum(tuple(range(-n, 0))), expected)
    assert got.shape == (4, 3)
    # softplus(t) = t beyond t = 20 (torch's threshold): at most exp(-20) = 2e-9 per pixel, below float32's resolution
    torch.testing.assert_close(got, expected, rtol=0, atol=2.1e-9 * x[0].numel())
    grad, = torch.autograd.grad(got.sum(), logits)
    torch.testing.assert_close(grad, x - torch.sigmoid(logits.detach()))


def test_the_bernoulli_image_density_refuses_grey_values_as_pyro_does():
    """-softplus((1 - 2x) l) holds for binary x only (at x = 1/2 it is the constant -log 2): with Pyro's validation
    on, a grey value raises as Pyro's Bernoulli does, for any event size; with it off it is taken as binary."""
    logits = torch.randn(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    grey = torch.full((3, 1, 4, 4), 0.5)
    with pyro.validation_enabled(True):
        with pytest.raises(ValueError, match="support"):
            dist.Bernoulli(logits=logits).to_event(3).log_prob(grey)
        with pytest.raises(ValueError, match="binary"):
            BernoulliImage(logits, 3).log_prob(grey)
    with pyro.validation_enabled(False):
        assert BernoulliImage(logits, 3).log_prob(grey).shape == (2, 3)
    # no event dimensions: one Bernoulli per element
    x = torch.tensor([0.0, 1.0, 1.0])
    torch.testing.assert_close(BernoulliImage(torch.tensor([0.3, -2.0, 25.0]), 0).log_prob(x),
                               dist.Bernoulli(logits=torch.tensor([0.3, -2.0, 25.0])).log_prob(x))


def test_evaluating_grey_data_under_a_bernoulli_pair_is_an_error_not_a_number():
    from pyrovae import evaluate_elbo, log_likelihood

    model = VAE(MLPDecoder((16,), 2, (8,)), StandardNormal(2), Bernoulli(1))
    guide = GaussianGuide(MLPEncoder((16,), 2, (8,)))
    grey = torch.rand(4, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="binary"):
        evaluate_elbo(model, guide, grey)
    with pytest.raises(ValueError, match="binary"):
        log_likelihood(model, guide, grey, num_samples=3)
