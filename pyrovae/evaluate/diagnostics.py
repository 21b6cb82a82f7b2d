"""What a trained pair's latent code carries: active units, KL per dimension, ELBO surgery.

All three read any (model, guide) pair through Pyro's traces
(:func:`pyrovae.infer.trace.trace_pair`), with S guide draws per datapoint
vectorized under an outer ``pyro.plate("particles", S)``, so hierarchical
guides (a site whose distribution depends on another latent) are handled like
one-layer ones. Sites marked for enumeration are drawn here like any other;
the pair runs in eval mode.

**Discrete sites** (a Categorical) have no "active units": for them
:func:`active_units` reports how the posterior uses the classes instead --
the entropy of the aggregate posterior (1/N) sum_n q(y | x_n) and its
effective number of classes exp(H), beside the mean entropy of q(y | x_n)
(low: confident assignments).

**Active units** (Burda, Grosse & Salakhutdinov 2015, "Importance Weighted
Autoencoders", arXiv 1509.00519, section 5.2): latent dimension u is active when

    A_u = Cov_x( E_{q(u|x)}[u] ) > 0.01,

the variance over the data of the code's posterior mean. For a site whose
distribution depends on x only, E_q[u|x] is the mean of that distribution; for
a site q(z2 | z1) below another latent it is E_{z1 ~ q(z1|x)}[ mean q(z2 | z1) ],
averaged over S draws of its parents. The IWAE table reports a 2-layer model as
"16+5": active units of the first and the second stochastic layer.

**KL per dimension**: (1/N) sum_n KL(q(z_d | x_n) || p(z_d)) for every dim d of
every latent site, on the sites' base (one-dimensional) distributions,
averaged over S draws: in closed form where torch knows it and the guide
draws everything the site's prior depends on before the site, else
log q(z_d | ...) - log p(z_d | ...) at the draw (unbiased for the site's term of
the ELBO in either case; a closed form given a parent drawn *after* the site,
as p(z1 | z2) under the guide q(z1|x) q(z2|z1), would not be).

**ELBO surgery** (Hoffman & Johnson 2016, "ELBO surgery: yet another way to
carve up the variational evidence lower bound", NIPS workshop on approximate
Bayesian inference): with the index n of a datapoint uniform on 1..N and the
aggregate posterior q(z) = (1/N) sum_n q(z | x_n),

    (1/N) sum_n KL(q(z|x_n) || p(z)) = I_q[n; z] + KL(q(z) || p(z)),
    I_q[n; z] = E_{q(n, z)}[ log q(z | x_n) - log q(z) ]  <=  log N.

The index-code mutual information and the marginal KL are estimated from M
points z_m ~ q(z | x_{n_m}), n_m uniform, with log q(z_m) computed exactly over
all N datapoints in blocks: the guide is run on a block of x_n with its latent
sites conditioned on the z_m placed along the particle dim, which gives the
joint log-densities log q(z_m | x_n) of all pairs as an ``[M, N_block]`` tensor.
Because log q(z_m | x_{n_m}) is one of the N terms of the sum,
each summand of the MI estimate is at most log N, so the estimate is too.

**Sharding.** Every estimator works in units whose boundaries do not depend on
the number of processes -- batches of ``batch_size`` data, and blocks of
``point_block`` surgery points -- each drawing from its own seed
(:func:`pyrovae.infer.distributed.unit_seed`). In a process group the ranks
divide the batches (each datum whole on one rank) and the points of each block
(every rank draws the block, each evaluates log q(z_m) for its share of the
points over all N data), and the results are gathered in order: the numbers
are the single-process ones, up to the order of floating-point sums.
"""

import dataclasses
import math
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine

from pyrovae.data.splits import as_split
from pyrovae.infer import distributed
from pyrovae.infer.distributions import base_distribution, distribution_mean, kl_or_log_ratio
from pyrovae.infer.elbo import closed_form_kl_sites
from pyrovae.infer.trace import (
    PARTICLE_PLATE,
    PairError,
    data_dim,
    evaluation_mode,
    is_sample,
    latent_sites,
    max_plate_nesting,
    trace_pair,
    trace_program,
)
from pyrovae.util import positive_int, seeded

