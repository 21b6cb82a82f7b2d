"""The gated PixelCNN likelihood: autoregressive masks, exact normalization, ancestral sampling, training."""

import itertools
import warnings

import pyro
import pytest
import torch

from conftest import pair_sites

import pyrovae
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.guides import GaussianGuide
from pyrovae.infer.distributions import distribution_mean
from pyrovae.models import VAE
from pyrovae.nn.nets import MLPDecoder, MLPEncoder
from pyrovae.nn.pixelcnn import GatedPixelCNN, PixelCNNLikelihood, horizontal_mask, vertical_mask
from pyrovae.nn.priors import StandardNormal

DT = torch.float64


def _network(context_shape=(4,), layers=3, kernel_size=5, seed=0):
    torch.manual_seed(seed)
    return GatedPixelCNN(context_shape, channels=8, layers=layers, kernel_size=kernel_size).double()


def _likelihood(image_shape, context_shape=(4,), layers=3, kernel_size=3, seed=0):
    torch.manual_seed(seed)
    return PixelCNNLikelihood(image_shape, context_shape, channels=8, layers=layers, kernel_size=kernel_size).double()


def _all_binary_images(h, w):
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=h * w)), dtype=DT)
    return bits.reshape(-1, 1, h, w)


def test_masks():
    assert vertical_mask(3, "A").tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]
    assert vertical_mask(3, "B").tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]
    assert horizontal_mask(5, "A").tolist() == [[1, 1, 0, 0, 0]]
    assert horizontal_mask(5, "B").tolist() == [[1, 1, 1, 0, 0]]


@pytest.mark.parametrize("context_shape", [(4,), (4, 5, 5)])
def test_each_logit_depends_on_every_earlier_pixel_and_no_later_one(context_shape):
    """d l_i / d x_j = 0 for j >= i in raster order, and != 0 for every j < i (no blind spot)."""
    net = _network(context_shape)
    context = torch.randn(1, *context_shape, dtype=DT)
    x = torch.rand(1, 1, 5, 5, dtype=DT)
    jac = torch.autograd.functional.jacobian(lambda v: net(v, context).reshape(25), x).reshape(25, 25)
    later = torch.triu(torch.ones(25, 25, dtype=torch.bool))  # j >= i
    assert jac[later].abs().max() == 0
    assert jac[~later].abs().min() > 0


def test_the_conditioning_reaches_every_logit():
    net = _network()
    x = torch.rand(1, 1, 5, 5, dtype=DT)
    jac = torch.autograd.functional.jacobian(lambda h: net(x, h).reshape(25), torch.randn(1, 4, dtype=DT))
    assert jac.reshape(25, 4).abs().sum(1).min() > 0


@pytest.mark.parametrize("context_shape", [(4,), (4, 3, 3)])
def test_the_distribution_sums_to_one_over_all_binary_images(context_shape):
    lik = _likelihood((1, 3, 3), context_shape)
    images = _all_binary_images(3, 3)  # all 512 of them
    context = torch.randn(2, 1, *context_shape, dtype=DT)  # two data, broadcast over the 512 images
    log_p = lik(context).log_prob(images)
    assert log_p.shape == (2, 512)
    torch.testing.assert_close(torch.logsumexp(log_p, 1), torch.zeros(2, dtype=DT), rtol=0, atol=1e-10)


def test_log_prob_is_the_chain_rule_of_per_pixel_conditionals():
    """log p(x) = sum_i log Bernoulli(x_i; l_i), l_i read with pixels >= i replaced by noise."""
    lik = _likelihood((1, 4, 4))
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(3, 1, 4, 4, generator=g, dtype=DT) < 0.5).to(DT)
    context = torch.randn(3, 4, dtype=DT)
    total = torch.zeros(3, dtype=DT)
    for i in range(16):
        r, c = divmod(i, 4)
        scrambled = x.clone().reshape(3, 16)
        scrambled[:, i:] = torch.rand(3, 16 - i, generator=g, dtype=DT)
        logit = lik.network(scrambled.reshape(3, 1, 4, 4), context)[:, 0, r, c]
        total += torch.distributions.Bernoulli(logits=logit).log_prob(x[:, 0, r, c])
    torch.testing.assert_close(lik(context).log_prob(x), total, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [28, 64])
def test_particles_broadcast_against_the_data(size):
    lik = _likelihood((1, size, size), layers=1)
    x = (torch.rand(2, 1, size, size, dtype=DT) < 0.3).to(DT)
    context = torch.randn(3, 2, 4, dtype=DT)  # K = 3 particles, B = 2 data
    p = lik(context)
    assert p.batch_shape == (3, 2) and p.event_shape == (1, size, size)
    log_p = p.log_prob(x)
    assert log_p.shape == (3, 2)
    for k in range(3):
        torch.testing.assert_close(log_p[k], lik(context[k]).log_prob(x), rtol=1e-12, atol=1e-9)
    assert p.expand((5, 3, 2)).log_prob(x).shape == (5, 3, 2)


