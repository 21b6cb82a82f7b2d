"""Observation models p(x | z) given the decoder's output.

Each likelihood is an ``nn.Module``: ``forward(params)`` turns the decoder's
output of shape ``[*batch, *output_shape]`` into a Pyro distribution whose event
covers the whole image, and ``check(x)`` names what is wrong with data the
likelihood cannot score. ``params_per_channel`` says how many decoder channels
one image channel takes: 1 for every likelihood whose decoder output is the mean
(or logits), 2 for a decoder that also outputs a log-scale per pixel
(``scale="decoder"``), so a decoder for a ``[C, H, W]`` image must produce
``[params_per_channel * C, H, W]``.

For RGB images: :class:`GaussianImage` (a learned scale per channel or per
pixel, or one from the decoder) and :class:`DiscretizedLogisticImage` for 8-bit
data (Salimans et al. 2017, PixelCNN++, arXiv 1701.05517). :func:`bits_per_dim`
turns nats per image into bits per dimension.
"""

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all


class BernoulliImage(dist.Independent):
    r"""``Bernoulli(logits).to_event(n)`` for binary images, with a log-density of two passes over the logits.

    For x_i in {0, 1}, log p(x) = -sum_i softplus((1 - 2 x_i) l_i): log sigmoid(l_i)
    where x_i = 1, log sigmoid(-l_i) where x_i = 0. Torch's element-wise
    ``Bernoulli.log_prob`` (``binary_cross_entropy_with_logits``, then a negation)
    makes several passes over the ``[K, B, *image]`` logits, the tensor that
    dominates the cost of a K=5000 importance-sampling estimate; this form takes
    two (a product and softplus), 1.8 times faster, and every pixel's term is
    exact (no cancellation between sum_i x_i l_i and sum_i softplus(l_i), which
    in float32 loses 1e-3 nats on a confident decoder's image;
    ``benchmarks/decoder_kernels.py``).

    The form holds for binary x only (at x_i = 1/2 it would be a constant). As
    with Pyro's ``Bernoulli``, a value outside {0, 1} raises ``ValueError``
    while Pyro's validation is on (the default; the logits are not checked);
    with it off the value is taken as binary.
    """

    def __init__(self, logits, event_dims):
        super().__init__(dist.Bernoulli(logits=logits, validate_args=False), event_dims, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return super().expand(batch_shape, _instance=self._get_checked_instance(BernoulliImage, _instance))

    def log_prob(self, value):
        if dist.is_validation_enabled():
            check_binary(value)
        logits, sign = self.base_dist.logits, 1 - 2 * value.to(self.base_dist.logits.dtype)
        n = self.reinterpreted_batch_ndims
        if n == 0:
            return -F.softplus(logits * sign)
        return -F.softplus(logits.flatten(-n) * sign.flatten(-n)).sum(-1)


class Bernoulli(nn.Module):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logits_i(z))), for binary data."""

    params_per_channel = 1

    def __init__(self, event_dims=3):
        super().__init__()
        self.event_dims = event_dims

    def forward(self, logits):
        return BernoulliImage(logits, self.event_dims)

    def mean(self, logits):
        return torch.sigmoid(logits)

    def check(self, x):
        check_binary(x)


def check_binary(x):
    """Raise ``ValueError`` naming values of ``x`` other than 0 and 1 (what a Bernoulli likelihood cannot score)."""
    if not torch.all((x == 0) | (x == 1)):
        bad = x[(x != 0) & (x != 1)][:3].tolist()
        raise ValueError(
            f"the Bernoulli likelihood needs binary data (0 or 1), but the data holds values like {bad}; "
            "binarize it (--binarize dynamic or static) or use a Gaussian likelihood")


class Gaussian(nn.Module):
    """p(x|z) = N(x; G(z), eta I) with eta = scale**2 fixed, or a learned scalar scale.

    The observation model of the VAE lecture notes (seed 001): log p(x|z) =
    -||x - G(z)||^2 / (2 eta) + const, so a small fixed ``scale`` weighs the
    reconstruction error heavily against the KL term.
    """

    params_per_channel = 1

    def __init__(self, scale=0.1, learn_scale=False, event_dims=3):
        super().__init__()
        self.event_dims = event_dims
        if not scale > 0:
            raise ValueError(f"Gaussian likelihood scale must be positive, got {scale}")
        log_scale = torch.tensor(math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, loc):
        return dist.Normal(loc, self.log_scale.exp(), validate_args=False).to_event(self.event_dims)

    def mean(self, loc):
        return loc

    def check(self, x):
        """Any finite data can be scored by a Gaussian."""


SCALES = ("channel", "pixel", "decoder")


class _LocScale(nn.Module):
    """Decoder output -> (loc, scale), with the log-scale a parameter per channel or per pixel, or decoded.

    ``image_shape`` is ``[C, *spatial]`` (channel first). ``scale="channel"``: a
    learned log-scale of shape ``[C, 1, ..., 1]``; ``"pixel"``: a learned log-scale
    of shape ``image_shape``; in both the decoder outputs the loc alone,
    ``[*batch, C, *spatial]``. ``"decoder"``: the decoder outputs
    ``[*batch, 2C, *spatial]``, the C locs then the C log-scales along the channel
    dim. ``init_scale`` starts the learned scales.
    """

    def __init__(self, image_shape, scale="channel", init_scale=0.1):
        super().__init__()
        self.image_shape = tuple(int(n) for n in image_shape)
        if not self.image_shape or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be [C, *spatial] with positive sizes, got {list(image_shape)}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        self.scale_mode = scale
        self.event_dims = len(self.image_shape)
        self.params_per_channel = 2 if scale == "decoder" else 1
        channels = self.image_shape[0]
        shape = {"channel": (channels,) + (1,) * (self.event_dims - 1), "pixel": self.image_shape}.get(scale)
        if shape is not None:
            self.log_scale = nn.Parameter(torch.full(shape, math.log(init_scale)))

    @property
    def output_shape(self):
        """The decoder output's event shape: ``[params_per_channel * C, *spatial]``."""
        return (self.params_per_channel * self.image_shape[0], *self.image_shape[1:])

    def loc_and_scale(self, params):
        if tuple(params.shape[params.dim() - self.event_dims:]) != self.output_shape:
            raise ValueError(f"{type(self).__name__} (scale={self.scale_mode!r}) takes decoder outputs "
                             f"[*batch, {', '.join(map(str, self.output_shape))}], got {list(params.shape)}")
        if self.scale_mode != "decoder":
            return params, self.log_scale.exp()
        loc, log_scale = params.split(self.image_shape[0], dim=-self.event_dims)
        return loc, log_scale.exp()


