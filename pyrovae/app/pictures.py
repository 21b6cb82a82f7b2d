"""The pictures of a run folder, drawn from a reloaded run (:class:`pyrovae.app.runs.Run`).

Each picture is drawn on its own: one the pair cannot make (a model without a
mean to show, data that are not images) is skipped with a one-line warning
naming why, and the others are still drawn. Pictures need image data
``[C, H, W]``, or flat data with ``image_shape`` in the run's configuration.
All use the first ``num_points`` test data (dynamic binarization drawn once
with the run's seed) and a random state forked from the global one, except
the two pictures of a dataset drawn from known inputs (``shapes``, ``rivers``,
dSprites): the factor-by-latent heat map and the latent walk read a fresh
sample of ``num_factor_points`` data with their inputs
(:func:`ground_truth_sample`, :func:`factor_information`).
"""

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from pyrovae.app import viz
from pyrovae.data import GROUND_TRUTH, SPLIT_SEED_OFFSETS, ground_truth, rivers
from pyrovae.data.shapes import FACTOR_NAMES
from pyrovae.evaluate.factors import factor_latent_information
from pyrovae.util import error_line

PICTURES = {  # file name -> caption, in the order shown
    "training_curves.png": "Training curves: the training bound (mean over each epoch's batches) and the "
                           "validation ELBO at the end of each epoch.",
    "samples.png": "Samples: the mean of p(x|z) for z ~ p(z).",
    "aggregate_samples.png": "Samples of the aggregate posterior: the mean of p(x|z) for z ~ q(z|x_n), n a "
                             "random test datum. Where these look right and the prior's samples do not, the "
                             "prior puts mass where q(z) = (1/N) sum_n q(z|x_n) has none (holes).",
    "reconstructions.png": "Test inputs (odd rows) and the mean of p(x|z), z ~ q(z|x) (even rows).",
    "traversals.png": "Latent traversals: one test input's guide means, one dimension swept at a time "
                      "over the prior's mean +- 3 sd; rows by decreasing KL per dimension.",
    "interpolations.png": "Interpolations: decoded straight lines between the guide means of two test "
                          "inputs (shown at both ends).",
    "latent_scatter.png": "Guide means of test data in the two latent dimensions of largest KL, coloured "
                          "by label or ground-truth factor.",
    "factor_latents.png": "Which dimension captured what: the plug-in mutual information I(z_j; v_k) of every "
                          "latent dimension (guide means) with every input of the data, as a share of the "
                          "input's entropy H(v_k), on a fresh sample of the data with its inputs; a row without "
                          "a bright cell is an input no dimension captured. Outlined: the walked dimensions.",
    "latent_walk.png": "Latent walk: two latent dimensions walked together from one input's guide means, each "
                       "over the range (2% to 98% quantiles) its guide means take on the sample; they are the "
                       "dimensions most informative about the inputs named on the axes.",
}
# the inputs whose dimensions the latent walk shows; other datasets: the two best captured
WALK_FACTORS = {"rivers": ("grass", "net_curvature")}
FACTOR_POINTS = 4000  # data with known inputs read by the factor pictures
_FACTOR_PICTURES = ("factor_latents.png", "latent_walk.png")
_FAILURES = (ValueError, RuntimeError, TypeError, NotImplementedError, KeyError, IndexError)


def picture_shape(cfg, event_shape):
    """The image shape pictures use: the data's own ``[C, H, W]``, or ``image_shape`` for flat data, else None."""
    if len(event_shape) == 3:
        return None
    shape = cfg.get("image_shape")
    if shape and int(torch.Size(shape).numel()) == int(torch.Size(event_shape).numel()):
        return tuple(shape)
    raise ValueError(f"pictures need image data [C, H, W]; the data are {list(event_shape)}: give image_shape "
                     "(--image-shape C H W) for flat data")


