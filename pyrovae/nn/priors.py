"""Priors p(z) that plug into any model by argument.

A prior is an ``nn.Module`` whose ``forward()`` returns a Pyro distribution over
one datum's latent vector (event shape ``[latent_dim]``, empty batch shape); the
model's ``pyro.plate("data", B)`` broadcasts it over the batch (and over
particles when pyrovae vectorizes them). Hoffman & Johnson (2016, "ELBO
surgery") show that the standard normal prior's marginal KL term is where much
of the ELBO is lost; the learned priors below let p(z) move towards the
aggregate posterior q(z) = (1/N) sum_n q(z | x_n).
"""

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import AffineAutoregressive
from pyro.nn import AutoRegressiveNN
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


class _MADE(AutoRegressiveNN):
    """Pyro's ``AutoRegressiveNN``, casting its input to its weights' dtype.

    Pyro's ``AffineAutoregressive`` inverse (a draw from :class:`FlowPrior`) starts
    from zeros of the default dtype, which a float64 network would reject.
    """

    def forward(self, x):
        return super().forward(x.to(self.layers[0].weight.dtype))


class FlowPrior(nn.Module):
    """A masked autoregressive flow prior (Papamakarios et al. 2017, arXiv 1705.07057) on N(0, I).

    p(z) = N(u; 0, I) prod_t |det d u_t / d u_{t-1}|, u_0 = z, u = u_S, where each
    of the ``steps`` steps maps u_{t-1} to u_t by Pyro's ``AffineAutoregressive``
    over a MADE network (``AutoRegressiveNN``, Germain et al. 2015, arXiv
    1502.03509) with ``hidden`` units (default [10 D]):

        u_{t,i} = u_{t-1,i} exp(s_i(u_{t-1,<i})) + m_i(u_{t-1,<i}),

    the MAF of the paper's section 3 with exp(-alpha_i) = exp(s_i) and
    mu_i = -m_i exp(-s_i). The distribution pushes N(0, I) through the inverses
    of these steps, so its log-density, which needs z -> u, is one parallel pass
    per step (no inversion), and a draw, which needs u -> z, is D sequential
    passes per step. The ordering is reversed between steps. The last layer of
    every MADE starts at zero (s = m = 0), so the prior starts as N(0, I).

    Torch has no KL between a Gaussian guide and a ``TransformedDistribution``:
    the ELBO's KL for this prior is a Monte Carlo term.
    """

    def __init__(self, latent_dim, steps=4, hidden=None):
        super().__init__()
        for name, value, least in (("latent_dim", latent_dim, 2), ("steps", steps, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"FlowPrior: {name} must be an integer >= {least}, got {value!r}")
        self.latent_dim, self.steps = latent_dim, steps
        hidden = [10 * latent_dim] if hidden is None else [int(h) for h in hidden]
        order = torch.arange(latent_dim)
        self.made = nn.ModuleList(_MADE(latent_dim, hidden, permutation=order if t % 2 == 0 else order.flip(0))
                                  for t in range(steps))
        for net in self.made:
            nn.init.zeros_(net.layers[-1].weight)
            nn.init.zeros_(net.layers[-1].bias)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self):
        # z -> u applies the steps in order 1..S; the distribution maps u -> z through their inverses, S..1
        to_base = [AffineAutoregressive(net) for net in self.made]
        return dist.TransformedDistribution(dist.Normal(self.loc, self.scale).to_event(1),
                                            [t.inv for t in reversed(to_base)])


PRIORS = {"standard": StandardNormal, "mog": MixtureOfGaussians, "vamp": VampPrior, "flow": FlowPrior}


def make_prior(name, latent_dim, num_components=None, encoder=None, input_shape=None, init="random", data=None,
               flow_steps=None):
    """Build a prior by name (see ``PRIORS``).

    ``mog`` takes ``num_components`` (default 10); ``vamp`` takes
    ``num_components`` (default 500), the guide's ``encoder`` of this latent,
    the ``input_shape`` of the data and the pseudo-input ``init`` (and ``data``);
    ``flow`` takes its number of steps ``flow_steps`` (default 4).
    """
    if name == "standard":
        return StandardNormal(latent_dim)
    if name == "mog":
        return MixtureOfGaussians(latent_dim, num_components or 10)
    if name == "vamp":
        if encoder is None or input_shape is None:
            raise ValueError("the VampPrior needs the guide's encoder and the input shape of the data")
        return VampPrior(encoder, input_shape, num_components or 500, init, data)
    if name == "flow":
        return FlowPrior(latent_dim, 4 if flow_steps is None else flow_steps)
    raise ValueError(f"unknown prior {name!r}; expected one of {sorted(PRIORS)}")
