"""Posterior predictive checks for any (model, guide) pair.

A posterior predictive check (Gelman, Meng & Stern 1996; Gelman et al., *Bayesian
Data Analysis*, ch. 6) asks whether data simulated from the fitted model look like
the data it was fitted to. For a latent-variable model with an amortized
posterior q(z|x) the replicated data set is drawn datum by datum,

    z_i^s ~ q(z | x_i),    x_i^{rep,s} ~ p(x | z_i^s),    s = 1..S,

and a test statistic T is compared on the observed and the replicated data sets
through the posterior predictive p-value

    p_T = P(T(x^rep) >= T(x) | x)  ~=  (1/S) sum_s 1[T(x^{rep,s}) >= T(x)].

p-values near 0 or 1 mean the observed T is in a tail of what the model
produces: the model misses that aspect of the data. Values in between mean
nothing more than "not flagged": posterior predictive p-values are not uniform
under the model (they concentrate around 1/2), so they are conservative tests.
Here q(z|x) stands in for p(z|x); a poor guide makes the checks about the pair,
not the model alone.

The statistics act on one data set ``[B, *event]``. A *per-datum* statistic
returns one value per datum (``[B]``): it gets a p-value per datum, summarised by
the fraction of extreme ones, and a dataset-level version, its mean over the data
(named ``mean_<name>``). Any other statistic gets elementwise p-values (a scalar
statistic one p-value, ``pixel_means`` one per pixel).

The pair is read through Pyro's traces (:mod:`pyrovae.infer.predictive`): the
guide's S draws per datum are replayed into ``model(x, **kwargs)`` with the
observed site resampled instead of scored, so no ``batch_size`` argument is
needed; the same draws replayed with the site observed give the pointwise
log-likelihood log p(x_i | z_i^s). When the observed site has another shape
than ``x`` (a model that flattens images) the replicated data are reshaped to
``x``'s shape. Results go into an ArviZ ``InferenceData`` (groups
``posterior``, ``posterior_predictive``, ``observed_data``,
``log_likelihood``; one chain).

:func:`run_ppc` draws the replicated data in batches of data, each from its own
seed (:func:`pyrovae.infer.distributed.unit_seed`); in a process group the
ranks divide the batches, the draws are gathered in the data's order and rank 0
saves the plots, so every rank returns the single-process result.
"""

import os
from dataclasses import dataclass
from typing import Callable

import arviz as az
from matplotlib.figure import Figure
import numpy as np
import pyro
import torch
from pyro import poutine

from pyrovae.data.splits import as_split
from pyrovae.infer import distributed
from pyrovae.infer.predictive import draws_per_datum, predictive_trace
from pyrovae.infer.trace import (
    PairError,
    evaluation_mode,
    is_latent,
    max_plate_nesting,
    trace_pair,
)
from pyrovae.util import chunk_sizes, positive_int, seeded

# ---------------------------------------------------------------------------
# Drawing from the predictive distributions


def _check_data(x):
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a tensor of shape [B, *event] with B >= 1, got {type(x).__name__}"
                         f"{' of shape ' + str(list(x.shape)) if isinstance(x, torch.Tensor) else ''}")


def _as_data_shape(draws, x):
    """Replicated data ``[S, B, *site event]`` in ``x``'s shape ``[S, *x.shape]`` where the sizes agree."""
    target = (draws.shape[0], *x.shape)
    if tuple(draws.shape) == target:
        return draws
    if draws.numel() != torch.Size(target).numel():
        raise PairError(f"the observed site draws {list(draws.shape[1:])} values per draw but the data are "
                        f"{list(x.shape)}: the site does not score the data x")
    return draws.reshape(target)


