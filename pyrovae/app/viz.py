"""Pictures of a trained pair: samples, reconstructions, latent traversals,
interpolations, latent scatter plots, training curves and, for data drawn from
known inputs, a factor-by-latent heat map and a two-dimensional latent walk.

Works for any pair whose data are images (or flat data with a given image
shape). Samples are the mean of the model's observed site given z ~ p(z) (the
model runs on a batch of data that only gives the shapes, its observed site
resampled: :mod:`pyrovae.infer.predictive`), reconstructions the mean given
z ~ q(z|x). Every other picture *decodes* chosen latent values: they are fixed
in the model with ``pyro.poutine.condition`` and the picture is the mean of the
observed site's distribution, E[x | z] (:func:`decode_means`); a likelihood
without a mean (an autoregressive decoder) shows a draw instead. An observed
site of another shape than the data (a model that flattens images) is shown in
the data's shape.

Latent dimensions are ranked by their KL term (:func:`kl_per_dimension`), the
per-dimension view of the rate KL(q(z|x) || p(z)) used to find the dimensions a
VAE actually uses (Burda et al. 2015, arXiv 1509.00519, "active units";
Higgins et al. 2017, beta-VAE, for traversals ordered this way).

For data whose inputs are known (``shapes``, ``rivers``, dSprites), the
dimensions are read against the inputs instead: :func:`save_factor_latents`
shows the mutual information of every dimension with every input
(:mod:`pyrovae.evaluate.factors`), and :func:`latent_walk` decodes a grid that
walks two dimensions together -- those most informative about two chosen
inputs (:func:`walk_dims`), as in the rivers example's walk of the grass colour
against the river's net curvature.
"""

import json
import math
import os
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
import pyro
import torch
from pyro import poutine
from torch.distributions import kl_divergence

from pyrovae.evaluate import diagnostics
from pyrovae.infer.distributions import distribution_mean, factorised, site_mean
from pyrovae.infer.elbo import closed_form_kl_sites
from pyrovae.infer.predictive import AtMean, ResampleObserved
from pyrovae.infer.trace import (
    evaluation_mode,
    is_latent,
    latent_sites,
    observed_sites,
    trace_pair,
    trace_program,
)


def _shown(site, like):
    """The mean of an observed site's distribution (a draw where it has none), in the shape of the data ``like``."""
    mean = distribution_mean(site["fn"])
    value = site["value"] if mean is None else mean.expand_as(site["value"])
    if value.shape != like.shape:
        if value.numel() != like.numel():
            raise ValueError(f"the observed site {site['name']!r} has shape {list(value.shape)}, which does not "
                             f"reshape to the data's {list(like.shape)}")
        value = value.reshape(like.shape)
    return value


def _obs(trace, obs_site, fixed=()):
    sites = {n: s for n, s in observed_sites(trace).items() if n not in fixed}
    if obs_site in trace.nodes:
        return trace.nodes[obs_site]
    if not sites:
        raise ValueError(f"the model has no site {obs_site!r} and no observed site")
    return next(iter(sites.values()))


@torch.no_grad()
def sample_means(model, x, obs_site="x", **kwargs):
    """Means of p(x|z) at ``obs_site`` for z ~ p(z), one per datum of ``x`` (which gives the shapes only)."""
    with poutine.block():
        tr = trace_program(ResampleObserved([obs_site])(model), x, **kwargs)
    return _shown(_obs(tr, obs_site), x)


@torch.no_grad()
def reconstruction_means(model, guide, x, obs_site="x", **kwargs):
    """Means of p(x|z) for z ~ q(z|x): same shape as ``x``."""
    with poutine.block(), evaluation_mode(model, guide):
        pt = trace_pair(model, guide, x, enumerate=False, **kwargs)
    return _shown(_obs(pt.model, obs_site), x)


def image_grid(images, nrow=None, padding=2):
    """Tile images ``[N, C, H, W]`` (C = 1 or 3) into one ``[H', W']`` or ``[H', W', 3]`` array.

    ``torchvision.utils.make_grid`` with white (1.0) padding of ``padding`` pixels:
    ``nrow`` images per row (default ``ceil(sqrt(N))``; ``min(nrow, N)`` columns),
    values clamped to [0, 1].
    """
    from torchvision.utils import make_grid

    images = images.detach().float().cpu().clamp(0, 1)
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=1.0)
    return grid[0].numpy() if images.shape[1] == 1 else grid.permute(1, 2, 0).numpy()


