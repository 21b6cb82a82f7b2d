"""Generative models with L >= 2 stochastic levels, z1 nearest the data and zL on top.

p(x, z1..zL) = p(zL) prod_{l<L} p(z_l | z_{l+1}) p(x | ...), with p(zL) any prior of
:mod:`pyrovae.nn.priors` and each p(z_l | z_{l+1}) a diagonal Gaussian whose
mean and log-scale come from a network. Two decoders, after the two papers:

- ``decode_from="z1"``: p(x | z1), the IWAE paper's two-stochastic-layer model
  (Burda, Grosse & Salakhutdinov 2015, arXiv 1509.00519, section 5), trained
  with the bottom-up guide :class:`pyrovae.guides.BottomUpGuide`;
- ``decode_from="all"``: p(x | z1, ..., zL), the VampPrior paper's HVAE
  (Tomczak & Welling 2018, arXiv 1705.07120, section 3.2: p(x | z1, z2)),
  trained with the top-down guide :class:`pyrovae.guides.TopDownGuide`.
"""

import pyro
import pyro.distributions as dist
import torch
from torch import nn


def level_names(levels):
    """The latent sites of an L-level model: ``["z1", ..., "zL"]``."""
    return [f"z{level}" for level in range(1, levels + 1)]


class HierarchicalVAE(nn.Module):
    """``model(x)`` scores a batch; ``model(None, batch_size=B)`` samples B data.

    ``conditionals[l]`` maps z_{l+2} to (loc, log_scale) of p(z_{l+1} | z_{l+2})
    (``L - 1`` of them); ``decoder`` maps z1 (or the concatenation z1..zL) to
    the likelihood's parameters. Sites ``"z1".."zL"`` and ``"x"``, all under
    ``pyro.plate("data", B)``; the model samples top-down, zL first.
    """

    DECODE_FROM = ("z1", "all")

    def __init__(self, decoder, prior, conditionals, likelihood, decode_from="z1"):
        super().__init__()
        if decode_from not in self.DECODE_FROM:
            raise ValueError(f"decode_from must be one of {self.DECODE_FROM}, got {decode_from!r}")
        if len(conditionals) < 1:
            raise ValueError("a hierarchical model needs at least 2 levels (one conditional p(z1 | z2))")
        self.decoder = decoder
        self.prior = prior
        self.conditionals = nn.ModuleList(conditionals)
        self.likelihood = likelihood
        self.decode_from = decode_from
        self.levels = len(conditionals) + 1

    def forward(self, x=None, batch_size=None):
        if x is None and batch_size is None:
            raise ValueError("the model needs data x, or batch_size to sample from the prior")
        names = level_names(self.levels)
        with pyro.plate("data", x.shape[0] if x is not None else batch_size):
            z = {names[-1]: pyro.sample(names[-1], self.prior())}
            for level in range(self.levels - 1, 0, -1):
                loc, log_scale = self.conditionals[level - 1](z[f"z{level + 1}"])
                z[f"z{level}"] = pyro.sample(f"z{level}", dist.Normal(loc, log_scale.exp()).to_event(1))
            if self.decode_from == "z1":
                h = z["z1"]
            else:
                h = _concat([z[n] for n in names])
            return pyro.sample("x", self.likelihood(self.decoder(h)), obs=x)


def _concat(zs):
    """Concatenate latents along the last dim after broadcasting their batch dims."""
    batch = torch.broadcast_shapes(*(t.shape[:-1] for t in zs))
    return torch.cat([t.expand(*batch, t.shape[-1]) for t in zs], dim=-1)
