"""An autoregressive decoder for binary images: a conditional gated PixelCNN.

p(x | z) = prod_i Bernoulli(x_i; sigmoid(l_i(x_{<i}, h(z)))), pixels i in raster
order (row by row, left to right), one channel (van den Oord et al. 2016,
"Conditional Image Generation with PixelCNN Decoders", arXiv 1606.05328). All
logits l_i come from one pass of a masked network over x, so log p(x | z) is
exact and costs one pass; a draw is ancestral, one pass per pixel.

The network has the paper's two stacks, built from masked convolutions
(van den Oord et al. 2016, "Pixel Recurrent Neural Networks", arXiv 1601.06759,
section 3.4: mask type A on the first layer, which hides the current pixel, B on
the later ones, which shows a position its own earlier features):

- the vertical stack v(r, c) sees only rows above r (a k x k kernel keeping the
  rows above its centre, type A; the rows up to and including its centre, type B);
- the horizontal stack h(r, c) sees row r left of c (a 1 x k kernel keeping the
  columns left of its centre, A; up to and including it, B) plus the vertical
  stack at (r, c) through a 1 x 1 convolution,

so there is no blind spot: l_i depends on every earlier pixel within the
receptive field and on no later one. Every layer is gated and conditioned on
the decoder's output h (the paper's eq. 4 and 5):

    y = tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h),

with h a vector ``[C]`` (global conditioning, broadcast over positions) or a
map ``[C, H, W]`` (location-dependent conditioning), V a 1 x 1 convolution.
The horizontal stack is residual after the first layer; two 1 x 1
convolutions with ReLUs map it to one logit per pixel.

Use it in ``models.VAE(decoder, prior, PixelCNNLikelihood(...))``: ``decoder``
maps z to the conditioning h (e.g. ``MLPDecoder((C,), latent_dim)``),
:class:`PixelCNNLikelihood` turns h into the distribution over the image.
"""

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch import nn

MASK_TYPES = ("A", "B")


