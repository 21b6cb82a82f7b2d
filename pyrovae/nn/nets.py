"""Encoder and decoder networks for images.

Every network here accepts any number of extra leading batch dimensions: an
input of shape ``[*batch, *in_shape]`` gives an output of shape
``[*batch, *out_shape]``. pyrovae relies on this to evaluate K importance
particles at once under an outer ``pyro.plate`` instead of a Python loop.
"""

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus}
# activations PyTorch can apply in place: after a layer whose output nothing else reads they overwrite it instead of
# allocating a tensor of the layer's size (for a 64x64 conv decoder, those allocations took 18% of a K-sample estimate)
IN_PLACE = {"relu", "elu"}


def _activation(name, in_place=True):
    """The class of activation ``name``, in place where PyTorch offers it (:data:`IN_PLACE`) unless ``in_place=False``
    (for an activation that may receive the network's input itself)."""
    try:
        act = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
    return functools.partial(act, inplace=True) if in_place and name in IN_PLACE else act


def _apply_flat(net, x, n_event_dims, out_shape):
    """Run ``net`` on ``x`` with its leading batch dims folded into one."""
    batch = x.shape[: x.dim() - n_event_dims]
    y = net(x.reshape(-1, *x.shape[x.dim() - n_event_dims:]))
    return y.reshape(*batch, *out_shape)


def mlp(sizes, activation="relu"):
    """A fully connected stack ``sizes[0] -> ... -> sizes[-1]`` with no final activation."""
    act = _activation(activation)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class GaussianHead(nn.Module):
    """Maps features to the mean and log-scale of a diagonal Gaussian."""

    def __init__(self, in_features, latent_dim):
        super().__init__()
        self.loc = nn.Linear(in_features, latent_dim)
        self.log_scale = nn.Linear(in_features, latent_dim)

    def forward(self, h):
        return self.loc(h), self.log_scale(h)


class MLPEncoder(nn.Module):
    """x of shape ``[*batch, *image_shape]`` -> (loc, log_scale), each ``[*batch, latent_dim]``."""

    def __init__(self, image_shape, latent_dim, hidden=(400,), activation="relu"):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        sizes = [math.prod(self.image_shape), *hidden]
        self.body = nn.Sequential(nn.Flatten(), mlp(sizes, activation), _activation(activation, bool(hidden))())
        self.head = GaussianHead(sizes[-1], latent_dim)

    def hidden_features(self, x):
        """The input of the Gaussian head, ``[*batch, hidden[-1]]``."""
        return _apply_flat(self.body, x, len(self.image_shape), (self.head.loc.in_features,))

    def forward(self, x):
        return self.head(self.hidden_features(x))


class MLPDecoder(nn.Module):
    """z of shape ``[*batch, latent_dim]`` -> distribution parameters ``[*batch, *image_shape]``."""

    def __init__(self, image_shape, latent_dim, hidden=(400,), activation="relu"):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.net = mlp([latent_dim, *hidden, math.prod(self.image_shape)], activation)

    def forward(self, z):
        return self.net(z).reshape(*z.shape[:-1], *self.image_shape)


class ConditionalGaussian(nn.Module):
    """Several inputs -> (loc, log_scale) of a diagonal Gaussian over ``latent_dim`` dims.

    ``in_shapes`` gives each input's event shape (an image ``[1, 28, 28]`` or a
    latent ``[d]``); ``forward(*inputs)`` flattens each input's event dims,
    broadcasts their leading batch dims against each other (so a datum
    ``[B, ...]`` meets particles ``[K, B, d]``), concatenates them and runs an
    MLP with ``hidden`` layers and a Gaussian head. It is the conditional of a
    hierarchical model's or guide's level, e.g. q(z1 | x, z2) or p(z1 | z2).
    """

    def __init__(self, in_shapes, latent_dim, hidden=(300, 300), activation="relu"):
        super().__init__()
        self.in_shapes = [tuple(s) for s in in_shapes]
        self.latent_dim = latent_dim
        sizes = [sum(math.prod(s) for s in self.in_shapes), *hidden]
        self.body = nn.Sequential(mlp(sizes, activation), _activation(activation)()) if hidden else nn.Identity()
        self.head = GaussianHead(sizes[-1], latent_dim)

    def forward(self, *inputs):
        if len(inputs) != len(self.in_shapes):
            raise ValueError(f"expected {len(self.in_shapes)} inputs, got {len(inputs)}")
        flat = [v.reshape(*v.shape[:v.dim() - len(s)], -1) for v, s in zip(inputs, self.in_shapes)]
        batch = torch.broadcast_shapes(*(f.shape[:-1] for f in flat))
        h = torch.cat([f.expand(*batch, f.shape[-1]) for f in flat], dim=-1)
        return self.head(self.body(h))