def as_images(t, shape=None):
    """``t`` ``[..., *event]`` as images ``[..., C, H, W]``: as it is, or its event reshaped to ``shape``."""
    if shape is None:
        return t
    n = int(torch.Size(shape).numel())
    return t.reshape(*t.shape[:t.dim() - _event_dims(t, n)], *shape)


def _event_dims(t, n):
    """How many trailing dims of ``t`` hold ``n`` values."""
    size = 1
    for k in range(1, t.dim() + 1):
        size *= t.shape[-k]
        if size == n:
            return k
    raise ValueError(f"data of shape {list(t.shape)} do not hold images of {n} values")


def save_grid(images, path, nrow=None, title=None, shape=None):
    """Save :func:`image_grid` of ``images`` (reshaped to ``shape`` when given) as a PNG."""
    grid = image_grid(as_images(images, shape), nrow)
    fig = Figure(figsize=(6, 6 * grid.shape[0] / grid.shape[1]))
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def save_reconstructions(model, guide, x, path, shape=None, **kwargs):
    """Inputs (odd rows) above their reconstructions (even rows), 8 per row."""
    recon = reconstruction_means(model, guide, x, **kwargs)
    rows = []
    for start in range(0, x.shape[0], 8):
        rows += [x[start:start + 8], recon[start:start + 8]]
    return save_grid(torch.cat(rows), path, nrow=8, title="inputs (odd rows) and reconstructions", shape=shape)


# ---------------------------------------------------------------------------
# Reading latent sites and decoding chosen latent values

def _check_batch(x, name="x"):
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 1:
        shape = f" of shape {list(x.shape)}" if isinstance(x, torch.Tensor) else ""
        raise ValueError(f"{name} must be a batch of data [N, *event] with N >= 1, got {type(x).__name__}{shape}")


def _pick_site(sites, site):
    if not sites:
        raise ValueError("the guide has no latent sample sites")
    if site is None:
        return next(iter(sites))
    if site not in sites:
        raise ValueError(f"the guide has no latent sample site {site!r}; its latent sites are {sorted(sites)}")
    return site


@torch.no_grad()
def guide_means(guide, x, **kwargs):
    """E_q[z | x] of every latent site of the guide, in the order sampled: ``{site: [N, *event]}``.

    Each site is drawn at its mean, so a site below another latent conditions
    on its parent's mean: the codes are deterministic.
    """
    with poutine.block():
        tr = trace_program(AtMean()(guide), x, **kwargs)
    return {name: s["value"] for name, s in latent_sites(tr).items()}


@torch.no_grad()
def decode_means(model, latents, x, obs_site="x", **kwargs):
    """E[x | z] for chosen latent values ``latents`` = ``{site: [N, *event]}``.

    The values are fixed with ``pyro.poutine.condition`` and the model runs on
    ``x`` (N data, shapes only) with its observed site resampled; the result is
    the mean of ``obs_site`` in ``x``'s shape.
    """
    if not latents:
        raise ValueError("latents must name at least one latent site: {site: values [N, *event]}")
    with poutine.block():
        tr = trace_program(poutine.condition(ResampleObserved([obs_site])(model), data=latents), x, **kwargs)
    return _shown(_obs(tr, obs_site, latents), x)


# ---------------------------------------------------------------------------
# KL per latent dimension

@dataclass
class LatentKL:
    """Per-dimension KL of one latent site, averaged over a batch.

    ``values[d]`` is (1/N) sum_i KL(q(z_d | x_i) || p(z_d)) in nats (``method``
    ``"closed-form"`` or ``"monte-carlo"``), or, where q or p does not factorise
    over dimensions, Var_i E_q[z_d | x_i] (``"variance-of-means"``: Burda et al.
    2015's activity statistic, not in nats). Dimensions flatten the site's event
    shape.
    """

    site: str
    values: torch.Tensor
    method: str

    def order(self):
        """Dimensions by decreasing value (ties by index)."""
        return torch.argsort(self.values, descending=True, stable=True)