__all__ = ["ActiveUnits", "ELBOSurgery", "active_units", "elbo_surgery", "format_active_units",
           "kl_per_dimension"]


def _batch_dims(site, particle_dim):
    """Indices of the particle and data dims in the site's value (batch shape left-padded to the particle dim)."""
    d = data_dim(site)
    n_batch = max(site["value"].dim() - len(site["fn"].event_shape), -particle_dim)
    return n_batch, n_batch + particle_dim, n_batch + d


def _per_datum(t, site, particle_dim, per_draw=False):
    """Lay ``t``, a quantity of ``site`` shaped like its value, out as ``[S, B, D]``.

    D is the product of the site's event dims and any plates other than the
    particle and data plates. ``per_draw=True``: ``t`` has the site's batch
    shape (one number per draw, like a log-density), giving ``[S, B, 1]``.
    """
    n_batch, p, d = _batch_dims(site, particle_dim)
    n_event = len(site["fn"].event_shape)
    shape = (1,) * (n_batch + n_event - site["value"].dim()) + tuple(site["value"].shape)
    if per_draw:
        shape = shape[:n_batch]
    t = t.expand(shape)
    return t.movedim((p, d), (0, 1)).reshape(shape[p], shape[d], -1)


def _batches(data, batch_size, device, seed):
    split = as_split(data).fixed(0 if seed is None else seed)
    return split, list(split.batches(batch_size, device=device or "cpu"))


def _sampled_pair(model, guide, batch, num_samples, nesting):
    """The pair on a batch with S draws per datum, every site drawn (none enumerated)."""
    return trace_pair(model, guide, batch.x, num_particles=num_samples, nesting=nesting, enumerate=False,
                      **batch.kwargs)


def _is_categorical(site):
    return type(base_distribution(site["fn"])).__name__ == "Categorical"


def _class_probs(site, particle_dim):
    """q(y = c | x) of a Categorical site as ``[S, B, C]`` (extra plates averaged), float64."""
    probs = base_distribution(site["fn"]).probs
    n_batch, p, d = _batch_dims(site, particle_dim)
    value = site["value"]
    shape = (1,) * (n_batch - value.dim()) + tuple(value.shape) + probs.shape[-1:]
    probs = probs.expand(shape).movedim((p, d), (0, 1))
    return probs.reshape(shape[p], shape[d], -1, probs.shape[-1]).double().mean(2)


# -- active units ------------------------------------------------------------

def format_active_units(counts):
    """Active-unit counts per site in the IWAE table's notation: ``{"z1": 16, "z2": 5}`` -> ``"16+5"``."""
    return "+".join(str(int(c)) for c in counts.values())


@dataclass
class ActiveUnits:
    """Active units per latent site (Burda et al. 2015, section 5.2), and class usage of discrete sites.

    ``counts[site]``: the number of dims with A_u > ``threshold``;
    ``variance[site]``: A_u = Cov_x(E_q[u|x]) per dim, a tensor ``[D]``;
    ``dims[site]``: the site's number of dims. Sites are in the guide's order.
    ``discrete[site]``: for a Categorical site, ``{"classes", "entropy",
    "effective_classes", "mean_entropy"}`` (module doc). ``str()`` gives the
    table's "16+5" form.
    """

    counts: dict
    variance: dict
    dims: dict
    threshold: float
    discrete: dict = field(default_factory=dict)

    def __str__(self):
        return format_active_units(self.counts)

    def describe(self):
        """``"16+5 (z1: 16/100, z2: 5/50)"``, then the class usage of discrete sites."""
        sites = ", ".join(f"{name}: {c}/{self.dims[name]}" for name, c in self.counts.items())
        out = f"{self} ({sites})" if self.counts else "no continuous latent"
        for name, u in self.discrete.items():
            out += (f"; {name}: {u['effective_classes']:.2f} of {u['classes']} classes in use (aggregate entropy "
                    f"{u['entropy']:.3f} nats, mean entropy of q {u['mean_entropy']:.3f})")
        return out

    def to_dict(self):
        return {"counts": dict(self.counts), "dims": dict(self.dims), "threshold": self.threshold,
                "variance": {name: v.tolist() for name, v in self.variance.items()},
                "discrete": dict(self.discrete)}