def vertical_mask(kernel_size, mask_type):
    """A ``[k, k]`` mask keeping the rows above the centre (``"A"``), or those and the centre row (``"B"``)."""
    mask = torch.zeros(kernel_size, kernel_size)
    mask[: kernel_size // 2 + (mask_type == "B")] = 1
    return mask


def horizontal_mask(kernel_size, mask_type):
    """A ``[1, k]`` mask keeping the columns left of the centre (``"A"``), or those and the centre (``"B"``)."""
    mask = torch.zeros(1, kernel_size)
    mask[0, : kernel_size // 2 + (mask_type == "B")] = 1
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-size convolution whose kernel is multiplied by a fixed 0/1 ``mask`` of shape ``[kh, kw]``."""

    def __init__(self, in_channels, out_channels, mask):
        kh, kw = mask.shape
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask.clone())

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def _gate(a):
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    """One gated layer of both stacks: ``(v, h, context) -> (v', h')`` (van den Oord et al. 2016, figure 2)."""

    def __init__(self, in_channels, channels, context_channels, kernel_size, mask_type):
        super().__init__()
        self.v_conv = MaskedConv2d(in_channels, 2 * channels, vertical_mask(kernel_size, mask_type))
        self.h_conv = MaskedConv2d(in_channels, 2 * channels, horizontal_mask(kernel_size, mask_type))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.condition = nn.Conv2d(context_channels, 4 * channels, 1)
        self.residual = in_channels == channels and mask_type == "B"

    def forward(self, v, h, context):
        cond_v, cond_h = self.condition(context).chunk(2, dim=1)
        v_pre = self.v_conv(v)
        h_pre = self.h_conv(h) + self.v_to_h(v_pre)
        h_new = self.h_out(_gate(h_pre + cond_h))
        return _gate(v_pre + cond_v), h + h_new if self.residual else h_new


class GatedPixelCNN(nn.Module):
    """Masked gated network: images ``[N, 1, H, W]`` and conditioning ``[N, *context_shape]`` -> logits ``[N, 1, H, W]``.

    ``context_shape`` is ``(C,)`` or ``(C, H, W)``; ``layers`` gated layers of
    ``channels`` feature maps with ``kernel_size`` x ``kernel_size`` kernels
    (odd), the first of type A.
    """

    def __init__(self, context_shape, channels=32, layers=5, kernel_size=5):
        super().__init__()
        self.context_shape = tuple(context_shape)
        if len(self.context_shape) not in (1, 3):
            raise ValueError(f"the conditioning is a vector [C] or a map [C, H, W], got shape {list(context_shape)}")
        for name, value in (("channels", channels), ("layers", layers), ("kernel_size", kernel_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PixelCNN {name} must be a positive integer, got {value!r}")
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"PixelCNN kernel_size must be odd and >= 3, got {kernel_size}")
        c = self.context_shape[0]
        self.rows_above = layers * (kernel_size // 2)
        self.layers = nn.ModuleList(
            GatedLayer(1 if i == 0 else channels, channels, c, kernel_size, "A" if i == 0 else "B")
            for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, 1, 1))

    def forward(self, x, context):
        if context.dim() == 2:
            context = context[:, :, None, None]
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, context)
        return self.head(h)

    def row_logits(self, x, context, row):
        """The logits of row ``row``, ``[N, W]``, from the rows that reach it only.

        A logit in row r depends on the input rows r - ``rows_above`` .. r (each
        layer's masks reach k // 2 rows up and none down), so the network is run
        on that band: the same numbers as ``forward(x, context)[:, 0, row]``
        (the band's zero padding at its top meets only features row r does not
        read) at a fraction of the cost, which makes ancestral sampling of tall
        images affordable.
        """
        top = max(0, row - self.rows_above)
        if context.dim() == 4:
            context = context[:, :, top:row + 1]
        return self(x[:, :, top:row + 1], context)[:, 0, -1]


class PixelCNNBernoulli(dist.TorchDistribution):
    """p(x | h) of a :class:`GatedPixelCNN` over binary images ``[1, H, W]``: batch shape from ``context``.

    ``log_prob(x)`` broadcasts x ``[*b1, 1, H, W]`` against the context
    ``[*b2, *context_shape]`` (e.g. data ``[B, ...]`` and particles ``[K, B, C]``),
    flattens the batch dims and runs the network once. ``sample()`` draws pixel
    by pixel in raster order, one network pass each. There is no closed-form
    mean: ``.mean`` raises NotImplementedError (draw samples instead).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.boolean, 3)
    has_rsample = False

    def __init__(self, network, context, image_shape, validate_args=None):
        self.network, self.context = network, context
        n_ctx = len(network.context_shape)
        if tuple(context.shape[context.dim() - n_ctx:]) != network.context_shape:
            raise ValueError(f"the PixelCNN expects conditioning of shape [..., {', '.join(map(str, network.context_shape))}]"
                             f", got {list(context.shape)}")
        self.image_shape = tuple(image_shape)
        super().__init__(context.shape[: context.dim() - n_ctx], torch.Size(self.image_shape), validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        context = self.context.expand(batch_shape + self.network.context_shape)
        return PixelCNNBernoulli(self.network, context, self.image_shape, validate_args=False)

    def _flat(self, value):
        """(x ``[N, 1, H, W]``, context ``[N, *context_shape]``, batch shape) with broadcast batch dims."""
        n_ctx = len(self.network.context_shape)
        batch = torch.broadcast_shapes(value.shape[: value.dim() - 3], self.batch_shape)
        x = value.expand(batch + value.shape[-3:]).reshape(-1, *value.shape[-3:])
        context = self.context.expand(batch + self.context.shape[self.context.dim() - n_ctx:])
        return x.to(self.context.dtype), context.reshape(-1, *self.network.context_shape), batch

    def logits(self, value):
        """l_i(x_{<i}, h) for every pixel of ``value``, shape ``[*batch, 1, H, W]`` (one network pass)."""
        x, context, batch = self._flat(value)
        return self.network(x, context).reshape(batch + x.shape[1:])

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits(value)
        bce = F.binary_cross_entropy_with_logits(logits, value.to(logits.dtype).expand_as(logits), reduction="none")
        return -bce.sum((-3, -2, -1))

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.batch_shape
        context = self.context.expand(shape + self.network.context_shape).reshape(-1, *self.network.context_shape)
        x = torch.zeros(context.shape[0], *self.image_shape, dtype=context.dtype, device=context.device)
        _, height, width = self.image_shape
        for r in range(height):
            for c in range(width):
                x[:, 0, r, c] = torch.bernoulli(torch.sigmoid(self.network.row_logits(x, context, r)[:, c]))
        return x.reshape(shape + self.image_shape)

    @property
    def mean(self):
        raise NotImplementedError("a PixelCNN's p(x | z) has no closed-form mean; draw samples instead")


class PixelCNNLikelihood(nn.Module):
    """p(x | z) = PixelCNN(x; h), h = decoder(z): ``forward(h)`` returns a :class:`PixelCNNBernoulli`.

    ``image_shape`` is ``(1, H, W)`` (binary images, e.g. 28 x 28 or 64 x 64;
    the network is convolutional, so any size works); ``context_shape`` the
    shape of the decoder's output per datum, ``(C,)`` or ``(C, H, W)``.
    """

    def __init__(self, image_shape, context_shape, channels=32, layers=5, kernel_size=5):
        super().__init__()
        self.image_shape = tuple(image_shape)
        if len(self.image_shape) != 3 or self.image_shape[0] != 1:
            raise ValueError(f"the PixelCNN likelihood models one-channel images [1, H, W], got {list(image_shape)}")
        self.network = GatedPixelCNN(context_shape, channels, layers, kernel_size)

    def forward(self, context):
        return PixelCNNBernoulli(self.network, context, self.image_shape)

    def mean(self, context):
        raise NotImplementedError("a PixelCNN's p(x | z) has no closed-form mean; draw samples instead")

    def check(self, x):
        if not torch.all((x == 0) | (x == 1)):
            bad = x[(x != 0) & (x != 1)][:3].tolist()
            raise ValueError(f"the PixelCNN likelihood needs binary data (0 or 1), but the data holds values like "
                             f"{bad}; binarize it (--binarize dynamic or static)")
