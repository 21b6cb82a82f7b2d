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

The pair is read through :class:`pyro.infer.Predictive`: the guide is run on
``x`` for the latent draws, then the model is run as ``model(None,
batch_size=B)`` conditioned on them, so the observed site is sampled. Results go
into an ArviZ ``InferenceData`` (groups ``posterior``, ``posterior_predictive``,
``observed_data``, ``log_likelihood``; one chain).
"""

import os
from dataclasses import dataclass
from typing import Callable

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402
from pyro.infer import Predictive  # noqa: E402

from pyrovae.infer.trace import DATA_PLATE, PARTICLE_PLATE, PairError, max_plate_nesting, run_program  # noqa: E402
from pyrovae.util import chunk_sizes, positive_int, seeded  # noqa: E402

# ---------------------------------------------------------------------------
# Drawing from the predictive distributions


def _check_data(x):
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a tensor of shape [B, *event] with B >= 1, got {type(x).__name__}"
                         f"{' of shape ' + str(list(x.shape)) if isinstance(x, torch.Tensor) else ''}")


def _draw_model(model, posterior_samples, num_samples, batch_size, parallel):
    """All sample sites of ``model(None, batch_size=B)``, conditioned on ``posterior_samples``."""
    predictive = Predictive(model, posterior_samples=posterior_samples, num_samples=num_samples,
                            return_sites=None, parallel=parallel)
    try:
        return predictive(None, batch_size=batch_size)
    except (TypeError, ValueError, AttributeError) as e:
        raise PairError("the predictive checks run the model as model(None, batch_size=B) to sample the data "
                        f"site; that call failed: {type(e).__name__}: {e}") from e


def posterior_predictive(model, guide, x, num_samples=100, obs_site="x", parallel=True, chunk_size=None,
                         seed=None):
    """Draws z^s ~ q(z|x) and x^{rep,s} ~ p(x|z^s), s = 1..S, for the batch ``x``.

    The guide is run on ``x`` through ``Predictive(guide, num_samples=S)``; its draws
    condition ``Predictive(model, posterior_samples=...)`` called as
    ``model(None, batch_size=B)``. Returns ``{site: tensor}`` with every latent site
    of the guide and ``obs_site`` (the replicated data, ``[S, B, *event]``), each
    with the draws along dim 0 (shaped as ``Predictive`` returns them, which pads
    size-1 dims after dim 0 for plates left of a site's own; with the usual single
    ``data`` plate, ``[S, B, ...]``). ``parallel`` vectorizes the draws with an outer
    plate (the pair contract lets networks take extra batch dims); ``chunk_size``
    bounds the draws per vectorized pass.
    """
    _check_data(x)
    positive_int("num_samples", num_samples)
    batch_size = x.shape[0]
    parts = []
    with seeded(seed, x.device), torch.no_grad():
        for n in chunk_sizes(num_samples, chunk_size):
            latents = Predictive(guide, num_samples=n, parallel=parallel)(x)
            if not latents:
                raise PairError("the guide has no sample sites: it must sample the model's latent sites")
            draws = _draw_model(model, latents, n, batch_size, parallel)
            if obs_site not in draws:
                raise PairError(f"obs_site {obs_site!r} is not a sample site of model(None, batch_size=B); "
                                f"its sites are {sorted(draws)}")
            parts.append({**latents, obs_site: draws[obs_site]})
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def prior_predictive(model, num_samples=100, batch_size=1, parallel=True, seed=None):
    """Draws z^s ~ p(z), x^s ~ p(x|z^s) from ``model(None, batch_size=B)``: ``{site: [S, B, ...]}``."""
    positive_int("num_samples", num_samples)
    positive_int("batch_size", batch_size)
    with seeded(seed), torch.no_grad():
        draws = _draw_model(model, {}, num_samples, batch_size, parallel)
    return {name: _per_draw(value, batch_size) for name, value in draws.items()}


def pointwise_log_likelihood(model, guide, x, samples, obs_site="x", chunk_size=None):
    """log p(x_i | z_i^s) for every draw s and datum i: ``[S, B]``.

    The latent draws in ``samples`` (as returned by :func:`posterior_predictive`)
    condition ``model(x)`` under an outer plate of the draws (``chunk_size`` at a
    time); the value is the log-density of the model's site ``obs_site`` (masked
    and scaled as Pyro scores it), summed over every dim but the draw and the datum.
    """
    _check_data(x)
    if obs_site not in samples:
        raise ValueError(f"samples holds no draws of obs_site {obs_site!r}; it has {sorted(samples)}")
    latents = {k: v for k, v in samples.items() if k != obs_site}
    num_samples = next(iter(samples.values())).shape[0]
    nesting = max_plate_nesting(model, guide, x)
    out, start = [], 0
    for n in chunk_sizes(num_samples, chunk_size):
        chunk = {k: v[start:start + n] for k, v in latents.items()}
        out.append(_log_likelihood_chunk(model, x, chunk, n, obs_site, nesting))
        start += n
    return torch.cat(out)


def _log_likelihood_chunk(model, x, latents, num_samples, obs_site, nesting):
    with torch.no_grad(), poutine.block(), pyro.plate(PARTICLE_PLATE, num_samples, dim=-(nesting + 1)):
        sites = run_program(poutine.condition(model, data=latents), x)
    if obs_site not in sites:
        raise PairError(f"obs_site {obs_site!r} is not a sample site of model(x); its sites are {sorted(sites)}")
    site = sites[obs_site]
    data_dim = site.plate_dim(DATA_PLATE)
    if data_dim is None:
        raise PairError(f"site {obs_site!r} is not inside pyro.plate({DATA_PLATE!r}, batch_size)")
    lp = site.log_prob()
    lp = lp.expand(torch.broadcast_shapes(lp.shape, (num_samples,) + (1,) * nesting))
    lp = lp.movedim(data_dim, -1)
    return lp.reshape(num_samples, -1, x.shape[0]).sum(1)


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
    """``[S, (1,)*k, B, *event]`` (Predictive pads plates left of the data plate) -> ``[S, B, *event]``."""
    while value.dim() > 2 and value.shape[1] == 1 and batch_size != 1:
        value = value.squeeze(1)
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
    :func:`prior_predictive`) are given. ``samples`` comes from
    :func:`posterior_predictive`, ``log_likelihood`` from
    :func:`pointwise_log_likelihood`.
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
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(replicated.numpy(), bins=min(30, max(5, replicated.numel() // 5)), color="C0", alpha=0.7,
            label="T(x_rep)")
    ax.axvline(float(observed), color="k", linewidth=2, label="T(x)")
    ax.set_title(f"{name}: p = P(T(x_rep) >= T(x)) = {float(p_value):.3f}")
    ax.set_xlabel(name)
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _image_panels(name, observed, replicated, p_values, path):
    """Observed, mean replicated and p-value maps of an image-shaped statistic ``[C, H, W]`` or ``[H, W]``."""
    mean_rep = replicated.mean(0)
    low = float(torch.minimum(observed.min(), mean_rep.min()))
    high = float(torch.maximum(observed.max(), mean_rep.max()))
    panels = [("T(x)", observed, "gray", low, high), ("mean T(x_rep)", mean_rep, "gray", low, high),
              ("p-value", p_values.float(), "viridis", 0.0, 1.0)]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, (title, img, cmap, vmin, vmax) in zip(axes, panels):
        img = img[0] if img.dim() == 3 else img
        im = ax.imshow(img.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{name}: {title}")
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _ppc_plot(idata, var_name, path, num_pp_samples, kind="kde"):
    axes = az.plot_ppc(idata, var_names=[var_name], kind=kind, num_pp_samples=num_pp_samples, random_seed=0)
    fig = np.ravel(axes)[0].figure
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def save_ppc_plots(idata, stats, folder, num_pp_samples=50):
    """Write the check's pictures as PNG files in ``folder``; returns their paths.

    - ``ppc_<obs>.png``: ``az.plot_ppc`` of the data values (all pixels pooled);
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
    _ppc_plot(idata, obs_site, path, n_pp)
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