def ground_truth_sample(cfg, num):
    """``num`` data of the run's dataset with their inputs: ``(x [num, C, H, W], table [num, F], names)``.

    ``rivers``: pictures 0 .. num-1 of the test split's stream (seed + 20,011,
    held out from training; the test split is their first ``num_test``), with the
    14 columns of :meth:`~pyrovae.data.rivers.RiverInputs.table` -- every input,
    the eight turns and the summaries net curvature and final heading.
    ``shapes`` and dSprites: ``num`` draws from the factor grid (the test split's
    seed), with the factor indices.
    """
    name, seed = cfg["dataset"], cfg.get("seed", 0) + SPLIT_SEED_OFFSETS[2]
    if name not in GROUND_TRUTH:
        raise ValueError(f"dataset {name!r} has no known inputs; expected one of {list(GROUND_TRUTH)}")
    if name == "rivers":
        images, _, inputs = rivers.load_split(num, seed)
        table, names = inputs.table()
        return torch.from_numpy(images).float().div_(255.0), table, names
    truth = ground_truth(name, cfg.get("data_dir"))
    factors, images = truth.sample(num, np.random.default_rng(seed))
    return torch.as_tensor(images).float(), np.asarray(factors, dtype=np.float64), tuple(truth.factor_names)


@dataclass
class FactorReading:
    """A run's codes read against the inputs of its data: ``x`` the sample, ``codes`` ``[N, D]`` the guide means
    of latent ``site``, ``info`` their :class:`~pyrovae.evaluate.factors.FactorInformation` with the inputs."""

    x: torch.Tensor
    site: str
    codes: torch.Tensor
    info: object


def factor_information(run, num_points=FACTOR_POINTS, site=None):
    """:class:`FactorReading` of a reloaded run on :func:`ground_truth_sample` (``num_points`` data).

    The run's param store must be in scope (``with run.scope():``).
    """
    x, table, names = ground_truth_sample(run.cfg, num_points)
    if tuple(x.shape[1:]) != tuple(run.data.event_shape):
        raise ValueError(f"the {run.cfg['dataset']} images have shape {list(x.shape[1:])} but the run's data "
                         f"{list(run.data.event_shape)}")
    x = x.to(run.device)
    site, codes = viz.latent_codes(run.guide, x, site)
    info = factor_latent_information(codes.double().cpu().numpy(), table, names)
    return FactorReading(x, site, codes, info)


def _factor_pictures(run, wanted, num_points, kl, attempt, path):
    """Draw the factor-by-latent heat map and the latent walk of a run on data with known inputs."""
    reading = factor_information(run, num_points)
    info = reading.info
    factors = WALK_FACTORS.get(run.cfg["dataset"]) or viz.best_captured_factors(info)
    walked = viz.walk_dims(info, factors)
    kl = kl if kl is not None and kl.site == reading.site else None
    if "factor_latents.png" in wanted:
        attempt("factor_latents.png", viz.save_factor_latents, info, path("factor_latents.png"), site=reading.site,
                kl=kl, highlight=[(w["factor"], w["dim"]) for w in walked])
    if "latent_walk.png" in wanted:
        attempt("latent_walk.png", _save_walk, run, reading, walked, path("latent_walk.png"))


def _save_walk(run, reading, walked, path):
    walk = viz.latent_walk(run.model, run.guide, reading.x, [w["dim"] for w in walked], site=reading.site,
                           codes=reading.codes)
    names = [f"{w['factor']}: {w['mi']:.2f} nats, {100 * w['share']:.0f}% of H" for w in walked]
    return viz.save_latent_walk(walk, path, names=names)