@torch.no_grad()
def kl_per_dimension(model, guide, x, site=None, analytic=True, num_samples=64):
    """KL(q(z|x) || p(z)) of latent ``site`` (default: the guide's first) per dimension, over the batch ``x``.

    When both the guide's and the model's distribution at the site factorise into
    independent scalar coordinates (``Normal(...).to_event(1)`` and the like),
    KL(q || p) = sum_d KL(q_d || p_d), computed by
    :func:`pyrovae.evaluate.diagnostics.kl_per_dimension`: in closed form where torch
    knows it, ``analytic`` is set and the site's place in the guide keeps it
    unbiased (one draw of the site's parents per datum), else by Monte Carlo
    from ``num_samples`` draws per datum.
    Otherwise (a full-covariance guide, a mixture or VampPrior prior) the KL does
    not split by dimension and the variance over the batch of the guide means
    stands in.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a batch [N, *event] with N >= 1, got {type(x).__name__}")
    with poutine.block():
        pt = trace_pair(model, guide, x, enumerate=False)
    guide_sites, model_sites = pt.latents, latent_sites(pt.model)
    name = _pick_site(guide_sites, site)
    q, p = guide_sites[name], model_sites[name]
    q_dims, p_dims = factorised(q["fn"]), factorised(p["fn"])
    if q_dims is None or p_dims is None:
        means = site_mean(q).reshape(x.shape[0], -1)
        return LatentKL(name, means.var(0, correction=0), "variance-of-means")
    closed = analytic and name in closed_form_kl_sites(guide_sites, model_sites) and _has_closed_form(q_dims, p_dims)
    if closed:  # from this run's distributions: one draw of the site's parents per datum
        kl = kl_divergence(q_dims, p_dims).expand(q["value"].shape).reshape(x.shape[0], -1).mean(0)
        return LatentKL(name, kl.detach(), "closed-form")
    kl = diagnostics.kl_per_dimension(model, guide, x, num_samples=num_samples, batch_size=x.shape[0], seed=None,
                                      analytic=False, sites={name})[name]
    return LatentKL(name, kl, "monte-carlo")


def _has_closed_form(q, p):
    try:
        kl_divergence(q, p)
        return True
    except NotImplementedError:
        return False


# ---------------------------------------------------------------------------
# Latent traversals and interpolations

@dataclass
class Traversals:
    """``images[r, s]`` decodes the base input's guide means with dimension ``dims[r]`` set to ``values[r, s]``."""

    images: torch.Tensor
    dims: list
    values: torch.Tensor
    kl: LatentKL


@torch.no_grad()
def latent_traversals(model, guide, x, site=None, num_steps=9, span=3.0, max_dims=None, base_index=0, kl=None,
                      obs_site="x", analytic=True):
    """Traverse each latent dimension of ``site``, one at a time, in order of decreasing KL.

    The start is the guide means E_q[z | x_b] of the input ``x[base_index]`` (all
    latent sites); dimension d is swept over ``num_steps`` values from
    mu_d - span sigma_d to mu_d + span sigma_d, with mu, sigma the prior's mean
    and standard deviation at that dimension (the means and spread of the guide
    means over ``x`` where the prior has no moments), and the results are decoded
    (:func:`decode_means`). Dimensions are ranked by :func:`kl_per_dimension` on
    the batch ``x``; ``max_dims`` keeps the first ones.
    """
    _check_batch(x)
    if num_steps < 2 or not span > 0:
        raise ValueError(f"need num_steps >= 2 and span > 0, got {num_steps} and {span}")
    if not 0 <= base_index < x.shape[0]:
        raise ValueError(f"base_index {base_index} is outside the batch of {x.shape[0]}")
    kl = kl if kl is not None else kl_per_dimension(model, guide, x, site, analytic)
    means = guide_means(guide, x)
    flat = means[kl.site].reshape(x.shape[0], -1)
    dims = kl.order()[:max_dims].tolist()
    loc, scale = _prior_moments(model, guide, x[base_index:base_index + 1], kl.site, flat)
    steps = torch.linspace(-span, span, num_steps, device=flat.device, dtype=flat.dtype)
    values = loc[dims][:, None] + scale[dims][:, None] * steps
    n = len(dims) * num_steps
    latents = {name: m[base_index:base_index + 1].expand(n, *m.shape[1:]).clone() for name, m in means.items()}
    z = latents[kl.site].reshape(n, -1)
    for row, d in enumerate(dims):
        z[row * num_steps:(row + 1) * num_steps, d] = values[row]
    latents[kl.site] = z.reshape(latents[kl.site].shape)
    images = decode_means(model, latents, x[base_index:base_index + 1].expand(n, *x.shape[1:]), obs_site)
    return Traversals(images.reshape(len(dims), num_steps, *images.shape[1:]), dims, values, kl)


