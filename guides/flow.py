"""Flow guides: an amortized Gaussian pushed through a normalizing flow conditioned on x.

    z0 ~ N(mu(x), diag(sigma(x)^2)),   z = f_S(... f_1(z0; h(x)) ...; h(x)),
    log q(z | x) = log N(z0; mu(x), sigma(x)) - sum_s log |det d f_s / d z_{s-1}|

(Rezende & Mohamed 2015, arXiv 1505.05770, section 3). The encoder returns
(mu, log sigma, h) -- :class:`pyrovae.nn.nets.ContextEncoder` or any module with
that signature -- and the flow steps are Pyro's conditional transforms, so the
site's distribution is a Pyro ``TransformedDistribution``: exact log-density,
``.to_event(1)`` semantics (event shape ``[D]``), reparameterized draws. Pyro
caches each step's input for the values it produced, so scoring the guide's own
draw costs no inversion; scoring any other value (IWAE with ``dreg=True``,
ELBO surgery) inverts the flow, exactly for IAF (D sequential passes) and
Householder (reflections are involutions), not at all for planar flows.

No closed-form KL exists for a flowed site: torch has none for a
``TransformedDistribution``, so the ELBO's KL falls back to log q(z|x) - log p(z)
at the draw.

- :class:`IAFGuide`: inverse autoregressive flow (Kingma et al. 2016, arXiv 1606.04934).
- :class:`HouseholderGuide`: Householder flow (Tomczak & Welling 2016, arXiv 1611.09630).
- :class:`PlanarGuide`: planar flow (Rezende & Mohamed 2015, arXiv 1505.05770).
"""

from functools import partial

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ConditionalAffineAutoregressive, ConditionalHouseholder, ConditionalPlanar
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.nn import ConditionalAutoRegressiveNN, DenseNN
from torch import nn