def posterior_predictive(model, guide, x, num_samples=100, obs_site="x", chunk_size=None, seed=None, **kwargs):
    """Draws z^s ~ q(z|x) and x^{rep,s} ~ p(x|z^s), s = 1..S, for the batch ``x``, and log p(x_i | z_i^s).

    Returns ``({site: draws}, log_lik)``: every latent site of the guide as
    ``[S, B, ...]``, ``obs_site`` (the replicated data) as ``[S, *x.shape]``, and
    the pointwise log-likelihood ``[S, B]`` of the observed data under the same
    latent draws. ``kwargs`` reach the pair; ``chunk_size`` bounds the draws
    per vectorized pass.
    """
    _check_data(x)
    positive_int("num_samples", num_samples)
    parts, log_lik = [], []
    with seeded(seed, x.device), torch.no_grad(), poutine.block(), evaluation_mode(model, guide):
        nesting = max_plate_nesting(model, guide, x, **kwargs)
        for n in chunk_sizes(num_samples, chunk_size):
            pt = trace_pair(model, guide, x, num_particles=n, nesting=nesting, enumerate=False, **kwargs)
            if obs_site not in pt.observed:
                raise PairError(f"obs_site {obs_site!r} is not an observed site of the model; its observed sites "
                                f"are {sorted(pt.observed)}")
            rep = predictive_trace(model, guide, x, num_samples=n, nesting=nesting, obs_sites=[obs_site],
                                   guide_trace=pt.guide, **kwargs)
            draws = {name: draws_per_datum(site, nesting) for name, site in pt.latents.items()}
            draws[obs_site] = _as_data_shape(draws_per_datum(rep.nodes[obs_site], nesting), x)
            parts.append(draws)
            obs = pt.model.nodes[obs_site]
            lp = draws_per_datum({**obs, "value": obs["log_prob"], "fn": _NoEvent}, nesting)
            log_lik.append(lp.reshape(lp.shape[0], lp.shape[1], -1).sum(-1).expand(n, x.shape[0]))
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}, torch.cat(log_lik)


class _NoEvent:
    """Stands for a distribution without event dims (a log-density laid out by ``draws_per_datum``)."""

    event_shape = ()


def prior_predictive(model, x, num_samples=100, obs_site="x", seed=None, **kwargs):
    """Draws z^s ~ p(z), x^s ~ p(x|z^s) from the model run alone, ``x`` giving the batch shape only.

    Returns ``{site: [S, B, ...]}`` (``obs_site`` in ``x``'s shape, ``[S, *x.shape]``).
    """
    _check_data(x)
    positive_int("num_samples", num_samples)
    with seeded(seed, x.device), torch.no_grad(), poutine.block():
        nesting = max_plate_nesting(model, None, x, **kwargs)
        tr = predictive_trace(model, None, x, num_samples=num_samples, nesting=nesting, obs_sites=[obs_site],
                              **kwargs)
    if obs_site not in tr.nodes:
        raise PairError(f"obs_site {obs_site!r} is not a sample site of the model; its sites are {sorted(tr.nodes)}")
    out = {name: draws_per_datum(site, nesting) for name, site in tr.nodes.items()
           if site["type"] == "sample" and is_latent(site) and name != obs_site}
    out[obs_site] = _as_data_shape(draws_per_datum(tr.nodes[obs_site], nesting), x)
    return out


# ---------------------------------------------------------------------------
# ArviZ InferenceData

def _event_dim_names(name, event_shape):
    if len(event_shape) == 3:
        return ["channel", "row", "column"]
    if len(event_shape) == 2:
        return ["row", "column"]
    if len(event_shape) == 1:
        return [f"{name}_dim"]
    return [f"{name}_dim_{i}" for i in range(len(event_shape))]


def _per_draw(value, batch_size):
    """``value`` checked to be draws ``[S, B, *event]`` of a site local to the data plate."""
    if value.dim() < 2 or value.shape[1] != batch_size:
        raise PairError(f"a site with draws of shape {list(value.shape)} is not local to the data plate "
                        f"of size {batch_size}")
    return value


def _numpy(t):
    return t.detach().cpu().numpy()


def _group(samples, batch_size, names, chain):
    """``{name: array}`` and ``{name: dims}`` for an ArviZ group; ``chain`` adds a leading chain dim."""
    arrays, dims = {}, {}
    for name in names:
        v = _numpy(_per_draw(samples[name], batch_size))
        arrays[name] = v[None] if chain else v
        dims[name] = ["datum", *_event_dim_names(name, v.shape[2:])]
    return arrays, dims