def _attempt(name, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
        return None
    except _FAILURES as e:
        reason = error_line(e)
        warnings.warn(f"no {name}: {reason}", stacklevel=2)
        return reason


def write_run_pictures(run, overwrite=False, num_points=500, max_dims=10, num_factor_points=FACTOR_POINTS):
    """Draw the pictures of :data:`PICTURES` that the run folder lacks (all with ``overwrite``).

    The factor-by-latent heat map and the latent walk are drawn for datasets
    with known inputs only (:data:`pyrovae.data.GROUND_TRUTH`), from
    ``num_factor_points`` data.

    Returns ``{"pictures": [names drawn], "pictures_skipped": {name: why}}``.
    The run's param store must be in scope (``with run.scope():``).
    """
    folder, cfg = run.folder, run.cfg

    def path(name):
        return os.path.join(folder, name)

    wanted = [n for n in PICTURES if (overwrite or not os.path.exists(path(n)))
              and (n not in _FACTOR_PICTURES or cfg.get("dataset") in GROUND_TRUTH)]
    drawn, skipped = [], {}

    def attempt(name, fn, *args, **kwargs):
        why = _attempt(name, fn, *args, **kwargs)
        if why is None:
            drawn.append(name)
        else:
            skipped[name] = why

    metrics = path("metrics.jsonl")
    if "training_curves.png" in wanted and os.path.exists(metrics):
        attempt("training_curves.png", viz.save_training_curves, metrics, path("training_curves.png"))
    wanted = [n for n in wanted if n != "training_curves.png"]
    if not wanted:
        return {"pictures": drawn, "pictures_skipped": skipped}
    try:
        shape = picture_shape(cfg, run.data.event_shape)
    except ValueError as e:
        warnings.warn(f"no pictures of the pair: {e}", stacklevel=2)
        return {"pictures": drawn, "pictures_skipped": {**skipped, **{n: str(e) for n in wanted}}}
    split = run.data.test.fixed(cfg.get("seed", 0))
    n = min(num_points, len(split))
    batch = split.materialize(torch.arange(n)).to(run.device)
    x, kwargs = batch.x, batch.kwargs
    labels = None if split.labels is None else split.labels[:n]
    half = min(4, n // 2)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.get("seed", 0))
        if "reconstructions.png" in wanted:
            attempt("reconstructions.png", viz.save_reconstructions, run.model, run.guide, x[:32],
                    path("reconstructions.png"), shape=shape, **_rows(kwargs, 32))
        if "samples.png" in wanted:
            attempt("samples.png", _save_samples, run.model, x[:64], path("samples.png"), shape, **_rows(kwargs, 64))
        if "aggregate_samples.png" in wanted:
            pick = torch.randperm(n)[:64]
            attempt("aggregate_samples.png", _save_aggregate_samples, run.model, run.guide, x[pick],
                    path("aggregate_samples.png"), shape, **_rows(kwargs, pick))
        if kwargs:  # the latent pictures decode guide means with the data alone
            for name in ("traversals.png", "interpolations.png", "latent_scatter.png", *_FACTOR_PICTURES):
                if name in wanted:
                    skipped[name] = "the pair takes keyword fields; latent pictures need it to take x alone"
            return {"pictures": drawn, "pictures_skipped": skipped}
        kl = None
        if {"traversals.png", "latent_scatter.png", "factor_latents.png"} & set(wanted):  # computed once
            try:
                kl = viz.kl_per_dimension(run.model, run.guide, x)
            except _FAILURES as e:
                warnings.warn(f"no KL per dimension for the latent pictures: {type(e).__name__}: {e}", stacklevel=2)
        if "traversals.png" in wanted:
            attempt("traversals.png", viz.save_traversals, run.model, run.guide, x, path("traversals.png"),
                    shape=shape, max_dims=max_dims, kl=kl)
        if "interpolations.png" in wanted and half >= 1:
            attempt("interpolations.png", viz.save_interpolations, run.model, run.guide, x[:half], x[half:2 * half],
                    path("interpolations.png"), shape=shape)
        if "latent_scatter.png" in wanted:
            attempt("latent_scatter.png", viz.save_latent_scatter, run.model, run.guide, x, labels,
                    path("latent_scatter.png"), label_names=None if labels is None else _label_names(cfg, labels),
                    kl=kl)
        factor_pictures = [n for n in _FACTOR_PICTURES if n in wanted]
        if factor_pictures:
            why = _attempt(" and ".join(factor_pictures), _factor_pictures, run, factor_pictures, num_factor_points, kl,
                           attempt, path)
            skipped.update({n: why for n in factor_pictures if why is not None})
    return {"pictures": drawn, "pictures_skipped": skipped}


def _rows(kwargs, rows):
    """The keyword fields' rows: the first ``rows`` (an int) or those indexed by ``rows``."""
    index = slice(rows) if isinstance(rows, int) else rows
    return {k: None if v is None else v[index] for k, v in kwargs.items()}


def _save_samples(model, x, path, shape, **kwargs):
    viz.save_grid(viz.sample_means(model, x, **kwargs), path, title="samples: mean of p(x|z), z ~ p(z)", shape=shape)


def _save_aggregate_samples(model, guide, x, path, shape, **kwargs):
    viz.save_grid(viz.reconstruction_means(model, guide, x, **kwargs), path, shape=shape,
                  title="aggregate posterior samples: mean of p(x|z), z ~ q(z|x_n)")


def _label_names(cfg, labels):
    """Names for the label columns of a run's dataset: the factors of ``shapes``, else ``class``."""
    if labels.dim() == 2:
        if cfg.get("dataset") == "shapes":
            return list(FACTOR_NAMES)
        if cfg.get("dataset") == "rivers":
            return list(rivers.FACTOR_NAMES)
        return [f"factor {i}" for i in range(labels.shape[1])]
    return ["class"]