def _class_usage(probs):
    """Usage of a discrete site from its posterior probabilities ``[N, C]``."""
    mean = probs.mean(0)
    entropy = float(-(mean * mean.clamp(min=1e-30).log()).sum())
    mean_entropy = float(-(probs * probs.clamp(min=1e-30).log()).sum(-1).mean())
    return {"classes": int(probs.shape[-1]), "entropy": entropy, "effective_classes": math.exp(entropy),
            "mean_entropy": mean_entropy}


def active_units(model, guide, data, threshold=0.01, num_samples=100, batch_size=100, device=None, seed=0):
    """Active units of every latent site: A_u = Cov_x(E_q[u|x]) > ``threshold`` (Burda et al. 2015, sec. 5.2).

    ``data``: any data :func:`~pyrovae.data.splits.as_split` takes, N >= 2
    (dynamic binarization drawn once from ``seed``). E_q[u|x] is the mean of the
    site's distribution averaged over ``num_samples`` guide draws of its parents
    (exact for a site that depends on x only; the draw itself where the
    distribution has no mean). Cov_x is the sample variance over the N
    datapoints. Categorical sites get their class usage instead (module doc).
    Returns :class:`ActiveUnits`.
    """
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    positive_int("num_samples", num_samples)
    positive_int("batch_size", batch_size)
    split, batches = _batches(data, batch_size, device, seed)
    if len(split) < 2:
        raise ValueError(f"active units need at least 2 datapoints (a variance over x), got {len(split)}")
    world, parts = distributed.current(), {}
    with seeded(seed, device), torch.no_grad(), poutine.block(), evaluation_mode(model, guide):
        nesting = max_plate_nesting(model, guide, batches[0].x, **batches[0].kwargs)
        particle_dim = -nesting - 1
        for b in world.units(len(batches)):
            with seeded(distributed.unit_seed(seed, b), device), pyro.plate(PARTICLE_PLATE, num_samples,
                                                                            dim=particle_dim):
                sites = latent_sites(trace_program(guide, batches[b].x, **batches[b].kwargs))
            part = parts[b] = ({}, {})  # (posterior means, class probabilities) by site
            for name, site in sites.items():
                if _is_categorical(site):
                    part[1][name] = _class_probs(site, particle_dim).mean(0)
                    continue
                mean = distribution_mean(site["fn"])
                mean = site["value"] if mean is None else mean
                part[0][name] = _per_datum(mean, site, particle_dim).double().mean(0)
    means, probs = {}, {}
    for part_means, part_probs in world.gather_in_order(parts):
        for name, m in part_means.items():
            means.setdefault(name, []).append(m)
        for name, p in part_probs.items():
            probs.setdefault(name, []).append(p)
    variance = {name: torch.cat(m).var(0) for name, m in means.items()}
    counts = {name: int((v > threshold).sum()) for name, v in variance.items()}
    return ActiveUnits(counts, {n: v.float().cpu() for n, v in variance.items()},
                       {n: v.numel() for n, v in variance.items()}, float(threshold),
                       {n: _class_usage(torch.cat(p).cpu()) for n, p in probs.items()})


# -- KL per dimension ----------------------------------------------------------

def _pair_runs(model, guide, batches, num_samples, seed, device):
    """Yield ``(b, guide_sites, model_sites, particle_dim)`` for this rank's batches b, S draws per datapoint."""
    nesting = max_plate_nesting(model, guide, batches[0].x, **batches[0].kwargs)
    for b in distributed.current().units(len(batches)):
        with seeded(distributed.unit_seed(seed, b), device):
            pt = _sampled_pair(model, guide, batches[b], num_samples, nesting)
        yield b, pt.latents, latent_sites(pt.model), pt.particle_dim


