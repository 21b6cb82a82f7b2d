"""Per-datapoint estimates of log p(x) for any (model, guide) pair.

Importance sampling (Burda, Grosse & Salakhutdinov 2015, "Importance Weighted
Autoencoders", arXiv 1509.00519, eq. 8 and section 5): with z_1..z_K drawn from
the guide q(z|x),

    log p^(x) = log (1/K) sum_k w_k,    w_k = p(x, z_k) / q(z_k|x).

For every K this is the K-sample importance-weighted bound L_K(x) <= log p(x)
in expectation (Burda et al., Theorem 1: L_1 = ELBO <= L_K <= L_{K+1}), and it
converges to log p(x) as K grows; the paper's test protocol uses K = 5000.
Enumerated latents are summed inside each particle and non-reparameterized
ones are plain draws (:mod:`pyrovae.infer.importance`).

The *naive* Monte Carlo estimator draws z_k from the prior p(z) instead, so that
w_k = p(x | z_k): log p^(x) = log (1/K) sum_k p(x | z_k). It needs no guide but
its variance is far larger whenever the posterior is narrow relative to the
prior.

K particles are vectorized in an outer ``pyro.plate("particles", k)`` left of
the pair's own plates, ``chunk_size`` at a time. Without a ``chunk_size`` the
chunk is chosen from ``memory_mb``: one small chunk is run under a tensor
memory meter (:class:`pyrovae.util.LiveTensorBytes`) and the chunk is the
number of particles whose tensors fit the budget.

**Standard errors.** With w̄ = (1/K) sum_k w_k and the relative variance
v = Var_k(w) / w̄^2 of the weights of one datapoint, the delta method gives
Var[log w̄] ~= v / K; ``std_error`` is sqrt(v / K) from the same K weights
(sample variance, K-1 denominator). It holds when the weights have finite
variance, which nothing guarantees. **Pareto k-hat** (Vehtari et al. 2024,
"Pareto smoothed importance sampling", arXiv 1507.02646) checks it: a
generalized Pareto distribution is fitted to the largest weights of each
datapoint (``arviz.psislw``); k-hat < 0.5 means finite variance and a
trustworthy error bar, 0.5 < k-hat < 0.7 a usable estimate with a slow
central limit, k-hat > 0.7 an estimate (and error bar) not to be trusted.

**Sharding.** The data are estimated in batches of ``batch_size``, each with
its own seed (:func:`pyrovae.infer.distributed.unit_seed`); in a process group
the batches are divided among the ranks, every datum is estimated whole on one
rank, and the per-datum results are gathered in the data's order, so N ranks
take about 1/N of the time and give the single-process numbers.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from pyrovae.data.splits import as_split
from pyrovae.infer import distributed
from pyrovae.infer.importance import log_weights, per_datum
from pyrovae.infer.trace import (
    PARTICLE_PLATE,
    PairError,
    data_dim,
    datum_scale,
    evaluation_mode,
    forked_rng,
    is_latent,
    is_observed,
    max_plate_nesting,
    trace_pair,
    trace_program,
)
from pyrovae.util import chunk_sizes, peak_tensor_bytes, positive_int, seeded

__all__ = ["KHAT_THRESHOLD", "LogLikelihood", "iwae_bound", "log_likelihood", "naive_log_likelihood",
           "pareto_khat"]

KHAT_THRESHOLD = 0.7


def pareto_khat(log_w):
    """Pareto k-hat of every datapoint's importance weights ``[K, B]`` -> ``[B]`` (arviz.psislw).

    The fit uses the M = min(K / 5, 3 sqrt(K)) largest weights. Where they are
    tied (a discrete latent with few states, or weights that are exact because
    the guide is the posterior) a tail has no shape: k-hat is NaN there.
    """
    import arviz as az

    k = log_w.shape[0]
    tail = int(min(0.2 * k, 3 * math.sqrt(k))) + 1
    top = torch.topk(log_w.detach().double(), tail, dim=0).values
    tied = (top.max(0).values - top.min(0).values) <= 1e-9 * top.abs().max(0).values.clamp(min=1.0)
    distinct = torch.tensor([torch.unique(top[:, i]).numel() >= tail for i in range(top.shape[1])])
    lw = log_w.detach().double().cpu().numpy().T
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        _, khat = az.psislw(lw)
    khat = torch.as_tensor(np.asarray(khat, dtype=np.float64))
    return torch.where(tied | ~distinct, torch.tensor(float("nan"), dtype=torch.float64), khat)


@dataclass
class LogLikelihood:
    """Per-datapoint log p(x) estimates (nats), their Monte Carlo standard errors and diagnostics.

    ``log_px[i]``: the estimate for datapoint i; ``std_error[i]``: its
    delta-method Monte Carlo standard error; ``ess[i]``: the effective sample
    size (sum w)^2 / sum w^2 of its importance weights; ``khat[i]``: the Pareto
    k-hat of its weights; ``num_samples``: K.
    """

    log_px: torch.Tensor
    std_error: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
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

    @property
    def khat_above(self):
        """The fraction of datapoints whose k-hat exceeds 0.7 (their error bars are not to be trusted);
        datapoints without a k-hat (NaN: tied weights) count as below."""
        return float((self.khat > KHAT_THRESHOLD).double().mean())

    def to_dict(self):
        return {"nll": self.nll, "nll_std_error": self.nll_std_error,
                "nll_data_std_error": self.nll_data_std_error, "num_samples": self.num_samples,
                "num_datapoints": int(self.log_px.numel()), "mean_ess": float(self.ess.mean()),
                "khat_max": _nan_to_none(self.khat.nan_to_num(-math.inf).max()),
                "khat_mean": _nan_to_none(self.khat.nanmean()),
                "khat_above_0.7": self.khat_above}


def _nan_to_none(t):
    value = float(t)
    return value if math.isfinite(value) else None


def _summary(log_w, k):
    """LogLikelihood parts of one batch from its log weights ``[K, B]`` (float64)."""
    log_w = log_w.double()
    s1, s2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
    log_px = s1 - math.log(k)
    if k > 1:
        ratio = torch.exp(s2 - 2 * s1 + math.log(k))  # mean(w^2) / mean(w)^2 = K sum(w^2) / sum(w)^2
        se = torch.sqrt((ratio - 1).clamp(min=0) * k / (k - 1) / k)
    else:
        se = torch.full_like(log_px, float("nan"))
    return log_px, se, torch.exp(2 * s1 - s2), pareto_khat(log_w) if k >= 5 else torch.full_like(log_px, float("nan"))


def _estimate(weights_fn, nesting_fn, data, num_samples, chunk_size, batch_size, device, seed, memory_mb, progress,
              obs, desc):
    positive_int("num_samples", num_samples)
    positive_int("batch_size", batch_size)
    if chunk_size is not None:
        positive_int("chunk_size", chunk_size)
    split = as_split(data, obs).fixed(0 if seed is None else seed)
    world = distributed.current()
    batches = split.batch_indices(batch_size)
    mine = world.units(len(batches))
    parts = {}
    bar = tqdm(total=sum(len(batches[b]) for b in mine) * num_samples, desc=desc, unit="draw", unit_scale=True,
               disable=not (progress and world.is_main), dynamic_ncols=True)
    with seeded(seed, device), torch.no_grad(), poutine.block():
        first = split.materialize(batches[0]).to(device or "cpu")  # the same layout and chunk on every rank
        nesting = nesting_fn(first)
        if chunk_size is None:
            chunk_size = _chunk_from_budget(lambda k: weights_fn(first, k, nesting), len(first), num_samples,
                                            memory_mb)
        for b in mine:
            batch = split.materialize(batches[b]).to(device or "cpu")
            chunks = []
            with seeded(distributed.unit_seed(seed, b), device):
                for k in chunk_sizes(num_samples, chunk_size):
                    chunks.append(weights_fn(batch, k, nesting).double().cpu())
                    bar.update(k * len(batch))
            parts[b] = _summary(torch.cat(chunks), num_samples)
    bar.close()
    log_px, se, ess, khat = (torch.cat(t) for t in zip(*world.gather_in_order(parts)))
    return LogLikelihood(log_px, se, ess, khat, num_samples)


def _chunk_from_budget(run, batch, num_samples, memory_mb, probe=8):
    """The particles per chunk whose tensors fit ``memory_mb`` for a batch, measured on a probe chunk."""
    if memory_mb is None or memory_mb <= 0:
        raise ValueError(f"memory_mb must be a positive number of megabytes, got {memory_mb!r}")
    probe = min(probe, num_samples)
    with forked_rng():
        peak, _ = peak_tensor_bytes(lambda: run(probe))
    per_particle = max(peak / probe, 1.0)
    return int(max(1, min(num_samples, memory_mb * 2**20 // per_particle)))


def log_likelihood(model, guide, data, num_samples=5000, chunk_size=None, batch_size=100, device=None, seed=None,
                   memory_mb=512, progress=False, obs="x"):
    """Importance-sampled log p(x) per datapoint, with the guide as proposal (Burda et al. 2015, eq. 8).

    log p^(x) = logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K,  z_k ~ q(z | x).

    ``data``: any data :func:`~pyrovae.data.splits.as_split` takes (fields
    besides ``obs`` reach the pair as keyword arguments; dynamic binarization is
    drawn once, from ``seed`` or 0). ``num_samples`` is K (5000 in the IWAE
    protocol); ``chunk_size`` particles run at once, or as many as fit
    ``memory_mb`` megabytes of tensors (default 512); ``batch_size`` datapoints
    per run. ``seed`` makes the draws reproducible without touching the global
    random state; ``progress`` shows a bar with the draws done and an ETA. The
    pair runs in eval mode. Returns a :class:`LogLikelihood`; ``.nll`` is the
    table number, ``.khat`` says whether its error bar can be trusted.
    """
    def weights(batch, k, nesting):
        pt = trace_pair(model, guide, batch.x, num_particles=k, nesting=nesting, **batch.kwargs)
        return log_weights(pt, len(batch))

    with evaluation_mode(model, guide):
        return _estimate(weights, lambda b: max_plate_nesting(model, guide, b.x, **b.kwargs), data, num_samples,
                         chunk_size, batch_size, device, seed, memory_mb, progress, obs, "log p(x)")


def naive_log_likelihood(model, data, num_samples=5000, chunk_size=None, batch_size=100, device=None, seed=None,
                         memory_mb=512, progress=False, obs="x"):
    """Naive Monte Carlo log p(x) per datapoint: log (1/K) sum_k p(x | z_k), z_k ~ p(z).

    The model is run alone on the observed data under the particle plate, so
    its latent sites draw from the prior and its observed sites score x. Same
    arguments and result as :func:`log_likelihood`. Unbiased for p(x) but with
    high variance when the posterior is much narrower than the prior; use it as
    a check of :func:`log_likelihood` on small latent spaces.
    """
    def weights(batch, k, nesting):
        with pyro.plate(PARTICLE_PLATE, k, dim=-nesting - 1):
            tr = trace_program(model, batch.x, **batch.kwargs)
        tr.compute_log_prob()
        observed = [s for s in tr.nodes.values() if is_observed(s)]
        if not observed:
            raise PairError("the model has no observed site: it must score the data, e.g. "
                            "pyro.sample('x', likelihood, obs=x)")
        view = _ParticleView(nesting)
        for s in tr.nodes.values():
            if is_latent(s):
                data_dim(s)  # a PairError for a latent outside the data plate
        total = sum(per_datum(s["log_prob"], s, view) / datum_scale(s) for s in observed)
        return total.expand(k, len(batch))

    return _estimate(weights, lambda b: max_plate_nesting(model, None, b.x, **b.kwargs), data, num_samples,
                     chunk_size, batch_size, device, seed, memory_mb, progress, obs, "naive log p(x)")


class _ParticleView:
    """The plate layout :func:`~pyrovae.infer.importance.per_datum` needs, for a model run alone."""

    def __init__(self, nesting):
        self.nesting, self.particle_dim = nesting, -nesting - 1


def iwae_bound(model, guide, x, k, chunk_size=None, **kwargs):
    """The K-sample importance-weighted bound per datapoint (Burda et al. 2015, eq. 8), one draw.

    L_k(x) = logsumexp_{i=1..k} [log p(x, z_i) - log q(z_i | x)] - log k,  z_i ~ q(z | x);
    E[L_1] is the ELBO and E[L_k] increases with k towards log p(x).
    Returns a tensor ``[B]`` (no gradient). ``chunk_size`` bounds the particles
    run at once; ``kwargs`` reach the pair.
    """
    positive_int("k", k)
    chunk_size = k if chunk_size is None else positive_int("chunk_size", chunk_size)
    with torch.no_grad(), poutine.block():
        nesting = max_plate_nesting(model, guide, x, **kwargs)
        chunks = [log_weights(trace_pair(model, guide, x, num_particles=c, nesting=nesting, **kwargs), x.shape[0])
                  for c in chunk_sizes(k, chunk_size)]
        bound = torch.logsumexp(torch.cat(chunks).double(), 0) - math.log(k)
        return bound.to(x.dtype if x.is_floating_point() else torch.get_default_dtype())