def _prior_moments(model, guide, x, site, flat_means):
    """Mean and standard deviation of p(z) at ``site`` per flattened dim (guide-mean statistics as a fallback)."""
    with poutine.block():
        p = trace_pair(model, guide, x, enumerate=False).model.nodes[site]
    try:
        loc, scale = p["fn"].mean, p["fn"].stddev
    except NotImplementedError:
        return flat_means.mean(0), flat_means.std(0, correction=0)
    return loc.expand_as(p["value"]).reshape(-1), scale.expand_as(p["value"]).reshape(-1)


@torch.no_grad()
def interpolate(model, guide, x_start, x_end, num_steps=8, obs_site="x"):
    """Decoded linear paths between the guide means of two inputs: ``[N, num_steps, *event]``.

    Row i decodes (1 - t) E_q[z | x_start_i] + t E_q[z | x_end_i] for t evenly
    spaced in [0, 1], for every latent site at once.
    """
    _check_batch(x_start, "x_start")
    _check_batch(x_end, "x_end")
    if x_start.shape != x_end.shape:
        raise ValueError(f"x_start and x_end must have the same shape, got {list(x_start.shape)} and "
                         f"{list(x_end.shape)}")
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    a, b = guide_means(guide, x_start), guide_means(guide, x_end)
    n = x_start.shape[0]
    latents = {}
    for name, start in a.items():
        t = torch.linspace(0, 1, num_steps, device=start.device, dtype=start.dtype)
        t = t.reshape(1, num_steps, *([1] * (start.dim() - 1)))
        path = (1 - t) * start.unsqueeze(1) + t * b[name].unsqueeze(1)
        latents[name] = path.reshape(n * num_steps, *start.shape[1:])
    like = x_start.unsqueeze(1).expand(n, num_steps, *x_start.shape[1:]).reshape(n * num_steps, *x_start.shape[1:])
    images = decode_means(model, latents, like, obs_site)
    return images.reshape(n, num_steps, *images.shape[1:])


def _save_rows(images, path, title, row_labels=None, shape=None):
    """Save ``images`` ``[R, S, *event]`` as an R x S grid of images (events reshaped to ``shape``), row labels."""
    images = as_images(images, shape)
    rows, steps = images.shape[:2]
    grid = image_grid(images.reshape(rows * steps, *images.shape[2:]), nrow=steps)
    fig = Figure(figsize=(max(4, steps * 0.8), max(1.5, rows * 0.8) + 0.6))
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    h = images.shape[-2]
    if row_labels:
        ax.set_yticks([2 + r * (h + 2) + h / 2 for r in range(rows)], row_labels, fontsize=8)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def save_traversals(model, guide, x, path, shape=None, **kwargs):
    """Save :func:`latent_traversals` as a PNG: one row per dimension, labelled with its KL."""
    t = latent_traversals(model, guide, x, **kwargs)
    unit = "nats" if t.kl.method != "variance-of-means" else "var of means"
    labels = [f"{t.kl.site}[{d}]  {float(t.kl.values[d]):.2f} {unit}" for d in t.dims]
    span = kwargs.get("span", 3.0)
    title = f"traversals of {t.kl.site}, by decreasing KL ({t.kl.method}); prior mean -{span:g} to +{span:g} sd"
    return _save_rows(t.images, path, title, labels, shape=shape)


def save_interpolations(model, guide, x_start, x_end, path, num_steps=8, obs_site="x", shape=None):
    """Save :func:`interpolate` as a PNG, each row flanked by its two inputs."""
    paths = interpolate(model, guide, x_start, x_end, num_steps, obs_site)
    rows = torch.cat([x_start.unsqueeze(1).to(paths), paths, x_end.unsqueeze(1).to(paths)], dim=1)
    return _save_rows(rows, path, "interpolation between guide means (inputs at both ends)", shape=shape)


# ---------------------------------------------------------------------------
# Scatter of the latent means

