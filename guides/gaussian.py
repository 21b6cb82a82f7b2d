"""The amortized diagonal-Gaussian encoder q(z | x) = N(z; mu(x), diag(sigma(x)^2))."""

import pyro
import pyro.distributions as dist
from torch import nn


class GaussianGuide(nn.Module):
    """``guide(x)`` samples the latent site ``site`` (default ``"z"``) under ``pyro.plate("data", B)``.

    ``encoder(x)`` returns ``(loc, log_scale)``; see :mod:`pyrovae.nn.nets`.
    """

    def __init__(self, encoder, site="z"):
        super().__init__()
        self.encoder = encoder
        self.site = site

    def forward(self, x, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x)
            return pyro.sample(self.site, dist.Normal(loc, log_scale.exp()).to_event(1))
