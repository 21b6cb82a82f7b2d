"""Networks accept extra leading batch dims (needed to vectorize particles)."""

import pytest
import torch

from pyrovae.nn.nets import make_networks


@pytest.mark.parametrize("arch,size", [("mlp", 28), ("mlp", 64), ("conv", 28), ("conv", 64)])
def test_leading_batch_dims(arch, size):
    enc, dec = make_networks(arch, (1, size, size), latent_dim=5)
    x = torch.rand(3, 4, 1, size, size)
    loc, log_scale = enc(x)
    assert loc.shape == log_scale.shape == (3, 4, 5)
    torch.testing.assert_close(enc(x[1])[0], loc[1])
    assert dec(loc).shape == (3, 4, 1, size, size)
    torch.testing.assert_close(dec(loc[2]), dec(loc)[2])


def test_conv_rejects_other_sizes():
    with pytest.raises(ValueError, match=r"square images \[C, S, S\] with S 28 or 64, got \[1, 32, 32\]"):
        make_networks("conv", (1, 32, 32), latent_dim=2)


def test_conv_networks_take_rgb_images_and_decode_the_likelihoods_channels():
    enc, dec = make_networks("conv", (3, 64, 64), latent_dim=4, output_shape=(6, 64, 64))
    loc, _ = enc(torch.rand(2, 5, 3, 64, 64))
    assert loc.shape == (2, 5, 4) and dec(loc).shape == (2, 5, 6, 64, 64)


def test_conv_networks_take_one_hidden_width_as_the_command_line_gives_it():
    enc, dec = make_networks("conv", (1, 64, 64), latent_dim=3, hidden=[48])  # --hidden 48
    assert enc.head.loc.in_features == 48 and dec.net[0].out_features == 48
    with pytest.raises(ValueError, match=r"one fully connected hidden layer; got hidden sizes \[48, 48\]"):
        make_networks("conv", (1, 64, 64), latent_dim=3, hidden=[48, 48])


def test_conv_networks_keep_the_signal_at_initialisation():
    """He initialisation: through the encoder's conv layers and the decoder's hidden layers the second moment
    of the activations stays of order one (PyTorch's default init shrinks it ~6-fold per ReLU layer, 1e-4
    after five), so at initialisation the encoder's means follow the picture (issue 14)."""
    torch.manual_seed(0)
    enc, dec = make_networks("conv", (3, 64, 64), latent_dim=10)
    x = torch.rand(128, 3, 64, 64)  # 2x - 1 ~ U[-1, 1]: second moment 1/3
    h = enc.hidden_features(x)
    assert 0.3 < h.pow(2).mean().item() / (1 / 3) < 3
    z = torch.randn(128, 10)
    before_last = dec.net[:-1](z)
    assert 0.3 < before_last.pow(2).mean().item() < 3
    loc, log_scale = enc(x)
    assert loc.std(0).mean().item() > 0.05
    assert log_scale.abs().max().item() < 3  # the head keeps its small default init