@torch.no_grad()
def latent_scatter_points(model, guide, x, site=None, analytic=True, kl=None):
    """Guide means of ``site`` in its two dimensions of largest KL: ``(points [N, 2], dims, kl)``.

    The plane is spanned by the two highest-KL dimensions, not by principal
    components, so its axes are latent dimensions that traversals and metrics
    name too. A one-dimensional site gets 0 as its second coordinate.
    """
    kl = kl if kl is not None else kl_per_dimension(model, guide, x, site, analytic)
    flat = guide_means(guide, x)[kl.site].reshape(x.shape[0], -1)
    dims = kl.order()[:2].tolist()
    points = flat[:, dims]
    if len(dims) == 1:
        points = torch.cat([points, torch.zeros_like(points)], 1)
    return points, dims, kl


def save_latent_scatter(model, guide, x, labels, path, site=None, label_names=None, analytic=True, kl=None):
    """Scatter of :func:`latent_scatter_points`, coloured by ``labels``.

    ``labels`` is ``[N]`` (a class label) or ``[N, F]`` (ground-truth factors: one
    panel per factor), or None; ``label_names`` names the label or the factors.
    """
    _check_batch(x)
    points, dims, kl = latent_scatter_points(model, guide, x, site, analytic, kl)
    points = points.cpu().numpy()
    if labels is None:
        columns, names = [None], [None]
    else:
        labels = torch.as_tensor(labels).cpu()
        if labels.shape[0] != x.shape[0] or labels.dim() not in (1, 2):
            raise ValueError(f"labels must have shape [N] or [N, F] with N = {x.shape[0]}, got {list(labels.shape)}")
        columns = [labels] if labels.dim() == 1 else list(labels.T)
        names = list(label_names) if label_names is not None else (
            ["label"] if labels.dim() == 1 else [f"factor {i}" for i in range(len(columns))])
        if len(names) != len(columns):
            raise ValueError(f"label_names has {len(names)} names for {len(columns)} label columns")
    fig = Figure(figsize=(4.2 * len(columns), 3.6), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False)
    for ax, column, name in zip(axes[0], columns, names):
        if column is None:
            ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6)
        else:
            values = column.numpy()
            cmap = "tab10" if len(set(values.tolist())) <= 10 else "viridis"
            sc = ax.scatter(points[:, 0], points[:, 1], c=values, cmap=cmap, s=6, alpha=0.7)
            fig.colorbar(sc, ax=ax, fraction=0.046, label=name)
            ax.set_title(f"coloured by {name}", fontsize=9)
        ax.set_xlabel(f"{kl.site}[{dims[0]}]")
        ax.set_ylabel(f"{kl.site}[{dims[1]}]" if len(dims) > 1 else "(one dimension)")
    fig.suptitle(f"guide means of {kl.site}: the two dimensions of largest KL", fontsize=10)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------
# Training curves

