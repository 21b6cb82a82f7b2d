"""The importance-weighted objective (IWAE), its doubly reparameterized gradient (DReG) and its score-function form.

IWAE (Burda, Grosse & Salakhutdinov 2015, arXiv 1509.00519, eq. 8) trains on
the K-sample bound, per datapoint,

    L_K(x) = E_{z_1..z_K ~ q(z|x)} [ log (1/K) sum_k w_k ],   w_k = p(x, z_k) / q(z_k | x),

with L_1 = ELBO <= L_K <= L_{K+1} <= log p(x). With reparameterized draws its
gradient is (eq. 14) E[sum_k w~_k grad log w_k], w~_k = w_k / sum_j w_j.

**DReG** (Tucker, Lawson, Gu & Maddison 2018, arXiv 1810.04152, eq. 5): for the
guide's parameters phi the term d/dphi log q(z; phi) at fixed z has expectation
zero; applying the reparameterization trick to it a second time gives

    grad_phi L_K = E [ sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi) ],

while the model's parameters keep E[sum_k w~_k grad_theta log p(x, z_k)].

**Score-function form** for non-reparameterized latents (a Bernoulli or
Categorical guide site): with f = L_K(z_1..z_K), grad E[f] = E[grad f +
sum_k f_k grad log q(z_k | x)] where the learning signal f_k is f minus the
leave-one-out baseline of VIMCO (Mnih & Rezende 2016, "Variational inference
for Monte Carlo objectives", arXiv 1602.06725, eq. 10): the bound with log w_k
replaced by the mean of the other K-1 log weights. The baseline does not
depend on z_k, so the estimator stays unbiased; with K = 1 the signal is f
itself (REINFORCE). Pyro's ``RenyiELBO`` has no score-function term at
alpha = 0, so there the test of unbiasedness is against the exact gradient.

**Enumerated** latents are summed out inside each particle
(:mod:`pyrovae.infer.importance`): w_k = sum_y p(x, y, z_k^y) / q(z_k^y | x, y).
q(y | x) cancels from that weight, so the objective gives no gradient to it.
"""

import math

import pyro
import torch
from pyro import poutine

from pyrovae.infer.elbo import Objective
from pyrovae.infer.importance import log_weights, per_datum
from pyrovae.infer.trace import (
    DATA_PLATE,
    PARTICLE_PLATE,
    PairError,
    data_dim,
    frame,
    is_enumerated,
    is_latent,
    is_observed,
    is_reparameterized,
    trace_pair,
)

__all__ = ["IWAE", "batch_size_of", "vimco_signal"]


def batch_size_of(pt):
    """The number of data in the batch: the size of the ``"data"`` plate at the observed sites."""
    for site in pt.observed.values():
        f = frame(site, DATA_PLATE)
        if f is not None:
            return f.size
    raise PairError(f"no observed site is inside pyro.plate({DATA_PLATE!r}, ...)")


def vimco_signal(log_w):
    """The VIMCO learning signal f - f^{-k} of every particle, ``[K, B]`` (no gradient).

    f = log mean_j w_j; f^{-k} replaces log w_k by the mean of the other K - 1
    log weights (Mnih & Rezende 2016, eq. 10). With K = 1 the signal is f.
    """
    log_w = log_w.detach()
    k = log_w.shape[0]
    bound = torch.logsumexp(log_w, 0) - math.log(k)
    if k == 1:
        return bound.expand_as(log_w)
    others_mean = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)
    diag = torch.eye(k, dtype=torch.bool, device=log_w.device).unsqueeze(-1)
    replaced = torch.where(diag, others_mean.unsqueeze(0), log_w.unsqueeze(0))  # [k (replaced), j, B]
    leave_one_out = torch.logsumexp(replaced, 1) - math.log(k)
    return bound - leave_one_out