def _check_sizes(latent_dim, context_dim, steps):
    for name, value, least in (("latent_dim", latent_dim, 2), ("context_dim", context_dim, 1), ("steps", steps, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _hidden(hidden, latent_dim):
    """Hidden widths of a step's network: ``hidden`` or Pyro's default [10 * D]."""
    return [10 * latent_dim] if hidden is None else [int(h) for h in hidden]


class FlowGuide(nn.Module):
    """``guide(x)`` samples site ``site`` (default ``"z"``) from the flow ``transforms`` on N(mu(x), sigma(x)).

    ``encoder(x)`` returns ``(loc, log_scale, context)``, each with the batch
    dims of x; ``transforms`` are Pyro transform modules, conditional ones
    (``ConditionalTransformModule``) conditioned on the context and
    unconditional ones (``TransformModule``) used as they are. The context is computed once per datum and broadcast against
    the particle dims of the draw, so the guide runs under pyrovae's outer
    ``pyro.plate("particles", K)`` (draws ``[K, B, D]``).
    """

    def __init__(self, encoder, transforms, site="z"):
        super().__init__()
        if not transforms:
            raise ValueError("a flow guide needs at least one transform")
        self.encoder = encoder
        self.transforms = nn.ModuleList(transforms)
        self.site = site

    def distribution(self, x):
        """q(z | x) for a batch ``x``: a ``TransformedDistribution`` with the batch dims of x and event shape ``[D]``."""
        loc, log_scale, context = self.encoder(x)
        base = dist.Normal(loc, log_scale.exp()).to_event(1)
        return dist.ConditionalTransformedDistribution(base, list(self.transforms)).condition(context)

    def forward(self, x, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.distribution(x))


class _IAFStep(ConditionalAffineAutoregressive):
    """Pyro's conditional IAF step whose inverse loops over its ordering as Python ints.

    Pyro's inverse iterates over the network's ``permutation`` buffer, reading a
    tensor's value at every step; with the ordering fixed here as ints, the
    D-pass inversion (IWAE with ``dreg=True``) records as one graph in pyrovae's
    captured SVI step.
    """

    def __init__(self, latent_dim, context_dim, hidden, order):
        super().__init__(ConditionalAutoRegressiveNN(latent_dim, context_dim, hidden, permutation=torch.tensor(order)),
                         stable=True)
        self.order = list(order)

    def condition(self, context):
        step = super().condition(context)
        step.arn.permutation = self.order
        return step


class IAFGuide(FlowGuide):
    """Inverse autoregressive flow guide (Kingma et al. 2016, arXiv 1606.04934, Algorithm 1).

    Each of the ``steps`` steps is Pyro's ``ConditionalAffineAutoregressive``
    over a ``ConditionalAutoRegressiveNN`` (MADE, Germain et al. 2015, arXiv
    1502.03509) reading (z_{t-1}, h) with ``hidden`` units (default [10 D]), in
    the paper's numerically stable form

        [m_t, s_t] = AR_t(z_{t-1}; h),  sigma_t = sigmoid(s_t + 2),
        z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t,
        log q(z_T | x) = log N(z_0; mu, sigma) - sum_t sum_i log sigma_{t,i},

    the +2 (Pyro's ``sigmoid_bias``) starting sigma near 1 as the paper advises. The
    variable ordering is reversed between steps (natural order, reversed,
    natural, ...), so that over two steps each coordinate depends on all others. A draw and its log-density take one pass per step; scoring
    a value the guide did not draw inverts each step by D sequential passes.
    """

    def __init__(self, encoder, latent_dim, context_dim, steps=2, hidden=None, site="z"):
        _check_sizes(latent_dim, context_dim, steps)
        order = list(range(latent_dim))
        transforms = [_IAFStep(latent_dim, context_dim, _hidden(hidden, latent_dim), order if t % 2 == 0 else order[::-1])
                      for t in range(steps)]
        super().__init__(encoder, transforms, site)


class HouseholderGuide(FlowGuide):
    """Householder flow guide (Tomczak & Welling 2016, arXiv 1611.09630).

    z_T = H_T ... H_1 z_0 with reflections H_t = I - 2 v_t v_t^T / ||v_t||^2, so
    q(z_T | x) = N(U mu, U diag(sigma^2) U^T) with U orthogonal: a full-covariance
    Gaussian, log |det| = 0. The ``steps`` vectors v_t are read from h by one
    network (Pyro's ``ConditionalHouseholder`` over a ``DenseNN`` with ``hidden``
    units, default [10 D]) rather than the paper's chain v_t = NN(v_{t-1}); the
    family of distributions is the same. Its inverse is exact (each H_t is its
    own inverse), so every estimator works, DReG included.
    """

    def __init__(self, encoder, latent_dim, context_dim, steps=2, hidden=None, site="z"):
        _check_sizes(latent_dim, context_dim, steps)
        net = DenseNN(context_dim, _hidden(hidden, latent_dim), param_dims=[latent_dim] * steps)
        super().__init__(encoder, [ConditionalHouseholder(latent_dim, net, count_transforms=steps)], site)


class _ForwardOnlyPlanar(ConditionedPlanar):
    """Pyro's conditioned planar step, with an error that says why it cannot score a value it did not produce."""

    def _inverse(self, y):
        raise NotImplementedError(
            "a planar flow (Rezende & Mohamed 2015) has no closed-form inverse, so PlanarGuide scores only the "
            "draws it made in the same run (ELBO, IWAE without DReG, log_likelihood, active units), not a value "
            "replayed into it (IWAE with dreg=True, ELBO surgery); use IAFGuide or HouseholderGuide for those")


class _Planar(ConditionalPlanar):
    def condition(self, context):
        return _ForwardOnlyPlanar(partial(self._params, context))


class PlanarGuide(FlowGuide):
    """Planar flow guide (Rezende & Mohamed 2015, arXiv 1505.05770, section 4.1).

    z_t = z_{t-1} + u^_t tanh(w_t^T z_{t-1} + b_t), log |det| = log |1 + u^_t^T psi_t(z_{t-1})|,
    with (b_t, u_t, w_t) read from h by a ``DenseNN`` per step (``hidden`` units,
    default [10 D]) and u^_t Pyro's reparameterization making the step
    invertible (w^T u^ >= -1, the paper's appendix A.1). No closed-form inverse:
    the guide scores its own draws only (see the module doc).
    """

    def __init__(self, encoder, latent_dim, context_dim, steps=2, hidden=None, site="z"):
        _check_sizes(latent_dim, context_dim, steps)
        transforms = [_Planar(DenseNN(context_dim, _hidden(hidden, latent_dim), param_dims=[1, latent_dim, latent_dim]))
                      for _ in range(steps)]
        super().__init__(encoder, transforms, site)


FLOWS = {"iaf": IAFGuide, "householder": HouseholderGuide, "planar": PlanarGuide}