class GaussianImage(_LocScale):
    """p(x|z) = prod_i N(x_i; mu_i(z), sigma_i^2), sigma learned per channel or per pixel, or decoded.

    A density on the reals: on 8-bit data it is not a probability of the data, and
    its log-density is not comparable with a discrete likelihood's (see
    :func:`bits_per_dim`). Data: any finite values.
    """

    def forward(self, params):
        loc, scale = self.loc_and_scale(params)
        return dist.Normal(loc, scale, validate_args=False).to_event(self.event_dims)

    def mean(self, params):
        return self.loc_and_scale(params)[0]

    def check(self, x):
        """Any finite data can be scored by a Gaussian."""


class _EightBit(constraints.Constraint):
    """Values k/255 for integers k in 0..255, up to float rounding (1e-3 of a level)."""

    is_discrete = True
    event_dim = 0

    def check(self, value):
        level = value * 255
        return (level > -1e-3) & (level < 255 + 1e-3) & ((level - level.round()).abs() < 1e-3)

    def __repr__(self):
        return "EightBit()"


eight_bit = _EightBit()


def _log1mexp(a):
    """log(1 - exp(-a)) for a > 0, stably (Maechler 2012: expm1 below log 2, log1p above)."""
    return torch.where(a < math.log(2), torch.log(-torch.expm1(-a)), torch.log1p(-torch.exp(-a)))


