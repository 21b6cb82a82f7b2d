"""Per-datapoint estimates of log p(x) for any (model, guide) pair.

Importance sampling (Burda, Grosse & Salakhutdinov 2015, "Importance Weighted
Autoencoders", arXiv 1509.00519, eq. 8 and section 5): with z_1..z_K drawn from
the guide q(z|x),

    log p^(x) = log (1/K) sum_k w_k,    w_k = p(x, z_k) / q(z_k|x).

For every K this is the K-sample importance-weighted bound L_K(x) <= log p(x)
in expectation (Burda et al., Theorem 1: L_1 = ELBO <= L_K <= L_{K+1}), and it
converges to log p(x) as K grows; the paper's test protocol uses K = 5000.

The *naive* Monte Carlo estimator draws z_k from the prior p(z) instead, so that
w_k = p(x | z_k): log p^(x) = log (1/K) sum_k p(x | z_k). It needs no guide but
its variance is far larger whenever the posterior is narrow relative to the
prior.

The pair is read with :func:`pyrovae.infer.trace.run_pair`: K particles are vectorized
in an outer ``pyro.plate("particles", K)`` left of the pair's own plates, and
each site's log-density is summed over every dim except the particle dim and
the ``"data"`` plate's dim, giving log weights of shape ``[K, B]``. Particles
are processed ``chunk_size`` at a time and combined with a streaming
log-sum-exp, so peak memory grows with ``chunk_size``, not with K.

Standard errors. With w̄ = (1/K) sum_k w_k and the relative variance
v = Var_k(w) / w̄^2 of the weights of one datapoint, the delta method gives
Var[log w̄] ~= v / K. The per-datapoint ``std_error`` is sqrt(v / K), computed
from the same K weights (sample variance, K-1 denominator). It is reliable when
the weights have finite variance (a guide with heavier tails than the
posterior); the estimator's downward bias is ~ v / (2K), much smaller than the
standard error for large K.
"""

import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from pyrovae.data.splits import batches_of, data_tensor
from pyrovae.infer.importance import datapoint_log_prob, log_weights, sum_sites
from pyrovae.infer.trace import DATA_PLATE, PairError, latent_sites, max_plate_nesting, observed_sites, run_program
from pyrovae.util import chunk_sizes, positive_int, seeded

__all__ = ["LogLikelihood", "datapoint_log_prob", "iwae_bound", "log_likelihood", "log_weights",
           "naive_log_likelihood"]


def _prior_log_weights(model, x, num_particles, particle_dim):
    """log w_k = log p(x | z_k), z_k ~ p(z) (the model run alone on the observed data), ``[K, B]``."""
    with pyro.plate("particles", num_particles, dim=particle_dim):
        sites = run_program(model, x)
    obs = observed_sites(sites)
    if not obs:
        raise PairError("the model has no observed site: it must score the data, e.g. "
                        "pyro.sample('x', likelihood, obs=x)")
    for site in latent_sites(sites).values():
        if site.plate_dim(DATA_PLATE) is None:
            raise PairError(f"latent site {site.name!r} is not inside pyro.plate({DATA_PLATE!r}, batch_size)")
    return sum_sites(obs.values(), particle_dim, (num_particles, x.shape[0]))


class _StreamingMoments:
    """log sum_k w_k and log sum_k w_k^2 over chunks of log weights ``[k, B]``, in float64."""

    def __init__(self):
        self.log_s1 = None
        self.log_s2 = None
        self.count = 0

    def add(self, log_w):
        log_w = log_w.detach().double()
        s1 = torch.logsumexp(log_w, 0)
        s2 = torch.logsumexp(2 * log_w, 0)
        if self.log_s1 is None:
            self.log_s1, self.log_s2 = s1, s2
        else:
            self.log_s1 = torch.logaddexp(self.log_s1, s1)
            self.log_s2 = torch.logaddexp(self.log_s2, s2)
        self.count += log_w.shape[0]

    def log_mean(self):
        """log (1/K) sum_k w_k per datapoint."""
        return self.log_s1 - math.log(self.count)

    def std_error(self):
        """Delta-method standard error of log mean(w): sqrt(Var(w) / (K mean(w)^2))."""
        k = self.count
        if k < 2:
            return torch.full_like(self.log_s1, float("nan"))
        # Var(w)/mean(w)^2 with the K-1 denominator, from E[w^2]/E[w]^2 = K s2 / s1^2.
        ratio = torch.exp(self.log_s2 - 2 * self.log_s1 + math.log(k))
        rel_var = (ratio - 1).clamp(min=0) * k / (k - 1)
        return torch.sqrt(rel_var / k)

    def effective_sample_size(self):
        """(sum w)^2 / sum w^2 per datapoint (Kish's effective sample size)."""
        return torch.exp(2 * self.log_s1 - self.log_s2)