def _conv_plan(image_shape, role):
    """Channel plan for ``[C, S, S]`` images, S in {28, 64}: stride-2 convolutions down to 7x7 or 4x4."""
    shape = tuple(image_shape)
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in (28, 64) or shape[0] < 1:
        raise ValueError(f"{role} square images [C, S, S] with S 28 or 64, got {list(image_shape)}")
    c, size = shape[0], shape[1]
    if size == 28:
        return [(c, 32, 4, 2, 1), (32, 64, 4, 2, 1)], (64, 7, 7)
    return [(c, 32, 4, 2, 1), (32, 32, 4, 2, 1), (32, 64, 4, 2, 1), (64, 64, 4, 2, 1)], (64, 4, 4)


# sqrt(E[x^2] / E[act(x)^2]) for x ~ N(0, 1), the gain that keeps a layer's second moment (He et al. 2015):
# exact for relu, about right for elu and softplus, PyTorch's calculate_gain for tanh
GAINS = {"relu": math.sqrt(2), "elu": math.sqrt(2), "softplus": math.sqrt(2), "tanh": 5 / 3}


def _he_init(layer, activation):
    r"""He initialisation (He et al. 2015, arXiv 1502.01852) of a layer followed by ``activation``.

    w ~ N(0, gain^2 / fan_in) and b = 0, with fan_in the number of inputs that
    reach one output: c_in k^2 for a convolution, c_in (k / s)^2 for a transposed
    convolution of stride s, the input size for a linear layer. Then every layer
    keeps the variance of its input's signal. PyTorch's default (uniform,
    Var = 1 / (3 fan_in)) shrinks it about 6-fold per ReLU layer, so at
    initialisation a 5-layer conv encoder's output barely depends on its input
    (its means vary ~1e-3 across rivers pictures), and a VAE with that encoder
    settles on decoding the mean colour before the encoder has learned anything.
    """
    if isinstance(layer, nn.ConvTranspose2d):
        fan_in = layer.in_channels * math.prod(k / s for k, s in zip(layer.kernel_size, layer.stride))
    else:
        fan_in = layer.weight[0].numel()
    with torch.no_grad():
        layer.weight.normal_(0.0, GAINS[activation] / math.sqrt(fan_in))
        layer.bias.zero_()
    return layer


def _channels_last(module):
    """``module`` with its convolution weights in channels-last memory order (oneDNN's fast path on CPUs).

    The transposed convolutions of :class:`ConvDecoder` run about 1.5 times faster
    so on a CPU (``benchmarks/eval_speed.py``); the values are the same.
    """
    return module.to(memory_format=torch.channels_last)


# the kernel rows (and columns) of a 4-tap, stride-2, padding-1 transposed convolution that reach an output of
# phase a (row 2i + a) from inputs i - 1 + a and i + a
_PHASE_TAPS = torch.tensor([[3, 1], [2, 0]])
SUBPIXEL_MAX_CHANNELS = 3  # the most output channels for which the sub-pixel form is faster (without gradients)


