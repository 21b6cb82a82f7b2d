"""Priors p(z) that plug into any model by argument.

A prior is an ``nn.Module`` whose ``forward()`` returns a Pyro distribution over
one datum's latent vector (event shape ``[latent_dim]``, empty batch shape); the
model's ``pyro.plate("data", B)`` broadcasts it over the batch (and over
particles when pyrovae vectorizes them).
"""

import pyro.distributions as dist
import torch
from torch import nn


class StandardNormal(nn.Module):
    """p(z) = N(z; 0, I)."""

    def __init__(self, latent_dim):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self):
        return dist.Normal(self.loc, self.scale).to_event(1)


PRIORS = {"standard": StandardNormal}


def make_prior(name, latent_dim, **kwargs):
    """Build a prior by name (see ``PRIORS``)."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; expected one of {sorted(PRIORS)}")
    return PRIORS[name](latent_dim, **kwargs)