def _site_kl(q, p, particle_dim, per_dim, closed_form):
    """KL(q || p) of one latent site at the draws: ``[S, B, D]`` per dim, or ``[S, B, 1]`` for the site.

    In closed form where torch knows it and ``closed_form`` (the site's place in
    the guide keeps that unbiased, :func:`pyrovae.infer.elbo.closed_form_kl_sites`);
    otherwise log q(z | ...) - log p(z | ...) at the draw.
    """
    q_fn, p_fn = (base_distribution(q["fn"]), base_distribution(p["fn"])) if per_dim else (q["fn"], p["fn"])
    if per_dim:
        for fn, who in ((q_fn, "guide"), (p_fn, "model")):
            if fn.event_shape:
                raise ValueError(f"latent site {q['name']!r}: the {who}'s {type(fn).__name__} does not factorize "
                                 "over dimensions, so the site has no KL per dimension")
    kl = kl_or_log_ratio(q_fn, p_fn, q["value"], closed_form)
    return _per_datum(kl, q, particle_dim, per_draw=not per_dim)


def _site_kls(guide_sites, model_sites, particle_dim, per_dim, analytic=True, sites=None):
    """``{site: KL at the draws}`` for the latent ``sites`` (default all; see :func:`_site_kl`)."""
    closed = closed_form_kl_sites(guide_sites, model_sites) if analytic else set()
    return {name: _site_kl(q, model_sites[name], particle_dim, per_dim, name in closed)
            for name, q in guide_sites.items() if sites is None or name in sites}


def kl_per_dimension(model, guide, data, num_samples=10, batch_size=100, device=None, seed=0, analytic=True,
                     sites=None):
    """(1/N) sum_n KL(q(z_d | x_n) || p(z_d)) per dimension d of every latent site, in nats.

    Computed on the sites' base (factorized) distributions, averaged over
    ``num_samples`` draws per datapoint: in closed form where torch knows it and
    the guide draws everything the site's prior depends on before the site
    (:func:`pyrovae.infer.elbo.closed_form_kl_sites`), else
    log q(z_d | ...) - log p(z_d | ...) at the draw. Returns ``{site: tensor [D]}``
    in the guide's site order; the total over d and sites is the KL term of the
    ELBO (Kingma & Welling 2014, arXiv 1312.6114). A site whose distributions do
    not factorize over dims (e.g. a mixture prior) is a ValueError. ``analytic=False``
    estimates every KL by Monte Carlo; ``sites`` limits the result to those latent
    sites; ``seed=None`` draws from (and advances) the global random state.
    """
    positive_int("num_samples", num_samples)
    positive_int("batch_size", batch_size)
    split, batches = _batches(data, batch_size, device, seed)
    parts = {}
    with seeded(seed, device), torch.no_grad(), poutine.block(), evaluation_mode(model, guide):
        for b, guide_sites, model_sites, particle_dim in _pair_runs(model, guide, batches, num_samples, seed, device):
            kls = _site_kls(guide_sites, model_sites, particle_dim, True, analytic, sites)
            parts[b] = {name: kl.double().mean(0).sum(0).cpu() for name, kl in kls.items()}
    sums = {}
    for part in distributed.current().gather_in_order(parts):
        for name, s in part.items():
            sums[name] = sums.get(name, 0) + s
    return {name: (s / len(split)).float() for name, s in sums.items()}


def _average_kl(model, guide, batches, num_samples, seed, device):
    """(1/N) sum_n KL(q(z|x_n) || p(z)) over all latent sites, and its Monte Carlo standard error.

    The error comes from the spread of the per-datapoint estimate over its
    ``num_samples`` draws (zero where every site's KL is in closed form).
    """
    total, var, n = 0.0, 0.0, 0
    for _, guide_sites, model_sites, particle_dim in _pair_runs(model, guide, batches, num_samples, seed, device):
        kl = sum(_site_kls(guide_sites, model_sites, particle_dim, per_dim=False).values())[..., 0].double()
        total += float(kl.mean(0).sum())
        var += float((kl.var(0) / num_samples).sum())
        n += kl.shape[1]
    total, var, n = distributed.current().all_reduce_sum([total, var, n])
    return total / n, math.sqrt(var) / n


