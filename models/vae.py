"""The one-stochastic-layer VAE generative model (Kingma & Welling 2014, arXiv 1312.6114).

p(x, z) = p(z) p(x | z), with p(z) any prior from :mod:`pyrovae.nn.priors` and
p(x | z) = likelihood(decoder(z)).
"""

import pyro
from torch import nn


class VAE(nn.Module):
    """``model(x)`` scores a batch; ``model(None, batch_size=B)`` samples B data (prior predictive).

    Sites: latent ``"z"`` and observed ``"x"``, both under ``pyro.plate("data", B)``.
    """

    def __init__(self, decoder, prior, likelihood):
        super().__init__()
        self.decoder = decoder
        self.prior = prior
        self.likelihood = likelihood

    def forward(self, x=None, batch_size=None):
        if x is None and batch_size is None:
            raise ValueError("VAE model needs data x, or batch_size to sample from the prior")
        with pyro.plate("data", x.shape[0] if x is not None else batch_size):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)