class SubPixelConvTranspose2d(nn.ConvTranspose2d):
    r"""``nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)`` computed as a convolution and a pixel shuffle.

    A stride-2 transposed convolution is four ordinary convolutions, one per
    output phase (a, b) (Shi et al. 2016, "Is the deconvolution layer the same as
    a convolutional layer?", arXiv 1609.07009):

        y[o, 2i + a, 2j + b] = bias[o] + sum_{c, p, q} x[c, i - 1 + a + p, j - 1 + b + q] w[c, o, T[a, p], T[b, q]]

    for p, q in {0, 1} and T = :data:`_PHASE_TAPS`. So one 2x2 convolution of the
    zero-padded input with 4 c_out output channels, W[(o, a, b), c, p, q] =
    w[c, o, T[a, p], T[b, q]], holds every phase at an offset (a, b), and
    interleaving them gives y. Same parameters, same state dict and the same
    function as the transposed convolution (to float rounding). oneDNN's
    transposed convolution is slow for few output channels (a decoder's last
    layer): on a CPU this form runs 2 to 3 times faster for 1 output channel and
    1.5 times for 3, but not with gradients (forward and backward together gain
    nothing for 1 output channel and lose 2x for 3) nor for more channels; so
    :meth:`forward` takes it only without gradients (evaluation, K-sample
    estimates, pictures) and trains with the transposed convolution itself
    (``benchmarks/decoder_kernels.py``).
    """

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, 4, stride=2, padding=1)

    def forward(self, x):
        if torch.is_grad_enabled():
            return super().forward(x)
        n, _, rows, cols = x.shape
        c_out = self.out_channels
        taps = _PHASE_TAPS.to(x.device)
        w = self.weight[:, :, taps[:, None, :, None], taps[None, :, None, :]]  # [c_in, c_out, a, b, p, q]
        w = w.permute(1, 2, 3, 0, 4, 5).reshape(4 * c_out, self.in_channels, 2, 2)
        y = F.conv2d(x, w.contiguous(memory_format=torch.channels_last), self.bias.repeat_interleave(4), padding=1)
        y = y.view(n, c_out, 2, 2, rows + 1, cols + 1)
        out = y.new_empty(n, c_out, rows, 2, cols, 2)
        for a in (0, 1):
            for b in (0, 1):
                out[:, :, :, a, :, b] = y[:, :, a, b, a:a + rows, b:b + cols]
        return out.view(n, c_out, 2 * rows, 2 * cols)


class ConvEncoder(nn.Module):
    """Strided convolutions then a Gaussian head; images ``[*batch, C, S, S]`` with S in {28, 64}.

    Its body reads 2x - 1: data in [0, 1] centred on 0, so that the first layer sees
    the picture's contrasts rather than its mean brightness. The layers followed
    by the activation start from :func:`_he_init`; the head from PyTorch's default
    (small means and log-scales at first).
    """

    def __init__(self, image_shape, latent_dim, hidden=256, activation="relu"):
        super().__init__()
        self.image_shape = tuple(image_shape)
        plan, feat = _conv_plan(self.image_shape, "ConvEncoder takes")
        act = _activation(activation)
        layers = []
        for c_in, c_out, k, s, p in plan:
            layers += [_he_init(nn.Conv2d(c_in, c_out, k, s, p), activation), act()]
        layers += [nn.Flatten(), _he_init(nn.Linear(math.prod(feat), hidden), activation), act()]
        self.body = _channels_last(nn.Sequential(*layers))
        self.head = GaussianHead(hidden, latent_dim)
        self.latent_dim = latent_dim

    def hidden_features(self, x):
        """The input of the Gaussian head, ``[*batch, hidden]``: the body applied to 2x - 1."""
        batch = x.shape[:x.dim() - 3]
        h = self.body((2 * x - 1).reshape(-1, *self.image_shape).contiguous(memory_format=torch.channels_last))
        return h.reshape(*batch, -1)

    def forward(self, x):
        return self.head(self.hidden_features(x))