@pytest.mark.parametrize("context_shape", [(4,), (4, 12, 5)])
def test_row_logits_from_the_band_of_rows_above_equal_the_full_pass(context_shape):
    net = _network(context_shape, layers=2, kernel_size=5)
    assert net.rows_above == 4
    x = torch.rand(3, 1, 12, 5, dtype=DT)
    context = torch.randn(3, *context_shape, dtype=DT)
    full = net(x, context)[:, 0]
    for row in range(12):
        torch.testing.assert_close(net.row_logits(x, context, row), full[:, row], rtol=1e-12, atol=1e-12)


def test_ancestral_draws_are_binary_and_follow_the_density():
    lik = _likelihood((1, 2, 2))
    context = torch.randn(4, dtype=DT)
    p = lik(context)
    torch.manual_seed(0)
    draws = p.sample((20000,))
    assert draws.shape == (20000, 1, 2, 2)
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    images = _all_binary_images(2, 2)
    probs = p.log_prob(images).exp().detach()
    codes = (draws.reshape(-1, 4) * torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=DT)).sum(1).long()
    freq = torch.bincount(codes, minlength=16).to(DT) / draws.shape[0]
    se = (probs * (1 - probs) / draws.shape[0]).sqrt()
    assert torch.all((freq - probs).abs() <= 4 * se)
    assert p.sample((2, 3)).shape == (2, 3, 1, 2, 2)


def test_no_mean_and_errors_name_the_problem():
    lik = _likelihood((1, 4, 4))
    p = lik(torch.randn(2, 4, dtype=DT))
    with pytest.raises(NotImplementedError, match="no closed-form mean"):
        p.mean
    assert distribution_mean(p) is None  # pyrovae's pictures then fall back to draws
    with pytest.raises(ValueError, match="conditioning of shape"):
        lik(torch.randn(2, 5, dtype=DT))
    with pytest.raises(ValueError, match="binary data"):
        lik.check(torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="one-channel images"):
        PixelCNNLikelihood((3, 8, 8), (4,))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        GatedPixelCNN((4,), kernel_size=4)
    with pytest.raises(ValueError):
        with pyro.validation_enabled(True):
            p.log_prob(torch.full((2, 1, 4, 4), 0.5, dtype=DT))


def _pixelcnn_vae(latent=2, context=8, seed=0):
    pyro.set_rng_seed(seed)
    shape = (1, 8, 8)
    decoder = MLPDecoder((context,), latent, (16,))  # z -> the conditioning vector h
    likelihood = PixelCNNLikelihood(shape, (context,), channels=8, layers=2, kernel_size=3)
    return VAE(decoder, StandardNormal(latent), likelihood), GaussianGuide(MLPEncoder(shape, latent, (16,)))


def test_a_pixelcnn_vae_trains_with_svirun_and_its_loss_decreases(binary_images):
    model, guide = _pixelcnn_vae()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to eager steps
        run = pyrovae.SVIRun(model, guide, binary_images, binary_images, lr=1e-2, batch_size=32, epochs=4,
                             progress=False)
        history = run.fit()
    assert run.step_fn.mode == "graph"
    assert history[-1]["train_elbo"] > history[0]["train_elbo"] + 2.0
    assert history[-1]["val_elbo"] > history[0]["val_elbo"] + 2.0
    draws = model(None, batch_size=3)
    assert draws.shape == (3, 1, 8, 8) and set(draws.unique().tolist()) <= {0.0, 1.0}


def test_importance_sampling_vectorizes_particles_through_the_pixelcnn(binary_images):
    model, guide = _pixelcnn_vae()
    x = binary_images.data[:4]
    guide_sites, model_sites = pair_sites(model, guide, x, num_particles=6)
    z = guide_sites["z"]["value"]
    assert z.shape == (6, 4, 2)
    log_px_z = model_sites["x"]["log_prob"]
    assert log_px_z.shape == (6, 4)
    for k in range(6):  # the same numbers one particle at a time
        torch.testing.assert_close(log_px_z[k], model.likelihood(model.decoder(z[k])).log_prob(x))
    res = log_likelihood(model, guide, x, num_samples=40, chunk_size=20, seed=0)
    assert res.log_px.shape == (4,) and torch.all(torch.isfinite(res.log_px)) and torch.all(res.log_px < 0)