class DiscretizedLogistic(TorchDistribution):
    r"""A logistic distribution discretized to the 256 levels x = k/255 of an 8-bit value.

    PixelCNN++'s likelihood (Salimans et al. 2017, arXiv 1701.05517), one
    component per value, on data scaled to [0, 1]: with F the logistic CDF of
    ``loc`` and ``scale``, level k covers [x - 1/510, x + 1/510] and the end levels
    take the tails,

    .. math:: P(0) = F(1/510), \quad P(255) = 1 - F(1 - 1/510), \quad
              P(k) = F(x + 1/510) - F(x - 1/510).

    With a = ((k + 1/2)/255 - loc) / scale and b = ((k - 1/2)/255 - loc) / scale,
    :math:`\sigma(a) - \sigma(b) = \sigma(a)\,\sigma(-b)\,(1 - e^{-(a-b)})` exactly,
    so every log-probability is a sum of finite terms,

    .. math:: \log P(k) = \log\sigma(a)\,[k < 255] + \log\sigma(-b)\,[k > 0]
              + \log(1 - e^{-(a - b)})\,[0 < k < 255],

    stable in both tails and for any scale (no difference of two CDFs that
    cancels), with finite gradients at the end levels; the probabilities of the
    256 levels sum to 1 (telescoping: one level's upper edge is computed exactly as
    its neighbour's lower edge). Its support is the levels; ``mean`` is exact (255
    CDF evaluations per value).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = eight_bit
    has_rsample = False

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        super(DiscretizedLogistic, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        level = (value * 255).round()
        # the edges from the level, so that one level's upper edge is bitwise its neighbour's lower edge
        a = ((level + 0.5) / 255 - self.loc) / self.scale
        b = ((level - 0.5) / 255 - self.loc) / self.scale
        zero = torch.zeros((), dtype=a.dtype, device=a.device)
        upper = torch.where(level < 255, -F.softplus(-a), zero)  # log sigma(a): the level's upper edge
        lower = torch.where(level > 0, -F.softplus(b), zero)  # log sigma(-b): its lower edge
        width = torch.where((level > 0) & (level < 255), _log1mexp(a - b), zero)
        return upper + lower + width

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(torch.finfo(u.dtype).tiny, 1 - torch.finfo(u.dtype).eps)
            x = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return (x * 255).round().clamp(0, 255) / 255

    @property
    def mean(self):
        """E[x] = sum_{k=1}^{255} P(x >= k/255) / 255 = sum_k sigma((loc - (k - 1/2)/255) / scale) / 255."""
        total = torch.zeros_like(self.loc)
        for k in range(1, 256):
            total += torch.sigmoid((self.loc - (k - 0.5) / 255) / self.scale)
        return total / 255


INIT_SCALE = 0.3  # the discretized logistic's initial learned scale: see DiscretizedLogisticImage


class DiscretizedLogisticImage(_LocScale):
    """p(x|z) = prod_i DiscretizedLogistic(x_i; mu_i(z), s_i) for 8-bit images with values k/255.

    One logistic per value, without PixelCNN++'s mixture and its coupling of the
    colour channels: given z the values are independent, as in a VAE's decoder.
    The decoder's output is the loc on the data's [0, 1] scale (unconstrained);
    ``scale`` sets where the scales come from (see :class:`_LocScale`).

    The learned scales start at ``init_scale = INIT_SCALE`` (0.3), not small: the
    gradient of log P(k) in the loc is about (2 sigma(e / s) - 1) / s for an
    error e = x - loc, linear in e (a Gaussian's, mean-seeking) while |e| < s but
    a constant sign for |e| >> s (an absolute error's, median-seeking). Started
    at s = 0.1, every value a decoder cannot yet place -- the thin river, ~0.4
    from the grass colour in each channel, on a tenth of the pixels of
    ``rivers`` -- pulls its loc towards the median, the grass, with a gradient
    that no longer grows with the error, and a VAE learns the grass colour only
    (issue 14; with the conv networks' old init, :func:`pyrovae.nn.nets._he_init`). At 0.3 the first steps fit the mean, the
    picture's shapes appear, and the scales shrink as the locs improve.
    """

    def __init__(self, image_shape, scale="channel", init_scale=INIT_SCALE):
        super().__init__(image_shape, scale, init_scale)

    def forward(self, params):
        loc, scale = self.loc_and_scale(params)
        return DiscretizedLogistic(loc, scale, validate_args=False).to_event(self.event_dims)

    def mean(self, params):
        return self(params).mean

    def check(self, x):
        ok = eight_bit.check(x)
        if not torch.all(ok):
            bad = x[~ok][:3].tolist()
            raise ValueError(
                "the discretized logistic likelihood needs 8-bit data with values k/255 (k = 0..255), but the "
                f"data holds values like {bad}; divide 0..255 integers by 255, or use a gaussian likelihood "
                "for continuous data")


def bits_per_dim(nats_per_image, event_shape):
    r"""A negative log-likelihood in nats per image as bits per dimension: nats / (prod(event_shape) ln 2).

    Only probabilities of the data compare this way: a discrete likelihood such as
    :class:`DiscretizedLogisticImage` on 8-bit data. A density such as
    :class:`GaussianImage` evaluated at 8-bit values is not a probability and its
    bits per dimension are not comparable (they fall without bound as the scale
    shrinks onto the levels). Dequantized -- trained and scored at
    x + (u - 1/2)/255 with u ~ U[0, 1)^D -- a density's negative log-likelihood
    plus D ln 255 nats is an upper bound on the NLL of the discrete model that
    integrates it over the levels' bins (Theis, van den Oord & Bethge 2016,
    arXiv 1511.01844), and is then comparable.
    """
    dims = math.prod(int(n) for n in event_shape)
    if dims < 1:
        raise ValueError(f"event_shape must have at least one element, got {list(event_shape)}")
    return nats_per_image / (dims * math.log(2))


def _with_shape(cls, name, **kwargs):
    def build(event_dims, image_shape=None):
        if image_shape is None:
            raise ValueError(f"the {name!r} likelihood learns or decodes a scale per channel: it needs the "
                             "image_shape [C, H, W] (make_likelihood(name, image_shape=...))")
        if len(image_shape) != event_dims:
            raise ValueError(f"event_dims={event_dims} does not match image_shape {list(image_shape)}")
        return cls(image_shape, **kwargs)

    return build


LIKELIHOODS = {
    "bernoulli": lambda event_dims, image_shape=None: Bernoulli(event_dims),
    "gaussian": lambda event_dims, image_shape=None: Gaussian(0.1, event_dims=event_dims),
    "gaussian-learned": lambda event_dims, image_shape=None: Gaussian(0.1, learn_scale=True, event_dims=event_dims),
    "gaussian-channel": _with_shape(GaussianImage, "gaussian-channel", scale="channel"),
    "gaussian-pixel": _with_shape(GaussianImage, "gaussian-pixel", scale="pixel"),
    "discretized-logistic": _with_shape(DiscretizedLogisticImage, "discretized-logistic", scale="channel"),
    "discretized-logistic-decoder": _with_shape(DiscretizedLogisticImage, "discretized-logistic-decoder",
                                                scale="decoder"),
}


def make_likelihood(name, event_dims=3, image_shape=None):
    """Build a likelihood by name.

    ``bernoulli``, ``gaussian`` (fixed scale 0.1), ``gaussian-learned`` (one learned
    scale); and, needing ``image_shape`` ``[C, H, W]``: ``gaussian-channel`` and
    ``gaussian-pixel`` (a learned scale per channel / per pixel),
    ``discretized-logistic`` (8-bit data; a learned scale per channel) and
    ``discretized-logistic-decoder`` (8-bit data; the decoder outputs a loc and a
    log-scale per value, ``params_per_channel = 2``).
    """
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; expected one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](event_dims, image_shape)
