"""Networks accept extra leading batch dims (needed to vectorize particles)."""

import pytest
import torch

from pyrovae.nn.nets import SubPixelConvTranspose2d, make_networks


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


@pytest.mark.parametrize("c_out,size", [(1, 32), (3, 32), (2, 14), (5, 7)])
def test_the_sub_pixel_form_is_the_transposed_convolution(c_out, size):
    """Without gradients SubPixelConvTranspose2d computes a 2x2 convolution and interleaves its four phases;
    it must be the 4-tap stride-2 transposed convolution of its own weights, for either memory layout."""
    torch.manual_seed(0)
    layer = SubPixelConvTranspose2d(6, c_out)
    x = torch.randn(3, 6, size, size + 2)
    expected = torch.nn.functional.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=1)
    with torch.no_grad():
        for layout in (torch.contiguous_format, torch.channels_last):
            got = layer(x.contiguous(memory_format=layout))
            assert got.shape == (3, c_out, 2 * size, 2 * size + 4)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_sub_pixel_layer_trains_as_a_transposed_convolution():
    """With gradients it is nn.ConvTranspose2d itself (bitwise), so training is unchanged; its state dict is one."""
    torch.manual_seed(0)
    layer = SubPixelConvTranspose2d(4, 1)
    plain = torch.nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(layer(x), plain(x))


@pytest.mark.parametrize("size,c_out", [(28, 1), (64, 1), (64, 3)])
def test_the_conv_decoder_evaluates_as_it_trains(size, c_out):
    """The decoder's last layer takes the sub-pixel form in evaluation and its in-place activations leave the
    input alone: no-grad outputs equal the outputs with gradients to float rounding."""
    torch.manual_seed(0)
    enc, dec = make_networks("conv", (c_out, size, size), latent_dim=4)
    assert isinstance(dec.net[-1], SubPixelConvTranspose2d)
    x = torch.rand(2, 3, c_out, size, size)
    x_before = x.clone()
    with torch.no_grad():
        z = enc(x)[0]
        fast = dec(z)
    assert torch.equal(x, x_before)
    torch.testing.assert_close(fast, dec(z), rtol=1e-5, atol=1e-5)


def test_in_place_activations_never_touch_the_networks_input():
    """An MLP encoder without hidden layers applies its activation to the input itself: not in place."""
    enc, _ = make_networks("mlp", (1, 4, 4), latent_dim=2, hidden=[])
    x = torch.randn(3, 1, 4, 4)
    x_before = x.clone()
    enc(x)
    assert torch.equal(x, x_before)
