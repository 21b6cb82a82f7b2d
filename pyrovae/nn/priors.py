"""Priors p(z) that plug into any model by argument.

A prior is an ``nn.Module`` whose ``forward()`` returns a Pyro distribution over
one datum's latent vector (event shape ``[latent_dim]``, empty batch shape); the
model's ``pyro.plate("data", B)`` broadcasts it over the batch (and over
particles when pyrovae vectorizes them). Hoffman & Johnson (2016, "ELBO
surgery") show that the standard normal prior's marginal KL term is where much
of the ELBO is lost; the two learned priors below let p(z) move towards the
aggregate posterior q(z) = (1/N) sum_n q(z | x_n).
"""

import pyro.distributions as dist
import torch
import torch.nn.functional as F
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


def _gaussian_mixture(loc, log_scale, logits=None):
    """(1/K or softmax(logits)) mixture of the K diagonal Gaussians N(loc_k, diag(exp(log_scale_k)^2))."""
    if logits is None:
        logits = torch.zeros(loc.shape[:-1], dtype=loc.dtype, device=loc.device)
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(loc, log_scale.exp()).to_event(1))


class MixtureOfGaussians(nn.Module):
    """p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)) with learnable pi, mu, sigma.

    The K means start at N(0, I) draws (so components are distinct), the
    scales at 1 and the weights uniform; pi = softmax(logits). Its log-density
    is the exact log-sum-exp over components; it has no closed-form KL against
    a Gaussian guide, so the ELBO's KL for this prior is a Monte Carlo term.
    """

    def __init__(self, latent_dim, num_components=10):
        super().__init__()
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.latent_dim, self.num_components = latent_dim, num_components
        self.loc = nn.Parameter(torch.randn(num_components, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(num_components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(num_components))

    def forward(self):
        return _gaussian_mixture(self.loc, self.log_scale, self.logits)


PSEUDO_INPUT_INITS = ("random", "data")


class VampPrior(nn.Module):
    """The variational mixture of posteriors prior (Tomczak & Welling 2018, arXiv 1705.07120, eq. 9).

    p(z) = (1/K) sum_k q(z | u_k), with K learnable pseudo-inputs u_k passed
    through the guide's own encoder. The pseudo-inputs are
    hardtanh(v_k, 0, 1) of free parameters v_k (the paper's clipping to the
    pixel range), initialised as the paper's default N(0.05, 0.01) (``init=
    "random"``) or from K training examples (``init="data"``, ``data=`` a
    tensor ``[K, *input_shape]``).

    ``encoder(u)`` returns ``(loc, log_scale)`` of q(z | u) for the latent the
    prior is over. It is the guide's module: the prior holds a reference but
    does not register it, so the encoder's parameters are the guide's, appear
    once in the pair (and once in a checkpoint, under the guide), and the model
    and guide always use the same weights. Put the prior in the model with
    ``VampPrior(guide.encoder, ...)``.
    """

    def __init__(self, encoder, input_shape, num_components=500, init="random", data=None):
        super().__init__()
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.input_shape = tuple(input_shape)
        self.num_components = num_components
        self._encoder = (encoder,)  # a tuple, so nn.Module does not register it as the prior's submodule
        if init == "random":
            v = 0.05 + 0.01 * torch.randn(num_components, *self.input_shape)
        elif init == "data":
            if data is None or tuple(data.shape) != (num_components, *self.input_shape):
                raise ValueError(f"init='data' needs data of shape {[num_components, *self.input_shape]}, "
                                 f"got {None if data is None else list(data.shape)}")
            v = data.detach().clone() if data.is_floating_point() else data.to(torch.get_default_dtype())
        else:
            raise ValueError(f"unknown pseudo-input init {init!r}; expected one of {PSEUDO_INPUT_INITS}")
        self.pseudo_inputs_raw = nn.Parameter(v)

    @property
    def encoder(self):
        return self._encoder[0]

    @property
    def pseudo_inputs(self):
        """u_k = hardtanh(v_k, 0, 1), shape ``[K, *input_shape]``."""
        return F.hardtanh(self.pseudo_inputs_raw, 0.0, 1.0)

    def forward(self):
        loc, log_scale = self.encoder(self.pseudo_inputs)
        return _gaussian_mixture(loc, log_scale)


PRIORS = {"standard": StandardNormal, "mog": MixtureOfGaussians, "vamp": VampPrior}


def make_prior(name, latent_dim, num_components=None, encoder=None, input_shape=None, init="random", data=None):
    """Build a prior by name (see ``PRIORS``).

    ``mog`` takes ``num_components`` (default 10); ``vamp`` takes
    ``num_components`` (default 500), the guide's ``encoder`` of this latent,
    the ``input_shape`` of the data and the pseudo-input ``init`` (and ``data``).
    """
    if name == "standard":
        return StandardNormal(latent_dim)
    if name == "mog":
        return MixtureOfGaussians(latent_dim, num_components or 10)
    if name == "vamp":
        if encoder is None or input_shape is None:
            raise ValueError("the VampPrior needs the guide's encoder and the input shape of the data")
        return VampPrior(encoder, input_shape, num_components or 500, init, data)
    raise ValueError(f"unknown prior {name!r}; expected one of {sorted(PRIORS)}")