def run_ppc(model, guide, x, num_samples=100, folder=None, statistics=None, obs_site="x", alpha=0.05,
            mid_p=False, parallel=True, chunk_size=None, seed=0):
    """Posterior predictive check of a pair on the batch ``x``.

    Draws S replicated data sets (:func:`posterior_predictive`), evaluates the
    test statistics (default :data:`BUILTIN_STATISTICS`; a dict ``{name:
    callable}`` of statistics on a data set ``[B, *event]`` replaces them, wrap a
    callable in ``TestStatistic(fn, per_datum=True)`` for one value per datum) and
    their p-values, and builds the ``InferenceData``. With ``folder`` the plots
    are saved there (:func:`save_ppc_plots`).

    Returns a dict: ``statistics`` ``{name: (T(x), T(x^rep) [S, ...])}``,
    ``p_values`` ``{name: elementwise p-values}``, ``summary`` (JSON-ready:
    the p-value of every scalar statistic under ``p_value`` and, for the others,
    the fraction of p-values outside [alpha/2, 1 - alpha/2] under
    ``extreme_fraction``), ``idata``, ``plots`` (paths), ``num_samples``,
    ``num_data``.
    """
    _check_data(x)
    stats_spec = _as_statistics(statistics)
    samples = posterior_predictive(model, guide, x, num_samples, obs_site=obs_site, parallel=parallel,
                                   chunk_size=chunk_size, seed=seed)
    log_lik = pointwise_log_likelihood(model, guide, x, samples, obs_site=obs_site, chunk_size=chunk_size)
    idata = to_inference_data(x, samples, log_lik, obs_site=obs_site)
    x_rep = _per_draw(samples[obs_site], x.shape[0])
    stats = compute_statistics(x, x_rep, stats_spec)
    p_values = bayesian_p_values({k: v[1] for k, v in stats.items()}, {k: v[0] for k, v in stats.items()},
                                 mid_p=mid_p)
    summary = {"p_value": {}, "extreme_fraction": {}, "alpha": alpha, "mid_p": mid_p}
    for name, p in p_values.items():
        if p.dim() == 0:
            summary["p_value"][name] = float(p)
        else:
            summary["extreme_fraction"][name] = extreme_fraction(p, alpha)
    plots = save_ppc_plots(idata, stats, folder) if folder is not None else []
    return {"statistics": stats, "p_values": p_values, "summary": summary, "idata": idata, "plots": plots,
            "num_samples": num_samples, "num_data": x.shape[0], "obs_site": obs_site}