# -- ELBO surgery -----------------------------------------------------------------

@dataclass
class ELBOSurgery:
    """Hoffman & Johnson (2016): average KL = index-code mutual information + marginal KL, in nats.

    ``avg_kl``: (1/N) sum_n KL(q(z|x_n) || p(z)) over all N datapoints;
    ``mutual_information``: I_q[n; z] (at most ``log_n`` = log N);
    ``marginal_kl``: KL(q(z) || p(z)) of the aggregate posterior;
    ``num_data``: N; ``num_points``: the M draws z_m ~ q(z) behind MI and
    marginal KL. ``std_errors``: the Monte Carlo standard errors of the three
    and, under ``"sum"``, of MI + marginal KL (an independent estimate of ``avg_kl``).
    """

    avg_kl: float
    mutual_information: float
    marginal_kl: float
    log_n: float
    num_data: int
    num_points: int
    std_errors: dict = field(default_factory=dict)

    def to_dict(self):
        return dataclasses.asdict(self)


def _log_density(sites, particle_dim):
    """sum over ``sites`` of log fn(value), as ``[S, B]``."""
    return sum(_per_datum(s["fn"].log_prob(s["value"]), s, particle_dim, per_draw=True)[..., 0] for s in sites)


def _as_points(site, particle_dim):
    """A draw ``[1, M, ...]`` (one particle, M datapoints) as ``[M, 1, ...]``: the M points along the particle dim."""
    n_batch, p, d = _batch_dims(site, particle_dim)
    value = site["value"]
    value = value.reshape((1,) * (n_batch + len(site["fn"].event_shape) - value.dim()) + value.shape)
    return {**site, "value": value.transpose(p, d)}


def _log_q_block(guide, batch, points, particle_dim):
    """log q(z_m | x_n) ``[M, N_block]``: the guide run on the batch with its latents conditioned on the M points.

    ``points``: ``{name: site}`` with values ``[M, 1, ...]`` (see :func:`_as_points`);
    each is expanded (a view) along the data dim to the block's size, so the
    guide's networks see the shapes of any particle-vectorized run.
    """
    values = {}
    for name, site in points.items():
        _, p, d = _batch_dims(site, particle_dim)
        shape = list(site["value"].shape)
        num_points, shape[d] = shape[p], len(batch)
        values[name] = site["value"].expand(shape)
    with pyro.plate(PARTICLE_PLATE, num_points, dim=particle_dim):
        tr = trace_program(poutine.condition(guide, data=values), batch.x, **batch.kwargs)
    sites = {n: s for n, s in tr.nodes.items() if is_sample(s) and n in values}
    if set(sites) != set(points):
        raise PairError(f"the guide's latent sites changed between runs: {sorted(points)}, then {sorted(sites)}")
    return _log_density(sites.values(), particle_dim)


def _draw_points(model, guide, split, idx, nesting, device):
    """Points z_m ~ q(z | x_idx[m]): ``({site: [M, 1, ...]}, log p(z_m) [M] float64 on the CPU, particle dim)``."""
    chosen = split.materialize(idx).to(device or "cpu")
    pt = _sampled_pair(model, guide, chosen, 1, nesting)
    particle_dim = pt.particle_dim
    log_p = _log_density([pt.model.nodes[name] for name in pt.latents], particle_dim)[0].double().cpu()
    return {name: _as_points(site, particle_dim) for name, site in pt.latents.items()}, log_p, particle_dim


def _take_points(points, rows, particle_dim):
    """The points ``rows`` (indices along the particle dim) of :func:`_draw_points`' points."""
    return {name: {**site, "value": site["value"].index_select(_batch_dims(site, particle_dim)[1],
                                                                 rows.to(site["value"].device))}
            for name, site in points.items()}