class ConvDecoder(nn.Module):
    """A linear layer then transposed convolutions mirroring :class:`ConvEncoder`.

    ``image_shape`` is the output's ``[C, S, S]``: the likelihood's parameters, e.g.
    2 channels per image channel for a decoded scale (``params_per_channel``).
    The layers followed by the activation start from :func:`_he_init`, the last
    one from PyTorch's default.
    """

    def __init__(self, image_shape, latent_dim, hidden=256, activation="relu"):
        super().__init__()
        self.image_shape = tuple(image_shape)
        plan, feat = _conv_plan(self.image_shape, "ConvDecoder makes")
        act = _activation(activation)
        layers = [_he_init(nn.Linear(latent_dim, hidden), activation), act(),
                  _he_init(nn.Linear(hidden, math.prod(feat)), activation), act(), nn.Unflatten(1, feat)]
        for i, (c_out, c_in, k, s, p) in enumerate(reversed(plan)):
            if i < len(plan) - 1:
                layers += [_he_init(nn.ConvTranspose2d(c_in, c_out, k, s, p), activation), act()]
            elif c_out <= SUBPIXEL_MAX_CHANNELS:
                layers.append(SubPixelConvTranspose2d(c_in, c_out))
            else:
                layers.append(nn.ConvTranspose2d(c_in, c_out, k, s, p))
        self.net = _channels_last(nn.Sequential(*layers))
        self.latent_dim = latent_dim
        self._unflatten = layers.index(next(m for m in layers if isinstance(m, nn.Unflatten))) + 1

    def forward(self, z):
        batch = z.shape[:-1]
        h = self.net[:self._unflatten](z.reshape(-1, z.shape[-1])).contiguous(memory_format=torch.channels_last)
        return self.net[self._unflatten:](h).contiguous().reshape(*batch, *self.image_shape)


class ContextEncoder(nn.Module):
    """An :class:`MLPEncoder` or :class:`ConvEncoder` that also returns a context h(x) for a flow guide.

    The inverse autoregressive flow guide (Kingma et al. 2016, arXiv 1606.04934,
    section 4) reads (mu, sigma, h) from one encoder: z0 ~ N(mu(x), sigma(x)) and
    every flow step is conditioned on h. Here f(x) are the wrapped encoder's
    features (the input of its Gaussian head): (mu, log sigma) = head(f(x)) as
    before and h = Linear(f(x)) with ``context_dim`` units.
    x ``[*batch, *image_shape]`` -> (loc, log_scale, context), ``[*batch, latent_dim]`` twice and
    ``[*batch, context_dim]``.
    """

    def __init__(self, encoder, context_dim):
        super().__init__()
        if not isinstance(encoder, (MLPEncoder, ConvEncoder)):
            raise TypeError(f"ContextEncoder wraps an MLPEncoder or ConvEncoder, got {type(encoder).__name__}")
        if not isinstance(context_dim, int) or context_dim < 1:
            raise ValueError(f"context_dim must be a positive integer, got {context_dim!r}")
        self.encoder = encoder
        self.image_shape, self.latent_dim, self.context_dim = encoder.image_shape, encoder.latent_dim, context_dim
        self.features = encoder.head.loc.in_features
        self.context = nn.Linear(self.features, context_dim)

    def forward(self, x):
        f = self.encoder.hidden_features(x)
        loc, log_scale = self.encoder.head(f)
        return loc, log_scale, self.context(f)


ARCHITECTURES = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder)}


def _one_width(hidden):
    """The conv networks' one fully connected width: an int, or a sequence holding one (``--hidden 256``)."""
    widths = list(hidden) if isinstance(hidden, (list, tuple)) else [hidden]
    if len(widths) != 1:
        raise ValueError(f"the conv networks have one fully connected hidden layer; got hidden sizes {widths}")
    return int(widths[0])


def make_networks(arch, image_shape, latent_dim, hidden=None, activation="relu", output_shape=None):
    """Build a matching (encoder, decoder) pair by name: ``"mlp"`` or ``"conv"``.

    The encoder reads ``image_shape``; the decoder outputs ``output_shape``
    (default ``image_shape``), the shape of its likelihood's parameters.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown network architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    enc_cls, dec_cls = ARCHITECTURES[arch]
    kw = {"activation": activation}
    if hidden is not None:
        kw["hidden"] = tuple(hidden) if arch == "mlp" else _one_width(hidden)
    return enc_cls(image_shape, latent_dim, **kw), dec_cls(output_shape or image_shape, latent_dim, **kw)