def read_metrics(path):
    """The rows of a run's ``metrics.jsonl`` (one dict per epoch, as :class:`~pyrovae.infer.svi.SVIRun` writes)."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {number}: not JSON ({e})") from None
    return rows


def training_curves(rows):
    """``{"epoch", "train_elbo", "val_elbo"}`` lists from metrics rows (NaN where an epoch lacks a value).

    ``train_elbo`` is the training bound averaged over the epoch's batches (the
    objective's own bound, e.g. the IWAE bound), ``val_elbo`` the ELBO on the
    validation split at the end of the epoch.
    """
    rows = [r for r in rows if "epoch" in r]
    if not rows:
        raise ValueError("the metrics hold no epochs (no rows with an 'epoch' field)")
    curves = {"epoch": [r["epoch"] for r in rows]}
    for key in ("train_elbo", "val_elbo"):
        curves[key] = [float(r.get(key, math.nan)) for r in rows]
    return curves


def save_training_curves(metrics, path):
    """Plot :func:`training_curves` of ``metrics`` (rows, or the path of ``metrics.jsonl``) as a PNG."""
    curves = training_curves(read_metrics(metrics) if isinstance(metrics, (str, os.PathLike)) else metrics)
    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.plot(curves["epoch"], curves["train_elbo"], "o-", label="train bound (mean over the epoch)")
    if any(math.isfinite(v) for v in curves["val_elbo"]):
        ax.plot(curves["epoch"], curves["val_elbo"], "s-", label="validation ELBO (end of epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datapoint")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------
# Ground-truth inputs against latent dimensions: the factor-by-latent picture and the latent walk

@torch.no_grad()
def latent_codes(guide, x, site=None, batch_size=500):
    """Guide means E_q[z | x] of latent ``site`` (default: the guide's first), flattened: ``(site, [N, D])``.

    The guide runs on ``batch_size`` data at a time under :class:`~pyrovae.infer.predictive.AtMean`
    (:func:`guide_means`), so the codes are deterministic.
    """
    _check_batch(x)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    name, parts = site, []
    for start in range(0, x.shape[0], batch_size):
        means = guide_means(guide, x[start:start + batch_size])
        name = _pick_site(means, name)
        parts.append(means[name].reshape(means[name].shape[0], -1))
    return name, torch.cat(parts)


def walk_dims(info, factors):
    """The latent dimension to walk for each input in ``factors``: its most informative one, all distinct.

    ``info`` is a :class:`~pyrovae.evaluate.factors.FactorInformation`. Inputs are
    served in order; an input whose most informative dimension an earlier input
    took gets its most informative free one. Returns ``[{"factor", "dim", "mi",
    "share"}]`` with ``mi`` = I(z_dim; v) in nats and ``share`` = I(z_dim; v) / H(v).
    """
    factors = list(factors)
    if len(factors) > info.mi.shape[0]:
        raise ValueError(f"{len(factors)} inputs {factors} need as many latent dimensions; the code has "
                         f"{info.mi.shape[0]}")
    taken, out = set(), []
    for name in factors:
        k = info.column(name)
        free = [d for d in sorted(range(info.mi.shape[0]), key=lambda d: -info.mi[d, k]) if d not in taken]
        dim = free[0]
        taken.add(dim)
        h = info.entropy[k]
        out.append({"factor": name, "dim": int(dim), "mi": float(info.mi[dim, k]),
                    "share": float(info.mi[dim, k] / h) if h > 0 else 0.0})
    return out


def best_captured_factors(info, count=2):
    """The ``count`` inputs whose most informative dimension carries the largest share I(z; v) / H(v) of them."""
    share = info.mi / info.entropy.clip(min=1e-12)
    order = sorted(range(len(info.factor_names)), key=lambda k: -share[:, k].max())
    return [info.factor_names[k] for k in order[:count]]


@dataclass
class LatentWalk:
    """``images[r, s]`` decodes the base code with ``dims[0]`` set to ``values[0][r]`` and ``dims[1]`` to
    ``values[1][s]`` (latent ``site``; every other coordinate and site at the base input's guide means)."""

    images: torch.Tensor
    dims: tuple
    values: tuple
    site: str


@torch.no_grad()
def latent_walk(model, guide, x, dims, site=None, num_steps=7, quantiles=(0.02, 0.98), base_index=0, codes=None,
                obs_site="x"):
    """Walk two latent dimensions together: a ``num_steps`` x ``num_steps`` grid of decoded codes.

    The start is the guide means E_q[z | x_b] of ``x[base_index]`` (every latent
    site). Dimension ``dims[0]`` sweeps the rows and ``dims[1]`` the columns, each
    over ``num_steps`` evenly spaced values between the ``quantiles`` of its guide
    means over the batch ``x`` -- the range the data's codes occupy, so a
    dimension the data barely move barely moves the pictures. The grid is decoded
    by :func:`decode_means`. ``codes`` ``[N, D]`` are the batch's flattened guide
    means of ``site`` when already computed (:func:`latent_codes`).
    """
    _check_batch(x)
    dims = tuple(int(d) for d in dims)
    if len(dims) != 2 or dims[0] == dims[1]:
        raise ValueError(f"a latent walk takes two different dimensions, got {list(dims)}")
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    low, high = quantiles
    if not 0 <= low < high <= 1:
        raise ValueError(f"quantiles must be (low, high) with 0 <= low < high <= 1, got {quantiles}")
    if not 0 <= base_index < x.shape[0]:
        raise ValueError(f"base_index {base_index} is outside the batch of {x.shape[0]}")
    if codes is None:
        site, codes = latent_codes(guide, x, site)
    if codes.shape[0] != x.shape[0]:
        raise ValueError(f"codes hold {codes.shape[0]} data but x holds {x.shape[0]}")
    for d in dims:
        if not 0 <= d < codes.shape[1]:
            raise ValueError(f"dimension {d} is outside the latent site's {codes.shape[1]} dimensions")
    means = guide_means(guide, x[base_index:base_index + 1])
    site = _pick_site(means, site)
    edges = torch.quantile(codes[:, list(dims)].double(), torch.tensor([low, high], dtype=torch.float64), dim=0)
    steps = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    values = tuple((edges[0, i] + steps * (edges[1, i] - edges[0, i])).to(codes.dtype) for i in range(2))
    n = num_steps * num_steps
    latents = {name: m.expand(n, *m.shape[1:]).clone() for name, m in means.items()}
    z = latents[site].reshape(n, -1)
    z[:, dims[0]] = values[0].to(z).repeat_interleave(num_steps)
    z[:, dims[1]] = values[1].to(z).repeat(num_steps)
    latents[site] = z.reshape(latents[site].shape)
    images = decode_means(model, latents, x[base_index:base_index + 1].expand(n, *x.shape[1:]), obs_site)
    return LatentWalk(images.reshape(num_steps, num_steps, *images.shape[1:]), dims, values, site)


def save_latent_walk(walk, path, names=("", ""), shape=None, title=None):
    """Save a :class:`LatentWalk` as a PNG: rows walk ``dims[0]``, columns ``dims[1]``, axes labelled with
    ``names`` (what each dimension follows) and the values walked."""
    images = as_images(walk.images, shape)
    rows, steps = images.shape[:2]
    grid = image_grid(images.reshape(rows * steps, *images.shape[2:]), nrow=steps)
    h, w = images.shape[-2:]
    fig = Figure(figsize=(max(4.5, steps * 0.9), max(4.5, rows * 0.9) + 0.4))
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([2 + r * (h + 2) + h / 2 for r in range(rows)], [f"{v:.3g}" for v in walk.values[0].tolist()],
                  fontsize=7)
    ax.set_xticks([2 + s * (w + 2) + w / 2 for s in range(steps)], [f"{v:.3g}" for v in walk.values[1].tolist()],
                  fontsize=7)
    labels = [f"{walk.site}[{d}]" + (f"  ({name})" if name else "") for d, name in zip(walk.dims, names)]
    ax.set_ylabel(labels[0], fontsize=9)
    ax.set_xlabel(labels[1], fontsize=9)
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title or f"latent walk of {walk.site}[{walk.dims[0]}] (rows) and {walk.site}[{walk.dims[1]}] "
                 "(columns)", fontsize=9, pad=28)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def save_factor_latents(info, path, site="z", kl=None, highlight=()):
    """Heat map of I(z_j; v_k) / H(v_k): every latent dimension (columns) against every input (rows).

    ``info`` is a :class:`~pyrovae.evaluate.factors.FactorInformation` (plug-in
    MI, MIG's binning). A cell is the share of the input's entropy that the
    dimension carries, from 0 (nothing) to 1 (the dimension determines the
    discretised input); a row without a bright cell is an input no dimension
    captured. ``kl`` (a :class:`LatentKL` of the same site) adds each
    dimension's KL to its label; ``highlight`` is ``[(input name, dim)]`` cells
    to outline.
    """
    share = info.mi / info.entropy.clip(min=1e-12)[None, :]
    names, (num_dims, num_factors) = info.factor_names, share.shape
    fig = Figure(figsize=(1.2 + 0.55 * num_dims, 1.6 + 0.38 * num_factors))
    ax = fig.subplots()
    image = ax.imshow(share.T, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for k in range(num_factors):
        for j in range(num_dims):
            value = share[j, k]
            ax.text(j, k, f"{value:.2f}", ha="center", va="center", fontsize=6.5,
                    color="black" if value > 0.6 else "white")
    for name, dim in highlight:
        k = info.column(name)
        ax.add_patch(Rectangle((dim - 0.5, k - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    labels = [f"{site}[{j}]" for j in range(num_dims)]
    if kl is not None and kl.values.numel() == num_dims:
        labels = [f"{label}\n{float(v):.1f}" for label, v in zip(labels, kl.values)]
    ax.set_xticks(range(num_dims), labels, fontsize=7)
    ax.set_yticks(range(num_factors), [f"{n}  (H {h:.2f})" for n, h in zip(names, info.entropy)], fontsize=7)
    ax.set_xlabel(f"latent dimension{'  (KL in nats below)' if kl is not None else ''}", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.04, label="I(z_j; v_k) / H(v_k)")
    ax.set_title(f"share of each input's entropy carried by each dimension (plug-in, N = {info.num_points})",
                 fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