def to_inference_data(x, samples, log_likelihood=None, obs_site="x", prior_samples=None):
    """An ArviZ ``InferenceData`` of a posterior predictive check (one chain, S draws).

    Groups: ``posterior`` (the guide's latent draws z ~ q(z|x), dims ``datum`` and
    ``<site>_dim``), ``posterior_predictive`` (x^rep, dims ``datum`` and the event
    dims -- ``channel, row, column`` for images), ``observed_data`` (x),
    ``log_likelihood`` (log p(x_i | z_i^s), dims ``datum``) when given, and
    ``prior`` / ``prior_predictive`` when ``prior_samples`` (from
    :func:`prior_predictive`) are given. ``samples`` and ``log_likelihood`` come
    from :func:`posterior_predictive`.
    """
    _check_data(x)
    if obs_site not in samples:
        raise ValueError(f"samples holds no draws of obs_site {obs_site!r}; it has {sorted(samples)}")
    batch_size = x.shape[0]
    latent_names = [k for k in samples if k != obs_site]
    posterior, dims = _group(samples, batch_size, latent_names, chain=True)
    predictive, pp_dims = _group(samples, batch_size, [obs_site], chain=True)
    dims.update(pp_dims)
    kwargs = {"posterior": posterior, "posterior_predictive": predictive,
              "observed_data": {obs_site: _numpy(x)}}
    if log_likelihood is not None:
        kwargs["log_likelihood"] = {obs_site: _numpy(log_likelihood)[None]}
    if prior_samples is not None:
        prior_batch = prior_samples[obs_site].shape[1]
        names = [k for k in prior_samples if k != obs_site]
        kwargs["prior"], prior_dims = _group(prior_samples, prior_batch, names, chain=True)
        kwargs["prior_predictive"], _ = _group(prior_samples, prior_batch, [obs_site], chain=True)
        dims.update(prior_dims)
    attrs = {"inference_library": "pyro", "posterior": "amortized variational q(z|x) of the guide",
             "obs_site": obs_site}
    return az.from_dict(**kwargs, dims=dims, attrs=attrs)


# ---------------------------------------------------------------------------
# Test statistics and p-values

@dataclass(frozen=True)
class TestStatistic:
    """T of one data set ``[B, *event]``; ``per_datum`` when it returns one value per datum (``[B]``)."""

    __test__ = False  # not a pytest test class

    fn: Callable
    per_datum: bool = False

    def __call__(self, x):
        return self.fn(x)


def intensity(x):
    """Mean pixel value of each image: ``[B]``."""
    return x.reshape(x.shape[0], -1).mean(1)


def ink(x):
    """Sum of the pixels of each image ("ink"): ``[B]``."""
    return x.reshape(x.shape[0], -1).sum(1)


def ink_sd(x):
    """Standard deviation (1/B normalised) of the ink over the images: how varied the data set is."""
    return ink(x).std(correction=0)


def pixel_means(x):
    """The marginal mean of every pixel over the data set: ``[*event]``."""
    return x.mean(0)


BUILTIN_STATISTICS = {
    "intensity": TestStatistic(intensity, per_datum=True),
    "ink": TestStatistic(ink, per_datum=True),
    "ink_sd": TestStatistic(ink_sd),
    "pixel_means": TestStatistic(pixel_means),
}


def _as_statistics(statistics):
    if statistics is None:
        return dict(BUILTIN_STATISTICS)
    if not isinstance(statistics, dict):
        raise ValueError("statistics must be a dict {name: callable or TestStatistic}; "
                         "use {**BUILTIN_STATISTICS, 'mine': fn} to add to the built-in ones")
    out = {}
    for name, stat in statistics.items():
        if not callable(stat):
            raise ValueError(f"statistic {name!r} must be callable on a data set [B, *event], got {stat!r}")
        out[name] = stat if isinstance(stat, TestStatistic) else TestStatistic(stat)
    return out


