"""Amortized guides for the L-level models of :mod:`pyrovae.models.hierarchical`.

- :class:`BottomUpGuide`: q(z1 | x) prod_{l>1} q(z_l | z_{l-1}), the IWAE paper's
  recognition model (Burda et al. 2015, arXiv 1509.00519, section 5).
- :class:`TopDownGuide`: q(zL | x) prod_{l<L} q(z_l | x, z_{l+1}), the VampPrior
  paper's HVAE recognition model (Tomczak & Welling 2018, arXiv 1705.07120,
  section 3.2: q(z2 | x) q(z1 | x, z2)). Its ``encoder`` q(zL | x) is the one a
  VampPrior on zL shares.

Each level is a diagonal Gaussian whose (loc, log_scale) come from a network
(:class:`pyrovae.nn.nets.ConditionalGaussian` or any module with that signature).
"""

import pyro
import pyro.distributions as dist
from torch import nn


def _sample(name, params):
    loc, log_scale = params
    return pyro.sample(name, dist.Normal(loc, log_scale.exp()).to_event(1))


class _LevelGuide(nn.Module):
    """An L-level guide: ``encoder`` for the level read from x alone, ``conditionals`` for the other L - 1."""

    def __init__(self, encoder, conditionals):
        super().__init__()
        self.encoder = encoder
        self.conditionals = nn.ModuleList(conditionals)
        self.levels = len(conditionals) + 1


class BottomUpGuide(_LevelGuide):
    """``guide(x)``: z1 ~ q(z1 | x) = N(encoder(x)), then z_l ~ q(z_l | z_{l-1}) = N(conditionals[l-2](z_{l-1}))."""

    def forward(self, x, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            z = _sample("z1", self.encoder(x))
            for level in range(2, self.levels + 1):
                z = _sample(f"z{level}", self.conditionals[level - 2](z))


class TopDownGuide(_LevelGuide):
    """``guide(x)``: zL ~ q(zL | x) = N(encoder(x)), then z_l ~ q(z_l | x, z_{l+1}) = N(conditionals[l-1](x, z_{l+1}))."""

    def forward(self, x, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            z = _sample(f"z{self.levels}", self.encoder(x))
            for level in range(self.levels - 1, 0, -1):
                z = _sample(f"z{level}", self.conditionals[level - 1](x, z))