@dataclass
class LogLikelihood:
    """Per-datapoint log p(x) estimates (nats) and their Monte Carlo standard errors.

    ``log_px[i]``: the estimate for datapoint i; ``std_error[i]``: its
    delta-method Monte Carlo standard error; ``ess[i]``: the effective sample
    size of its importance weights; ``num_samples``: K.
    """

    log_px: torch.Tensor
    std_error: torch.Tensor
    ess: torch.Tensor
    num_samples: int

    @property
    def nll(self):
        """The mean negative log-likelihood in nats per datapoint (positive)."""
        return float(-self.log_px.mean())

    @property
    def nll_std_error(self):
        """Monte Carlo standard error of :attr:`nll` (independent datapoints: sqrt(sum se_i^2) / N)."""
        return float(self.std_error.pow(2).sum().sqrt() / self.log_px.numel())

    @property
    def nll_data_std_error(self):
        """Standard error of :attr:`nll` as an estimate over the data distribution: std_i(log p^(x_i)) / sqrt(N)."""
        n = self.log_px.numel()
        return float(self.log_px.std() / math.sqrt(n)) if n > 1 else float("nan")

    def to_dict(self):
        return {"nll": self.nll, "nll_std_error": self.nll_std_error,
                "nll_data_std_error": self.nll_data_std_error, "num_samples": self.num_samples,
                "num_datapoints": int(self.log_px.numel()), "mean_ess": float(self.ess.mean())}


def _check_sizes(num_samples, chunk_size, batch_size):
    for name, value in (("num_samples", num_samples), ("chunk_size", chunk_size), ("batch_size", batch_size)):
        positive_int(name, value)


def _estimate(weights_fn, nesting_fn, data, num_samples, chunk_size, batch_size, device, seed):
    _check_sizes(num_samples, chunk_size, batch_size)
    log_px, se, ess = [], [], []
    with seeded(seed, device), torch.no_grad(), poutine.block():
        particle_dim = None
        for x in batches_of(data_tensor(data, seed), batch_size, device):
            if particle_dim is None:
                particle_dim = -nesting_fn(x) - 1
            moments = _StreamingMoments()
            for k in chunk_sizes(num_samples, chunk_size):
                moments.add(weights_fn(x, k, particle_dim))
            log_px.append(moments.log_mean())
            se.append(moments.std_error())
            ess.append(moments.effective_sample_size())
    return LogLikelihood(torch.cat(log_px), torch.cat(se), torch.cat(ess), num_samples)


def log_likelihood(model, guide, data, num_samples=5000, chunk_size=500, batch_size=100, device=None, seed=None):
    """Importance-sampled log p(x) per datapoint, with the guide as proposal (Burda et al. 2015, eq. 8).

    log p^(x) = logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K,  z_k ~ q(z | x).

    ``data``: a tensor ``[N, *event]`` or an :class:`~pyrovae.data.ImageSplit`
    (dynamic binarization is drawn once, from ``seed`` or 0). ``num_samples``
    is K (5000 in the IWAE protocol); ``chunk_size`` particles are run at once
    (memory grows with ``chunk_size * batch_size``); ``batch_size`` datapoints
    per run. ``seed`` makes the draws reproducible without touching the global
    random state. Returns a :class:`LogLikelihood`; ``.nll`` is the table number.
    """
    return _estimate(lambda x, k, pd: log_weights(model, guide, x, k, pd),
                     lambda x: max_plate_nesting(model, guide, x),
                     data, num_samples, chunk_size, batch_size, device, seed)


def naive_log_likelihood(model, data, num_samples=5000, chunk_size=500, batch_size=100, device=None, seed=None):
    """Naive Monte Carlo log p(x) per datapoint: log (1/K) sum_k p(x | z_k), z_k ~ p(z).

    The model is run alone on the observed data under the particle plate, so
    its latent sites draw from the prior and its observed sites score x. Same
    arguments and result as :func:`log_likelihood`. Unbiased for p(x) but with
    high variance when the posterior is much narrower than the prior; use it as
    a check of :func:`log_likelihood` on small latent spaces.
    """
    return _estimate(lambda x, k, pd: _prior_log_weights(model, x, k, pd),
                     lambda x: max_plate_nesting(model, None, x),
                     data, num_samples, chunk_size, batch_size, device, seed)


def iwae_bound(model, guide, x, k, chunk_size=None):
    """The K-sample importance-weighted bound per datapoint (Burda et al. 2015, eq. 8), one draw.

    L_k(x) = logsumexp_{i=1..k} [log p(x, z_i) - log q(z_i | x)] - log k,  z_i ~ q(z | x);
    E[L_1] is the ELBO and E[L_k] increases with k towards log p(x).
    Returns a tensor ``[B]`` (no gradient). ``chunk_size`` bounds the particles run at once.
    """
    positive_int("k", k)
    chunk_size = k if chunk_size is None else chunk_size
    _check_sizes(k, chunk_size, 1)
    with torch.no_grad(), poutine.block():
        particle_dim = -max_plate_nesting(model, guide, x) - 1
        moments = _StreamingMoments()
        for c in chunk_sizes(k, chunk_size):
            moments.add(log_weights(model, guide, x, c, particle_dim))
        return moments.log_mean().to(x.dtype if x.is_floating_point() else torch.get_default_dtype())