def _evaluate(stat, name, data):
    value = torch.as_tensor(stat(data)).detach()
    if stat.per_datum and tuple(value.shape) != (data.shape[0],):
        raise ValueError(f"per-datum statistic {name!r} must return shape [{data.shape[0]}] on "
                         f"{data.shape[0]} data, got {list(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"statistic {name!r} gave non-finite values (NaN or inf)")
    return value.float().cpu()


def compute_statistics(x, x_rep, statistics=None):
    """T(x) and T(x^{rep,s}) for each statistic: ``{name: (observed, replicated [S, ...])}``.

    A per-datum statistic ``name`` also yields its dataset-level version
    ``mean_<name>``: the mean of T over the data.
    """
    out = {}
    for name, stat in _as_statistics(statistics).items():
        observed = _evaluate(stat, name, x)
        replicated = torch.stack([_evaluate(stat, name, x_rep[s]) for s in range(x_rep.shape[0])])
        out[name] = (observed, replicated)
        if stat.per_datum:
            out[f"mean_{name}"] = (observed.mean(), replicated.mean(1))
    return out


def bayesian_p_values(stats_rep, stats_obs, mid_p=False):
    """Posterior predictive p-values p = P(T(x^rep) >= T(x)), elementwise.

    ``stats_rep`` holds T(x^{rep,s}) with the S draws on dim 0, ``stats_obs``
    holds T(x); either tensors or dicts of tensors by statistic name (then a dict
    comes back). The estimate is (1/S) sum_s 1[T(x^{rep,s}) >= T(x)]; with
    ``mid_p`` ties count one half, P(>) + P(=)/2, which keeps discrete
    statistics (ink of binary images) from leaning towards 1.
    """
    if isinstance(stats_rep, dict):
        missing = sorted(set(stats_rep) ^ set(stats_obs))
        if missing:
            raise ValueError(f"stats_rep and stats_obs name different statistics: {missing}")
        return {k: bayesian_p_values(stats_rep[k], stats_obs[k], mid_p) for k in stats_rep}
    rep, obs = torch.as_tensor(stats_rep), torch.as_tensor(stats_obs)
    if rep.dim() < 1 or tuple(rep.shape[1:]) != tuple(obs.shape):
        raise ValueError(f"stats_rep must have shape [S, *T.shape] = [S, {', '.join(map(str, obs.shape))}], "
                         f"got {list(rep.shape)}")
    greater = (rep > obs).double().mean(0)
    equal = (rep == obs).double().mean(0)
    return greater + (0.5 if mid_p else 1.0) * equal


def extreme_fraction(p_values, alpha=0.05):
    """The fraction of p-values outside [alpha/2, 1 - alpha/2] (two-sided extremes)."""
    p = torch.as_tensor(p_values)
    return float(((p < alpha / 2) | (p > 1 - alpha / 2)).double().mean())


# ---------------------------------------------------------------------------
# Plots

def _safe(name):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _histogram(name, observed, replicated, p_value, path):
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.hist(replicated.numpy(), bins=min(30, max(5, replicated.numel() // 5)), color="C0", alpha=0.7,
            label="T(x_rep)")
    ax.axvline(float(observed), color="k", linewidth=2, label="T(x)")
    ax.set_title(f"{name}: p = P(T(x_rep) >= T(x)) = {float(p_value):.3f}")
    ax.set_xlabel(name)
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=90, bbox_inches="tight")


def _image_panels(name, observed, replicated, p_values, path):
    """Observed, mean replicated and p-value maps of an image-shaped statistic ``[C, H, W]`` or ``[H, W]``."""
    mean_rep = replicated.mean(0)
    low = float(torch.minimum(observed.min(), mean_rep.min()))
    high = float(torch.maximum(observed.max(), mean_rep.max()))
    panels = [("T(x)", observed, "gray", low, high), ("mean T(x_rep)", mean_rep, "gray", low, high),
              ("p-value", p_values.float(), "viridis", 0.0, 1.0)]
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 3)
    for ax, (title, img, cmap, vmin, vmax) in zip(axes, panels):
        img = img[0] if img.dim() == 3 else img
        im = ax.imshow(img.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{name}: {title}")
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.savefig(path, dpi=90, bbox_inches="tight")


def _ppc_plot(idata, var_name, path, num_pp_samples, kind="kde", title=None):
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    az.plot_ppc(idata, var_names=[var_name], kind=kind, num_pp_samples=num_pp_samples, random_seed=0, ax=ax,
                show=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=90, bbox_inches="tight")


def save_ppc_plots(idata, stats, folder, num_pp_samples=50):
    """Write the check's pictures as PNG files in ``folder``; returns their paths.

    - ``ppc_<obs>.png``: ``az.plot_ppc`` of the data values (all values pooled) as
      cumulative distributions, observed against replicated data sets: readable
      for binary and grey images too, where a density of the pooled values is a
      spike at 0 (the height of the step at 0 is the share of dark pixels);
    - ``ppc_<stat>.png``: ``az.plot_ppc`` of each per-datum statistic's spread over
      the data, observed against replicated data sets;
    - ``stat_<stat>.png``: a histogram of T(x^rep) with T(x) as a vertical line,
      for each scalar statistic;
    - ``stat_<stat>.png`` for an image-shaped statistic (``pixel_means``): maps of
      T(x), the mean T(x^rep) and the p-values.

    ``stats`` is ``{name: (observed, replicated)}`` from :func:`compute_statistics`
    (or ``run_ppc(...)["statistics"]``).
    """
    os.makedirs(folder, exist_ok=True)
    obs_site = idata.attrs.get("obs_site") or next(iter(idata.observed_data.data_vars))
    num_draws = idata.posterior_predictive.sizes["draw"]
    n_pp = min(num_pp_samples, num_draws)
    paths = []
    path = os.path.join(folder, f"ppc_{_safe(obs_site)}.png")
    _ppc_plot(idata, obs_site, path, n_pp, kind="cumulative",
              title=f"{obs_site}: cumulative distribution of all values, observed against replicated data sets")
    paths.append(path)
    batch_size = idata.observed_data.sizes["datum"]
    for name, (observed, replicated) in stats.items():
        p = bayesian_p_values(replicated, observed)
        path = os.path.join(folder, f"stat_{_safe(name)}.png")
        if observed.dim() == 0:
            _histogram(name, observed, replicated, p, path)
        elif observed.dim() in (2, 3):
            _image_panels(name, observed, replicated, p, path)
        elif observed.shape == (batch_size,):
            stat_idata = az.from_dict(posterior_predictive={name: _numpy(replicated)[None]},
                                      observed_data={name: _numpy(observed)}, dims={name: ["datum"]})
            path = os.path.join(folder, f"ppc_{_safe(name)}.png")
            _ppc_plot(stat_idata, name, path, n_pp)
        else:
            continue
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------
# The whole check

def run_ppc(model, guide, data, num_samples=100, folder=None, statistics=None, obs_site="x", alpha=0.05,
            mid_p=False, chunk_size=None, seed=0, obs="x", batch_size=100):
    """Posterior predictive check of a pair on ``data`` (any data :func:`~pyrovae.data.splits.as_split` takes).

    Draws S replicated data sets (:func:`posterior_predictive`), evaluates the
    test statistics (default :data:`BUILTIN_STATISTICS`; a dict ``{name:
    callable}`` of statistics on a data set ``[B, *event]`` replaces them, wrap a
    callable in ``TestStatistic(fn, per_datum=True)`` for one value per datum) and
    their p-values, and builds the ``InferenceData``. With ``folder`` the plots
    are saved there (:func:`save_ppc_plots`). The draws are made ``batch_size``
    data at a time, batch b from seed ``unit_seed(seed, b)`` (module doc).

    Returns a dict: ``statistics`` ``{name: (T(x), T(x^rep) [S, ...])}``,
    ``p_values`` ``{name: elementwise p-values}``, ``summary`` (JSON-ready:
    the p-value of every scalar statistic under ``p_value`` and, for the others,
    the fraction of p-values outside [alpha/2, 1 - alpha/2] under
    ``extreme_fraction``), ``idata``, ``plots`` (paths), ``num_samples``,
    ``num_data``.
    """
    positive_int("batch_size", batch_size)
    split = as_split(data, obs).fixed(seed)
    world, batches, parts = distributed.current(), split.batch_indices(batch_size), {}
    x = split.data[torch.cat(batches)]  # the data in the order of the batches (the split's, without optional fields)
    stats_spec = _as_statistics(statistics)
    for b in world.units(len(batches)):
        batch = split.materialize(batches[b]).to(x.device)
        parts[b] = posterior_predictive(model, guide, batch.x, num_samples, obs_site=obs_site, chunk_size=chunk_size,
                                        seed=distributed.unit_seed(seed, b), **batch.kwargs)
    parts = world.gather_in_order(parts)
    samples = {name: torch.cat([draws[name] for draws, _ in parts], 1) for name in parts[0][0]}
    log_lik = torch.cat([lik for _, lik in parts], 1)
    idata = to_inference_data(x, samples, log_lik, obs_site=obs_site)
    x_rep = samples[obs_site]
    stats = compute_statistics(x, x_rep, stats_spec)
    p_values = bayesian_p_values({k: v[1] for k, v in stats.items()}, {k: v[0] for k, v in stats.items()},
                                 mid_p=mid_p)
    summary = {"p_value": {}, "extreme_fraction": {}, "alpha": alpha, "mid_p": mid_p}
    for name, p in p_values.items():
        if p.dim() == 0:
            summary["p_value"][name] = float(p)
        else:
            summary["extreme_fraction"][name] = extreme_fraction(p, alpha)
    plots = world.on_main(lambda: save_ppc_plots(idata, stats, folder)) if folder is not None else []
    return {"statistics": stats, "p_values": p_values, "summary": summary, "idata": idata, "plots": plots,
            "num_samples": num_samples, "num_data": x.shape[0], "obs_site": obs_site}