def _log_q_points(guide, split, points, idx, particle_dim, data_block, device):
    """(log q(z_m | x_{idx[m]}), log q(z_m)) ``[M]`` float64 on the CPU, with q(z) = (1/N) sum_n q(z | x_n) exact."""
    m = idx.shape[0]
    log_sum = torch.full((m,), -math.inf, dtype=torch.float64)
    own = torch.empty(m, dtype=torch.float64)
    n = len(split)
    for start in range(0, n, data_block):
        block_idx = torch.arange(start, min(n, start + data_block))
        batch = split.materialize(block_idx).to(device or "cpu")
        block = _log_q_block(guide, batch, points, particle_dim).double().cpu()
        log_sum = torch.logaddexp(log_sum, torch.logsumexp(block, 1))
        mine = ((idx >= start) & (idx < start + len(batch))).nonzero()[:, 0]
        own[mine] = block[mine, idx[mine] - start]
    return own, log_sum - math.log(n)


def elbo_surgery(model, guide, data, num_points=1000, num_samples=10, batch_size=100, point_block=1024,
                 data_block=64, device=None, seed=0):
    """ELBO surgery (Hoffman & Johnson 2016): avg KL = I_q[n; z] + KL(q(z) || p(z)) over the N datapoints of ``data``.

    The aggregate posterior q(z) = (1/N) sum_n q(z | x_n) is the mixture of the
    guide over all N datapoints. ``num_points`` (M) draws z_m ~ q(z | x_{n_m})
    with n_m uniform (without replacement when M <= N) give

        I^ = (1/M) sum_m [log q(z_m | x_{n_m}) - log q(z_m)],
        KL^ = (1/M) sum_m [log q(z_m) - log p(z_m)],

    with log q(z_m) = logsumexp_n log q(z_m | x_n) - log N computed exactly, over
    blocks of ``point_block`` points by ``data_block`` datapoints (memory grows
    with their product times the latent size); log q and log p are joint
    densities over all latent sites. ``avg_kl`` is computed separately over all N
    datapoints (closed form per site where torch knows it, else Monte Carlo with
    ``num_samples`` draws). I^ <= log N holds exactly. ``data``: any data
    :func:`~pyrovae.data.splits.as_split` takes (dynamic binarization drawn once from
    ``seed``). Returns :class:`ELBOSurgery`.
    """
    for name, value in (("num_points", num_points), ("num_samples", num_samples), ("batch_size", batch_size),
                        ("point_block", point_block), ("data_block", data_block)):
        positive_int(name, value)
    split, batches = _batches(data, batch_size, device, seed)
    n = len(split)
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(n, generator=g)[:num_points] if num_points <= n else torch.randint(n, (num_points,),
                                                                                              generator=g)
    world, parts = distributed.current(), {}
    with seeded(seed, device), torch.no_grad(), poutine.block(), evaluation_mode(model, guide):
        avg_kl, avg_kl_se = _average_kl(model, guide, batches, num_samples, seed, device)
        nesting = max_plate_nesting(model, guide, batches[0].x, **batches[0].kwargs)
        for block, start in enumerate(range(0, num_points, point_block)):
            idx = index[start:start + point_block]
            with seeded(distributed.unit_seed(seed, len(batches) + block), device):  # units after avg_kl's
                points, log_p, particle_dim = _draw_points(model, guide, split, idx, nesting, device)
            rows = world.shard_rows(torch.arange(len(idx)))
            if len(rows):
                own, log_q = _log_q_points(guide, split, _take_points(points, rows, particle_dim), idx[rows],
                                           particle_dim, data_block, device)
                parts[block, world.rank] = (own - log_q, log_q - log_p[rows])
    mi, mkl = (torch.cat(t) for t in zip(*world.gather_in_order(parts)))

    def se(t):
        return float(t.std() / math.sqrt(t.numel())) if t.numel() > 1 else float("nan")

    return ELBOSurgery(avg_kl, float(mi.mean()), float(mkl.mean()), math.log(n), n, num_points,
                       {"avg_kl": avg_kl_se, "mutual_information": se(mi), "marginal_kl": se(mkl),
                        "sum": se(mi + mkl)})