class IWAE(Objective):
    """The K-sample importance-weighted bound (Burda et al. 2015), optionally with DReG gradients.

    ``loss(model, guide, *args, **kwargs)`` returns ``(-mean_i L_K(x_i), stats)``
    with the K particles vectorized in an outer ``pyro.plate``.
    ``stats["elbo"]`` is the mean K-sample bound (for K=1 the Monte Carlo ELBO
    of the same draw) and ``stats["ess"]`` the mean effective sample size
    (sum w)^2 / sum w^2. Non-reparameterized guide sites get the score-function
    form with VIMCO's baseline; enumerated sites are summed inside each
    particle (see the module doc).

    ``dreg=True`` uses the doubly reparameterized gradient for the guide
    (Tucker et al. 2018); the loss value and the model's gradients are those of
    ``dreg=False`` on the same draws. The guide is re-run twice with its draws
    replayed, once on the draws and once on detached copies, and the difference
    of the two log q's keeps the path derivative and cancels the score term; a
    gradient hook on the replayed draws multiplies the path derivative by w~_k.
    It needs every guide site reparameterized and none enumerated.
    """

    def __init__(self, num_particles=5, dreg=False):
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        super().__init__()
        self.num_particles = num_particles
        self.dreg = bool(dreg)

    def loss(self, model, guide, *args, **kwargs):
        k = self.num_particles
        nesting = self.nesting(model, guide, *args, **kwargs)
        pt = trace_pair(model, guide, *args, num_particles=k, nesting=nesting, **kwargs)
        batch = batch_size_of(pt)
        if self.dreg:
            log_w, surrogate = self._dreg(pt, model, guide, args, kwargs, batch)
        else:
            log_w = log_weights(pt, batch)
            surrogate = None
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        score = self._score_function(pt, batch)
        if score is not None:
            bound = bound + (vimco_signal(log_w) * (score - score.detach())).sum(0)
        if surrogate is not None:
            bound = bound.detach() + (surrogate - surrogate.detach())
        log_w = log_w.detach()
        ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
        return -bound.mean(), {"elbo": bound.detach().mean(), "ess": ess.mean()}

    @staticmethod
    def _score_function(pt, batch):
        """sum over non-reparameterized sampled guide sites of log q(z_k | x_i), ``[K, B]``; None without any."""
        sites = [s for s in pt.latents.values() if not is_reparameterized(s) and not is_enumerated(s)]
        if not sites:
            return None
        total = sum(per_datum(s["score_parts"].score_function, s, pt) for s in sites)
        return total.expand(pt.num_particles, batch)

    def _dreg(self, pt, model, guide, args, kwargs, batch):
        """log w ``[K, B]`` (values) and the per-datapoint DReG surrogate ``[B]`` (gradients)."""
        k = self.num_particles
        for name, site in pt.latents.items():
            if not is_reparameterized(site):
                raise PairError(f"guide site {name!r} is not reparameterized ({type(site['fn']).__name__}"
                                f"{', enumerated' if is_enumerated(site) else ''}); IWAE with dreg=True needs "
                                "reparameterized draws: use dreg=False (score-function form) instead")
        weights = {}
        replayed, detached = pt.guide.copy(), pt.guide.copy()
        for name, site in pt.latents.items():
            value = site["value"].view_as(site["value"])
            if value.requires_grad:
                value.register_hook(_scale_by_weights(weights, site, pt, k, batch))
            replayed.nodes[name] = {**site, "value": value}
            detached.nodes[name] = {**site, "value": site["value"].detach()}
        with pyro.plate(PARTICLE_PLATE, k, dim=pt.particle_dim):
            model_tr = poutine.trace(poutine.replay(model, trace=replayed)).get_trace(*args, **kwargs)
            q_path = poutine.trace(poutine.replay(guide, trace=replayed)).get_trace(*args, **kwargs)
            q_score = poutine.trace(poutine.replay(guide, trace=detached)).get_trace(*args, **kwargs)

        def total(tr):
            tr.compute_log_prob()
            out = sum(per_datum(s["log_prob"], s, pt) for s in tr.nodes.values() if is_observed(s) or is_latent(s))
            return out.expand(k, batch)

        log_p = total(model_tr)
        score = total(q_score)
        # value log q(z|x); phi-gradient: the path derivative only (score terms cancel).
        log_q = total(q_path) - score + score.detach()
        log_w = log_p - log_q
        w_tilde = torch.softmax(log_w.detach(), 0)
        weights["w"] = w_tilde
        return log_w, (w_tilde * log_w).sum(0)


def _scale_by_weights(weights, site, pt, k, batch):
    """A gradient hook multiplying d/dz_k by w~_k (set in ``weights['w']`` before backward)."""
    n_batch = site["value"].dim() - len(site["fn"].event_shape)
    if n_batch + pt.particle_dim < 0:
        raise PairError(f"guide site {site['name']!r} must carry the particle dim; its value has shape "
                        f"{list(site['value'].shape)}")
    view = [1] * site["value"].dim()
    view[n_batch + pt.particle_dim] = k
    view[n_batch + data_dim(site)] = batch

    def hook(grad):
        return grad * weights["w"].reshape(view).to(grad.dtype)

    return hook
