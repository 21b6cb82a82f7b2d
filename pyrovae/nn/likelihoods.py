"""Observation models p(x | z) given the decoder's output.

Each likelihood is an ``nn.Module``: ``forward(params)`` turns the decoder's
output of shape ``[*batch, *image_shape]`` into a Pyro distribution whose event
covers the whole image, and ``check(x)`` names what is wrong with data the
likelihood cannot score.
"""

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn


class BernoulliImage(dist.Independent):
    """``Bernoulli(logits).to_event(n)`` whose log-density negates after summing the pixels.

    log p(x) = -sum_i BCE(logits_i, x_i): torch's element-wise ``Bernoulli.log_prob``
    negates every pixel before the sum, one more pass over a ``[K, B, *image]``
    tensor that dominates the cost of a K=5000 importance-sampling estimate.
    """

    def __init__(self, logits, event_dims):
        super().__init__(dist.Bernoulli(logits=logits, validate_args=False), event_dims, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return super().expand(batch_shape, _instance=self._get_checked_instance(BernoulliImage, _instance))

    def log_prob(self, value):
        logits = self.base_dist.logits
        if value.shape != logits.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        bce = F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        return -bce.sum(tuple(range(-self.reinterpreted_batch_ndims, 0)))


class Bernoulli(nn.Module):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logits_i(z))), for binary data."""

    def __init__(self, event_dims=3):
        super().__init__()
        self.event_dims = event_dims

    def forward(self, logits):
        return BernoulliImage(logits, self.event_dims)

    def mean(self, logits):
        return torch.sigmoid(logits)

    def check(self, x):
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


LIKELIHOODS = {
    "bernoulli": lambda event_dims: Bernoulli(event_dims),
    "gaussian": lambda event_dims: Gaussian(0.1, event_dims=event_dims),
    "gaussian-learned": lambda event_dims: Gaussian(0.1, learn_scale=True, event_dims=event_dims),
}


def make_likelihood(name, event_dims=3):
    """Build a likelihood by name: ``bernoulli``, ``gaussian`` (fixed scale 0.1) or ``gaussian-learned``."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; expected one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](event_dims)
