"""The importance-weighted objective (IWAE) and its doubly reparameterized gradient (DReG).

IWAE (Burda, Grosse & Salakhutdinov 2015, arXiv 1509.00519, eq. 8) trains on
the K-sample bound

    L_K(x) = E_{z_1..z_K ~ q(z|x)} [ log (1/K) sum_k w_k ],   w_k = p(x, z_k) / q(z_k | x),

with L_1 = ELBO <= L_K <= L_{K+1} <= log p(x). With reparameterized draws
z_k = z(eps_k, phi) its gradient is (eq. 14)

    grad L_K = E [ sum_k w~_k grad log w_k ],   w~_k = w_k / sum_j w_j.

For the guide's parameters phi this estimator's signal-to-noise ratio decays
as K grows (Rainforth et al. 2018). DReG (Tucker, Lawson, Gu & Maddison 2018,
"Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives",
arXiv 1810.04152, eq. 5 and section 3) removes the score-function term
d/dphi log q(z; phi) at fixed z, whose expectation is zero, by applying the
reparameterization trick to it a second time:

    grad_phi L_K = E [ sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi) ],

i.e. only the path derivative through z_k, weighted by the *squared*
normalized weights. The model's parameters theta keep the IWAE gradient
E[sum_k w~_k grad_theta log p(x, z_k)].
"""

import dataclasses
import math

import pyro
import torch

from pyrovae.infer.importance import datapoint_log_prob, log_weights
from pyrovae.infer.elbo import Objective
from pyrovae.infer.trace import DATA_PLATE, PARTICLE_PLATE, PairError, latent_sites, max_plate_nesting, run_program

__all__ = ["IWAE"]


class IWAE(Objective):
    """The K-sample importance-weighted bound (Burda et al. 2015), optionally with DReG gradients.

    ``loss(model, guide, x)`` returns ``(-mean_i L_K(x_i), stats)`` where L_K
    is one reparameterized draw of the bound for each datapoint, computed with
    the K particles vectorized in an outer ``pyro.plate``. ``stats["elbo"]`` is
    the mean K-sample bound (for K=1 the Monte Carlo ELBO of the same draw) and
    ``stats["ess"]`` the mean effective sample size (sum w)^2 / sum w^2.

    ``dreg=True`` uses the doubly reparameterized gradient for the guide
    (Tucker et al. 2018); the loss value and the model's gradients are the same
    as with ``dreg=False`` on the same draws. It works for any guide: the guide
    is re-run twice with its draws replayed -- once on the draws themselves and
    once on detached copies -- and the difference of the two log q's keeps the
    path derivative and cancels the score term d/dphi log q(z; phi); a gradient
    hook on the replayed draws multiplies the path derivative by w~_k.
    """

    def __init__(self, num_particles=5, dreg=False):
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        super().__init__()
        self.num_particles = num_particles
        self.dreg = bool(dreg)
        self._nesting = None

    def _particle_dim(self, model, guide, x):
        if self._nesting is None:
            self._nesting = max_plate_nesting(model, guide, x)
        return -self._nesting - 1

    def loss(self, model, guide, x):
        k = self.num_particles
        particle_dim = self._particle_dim(model, guide, x)
        if self.dreg:
            log_w, surrogate = self._dreg_log_weights(model, guide, x, particle_dim)
        else:
            log_w = log_weights(model, guide, x, k, particle_dim)
            surrogate = None
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        if surrogate is not None:
            # value: the bound; gradient: the DReG surrogate.
            bound = bound.detach() + (surrogate - surrogate.detach())
        log_w = log_w.detach()
        ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
        return -bound.mean(), {"elbo": bound.detach().mean(), "ess": ess.mean()}

    def _dreg_log_weights(self, model, guide, x, particle_dim):
        """log w ``[K, B]`` (values) and the per-datapoint DReG surrogate ``[B]`` (gradients)."""
        k, batch = self.num_particles, x.shape[0]
        with pyro.plate(PARTICLE_PLATE, k, dim=particle_dim):
            guide_sites = latent_sites(run_program(guide, x))
            weights = {}
            replayed, detached = {}, {}
            for name, site in guide_sites.items():
                if not getattr(site.fn, "has_rsample", False):
                    raise PairError(f"guide site {name!r} is not reparameterizable ({type(site.fn).__name__}); "
                                    "IWAE with dreg=True needs reparameterized draws")
                value = site.value.view_as(site.value)
                if value.requires_grad:
                    value.register_hook(_scale_by_weights(weights, site, particle_dim, k, batch))
                replayed[name] = dataclasses.replace(site, value=value)
                detached[name] = dataclasses.replace(site, value=site.value.detach())
            model_sites = run_program(model, x, replay=replayed)
            q_path = run_program(guide, x, replay=replayed)
            q_score = run_program(guide, x, replay=detached)
        shape = (k, batch)

        def total(sites):
            out = sum((datapoint_log_prob(s, particle_dim) for s in sites.values()), torch.zeros(()))
            return out.expand(shape)

        log_p = total(model_sites)
        score = total(q_score)
        # value log q(z|x); phi-gradient: the path derivative only (score terms cancel).
        log_q = total(q_path) - score + score.detach()
        log_w = log_p - log_q
        w_tilde = torch.softmax(log_w.detach(), 0)
        weights["w"] = w_tilde
        return log_w, (w_tilde * log_w).sum(0)


def _scale_by_weights(weights, site, particle_dim, k, batch):
    """A gradient hook multiplying d/dz_k by w~_k (set in ``weights['w']`` before backward)."""
    n_batch = site.value.dim() - len(site.fn.event_shape)
    data_dim = site.plate_dim(DATA_PLATE)
    if data_dim is None or n_batch + particle_dim < 0:
        raise PairError(f"guide site {site.name!r} must be inside pyro.plate({DATA_PLATE!r}) and carry the "
                        f"particle dim; its value has shape {list(site.value.shape)}")
    view = [1] * site.value.dim()
    view[n_batch + particle_dim] = k
    view[n_batch + data_dim] = batch

    def hook(grad):
        return grad * weights["w"].reshape(view).to(grad.dtype)

    return hook
