"""Run folders: train from a configuration, reload a trained run exactly, and check that it is the same.

A run folder holds ``config.json`` (the configuration: :mod:`pyrovae.app.config`,
with the absolute path and hash of a user's pair file), the checkpoints and
their manifest (:class:`~pyrovae.infer.runfolder.RunFolder`), ``metrics.jsonl``,
``summary.json``, the pictures (:mod:`pyrovae.app.pictures`) and ``report.html``.

A reloaded run (:func:`load_run`) is everything that defines the pair: the
modules' state, the run's own Pyro parameter store (function-style pairs keep
their weights there), and its data. Its configuration is checked against the
copy inside the checkpoint, and its test ELBO is recomputed and compared with
``summary.json``: a run that does not reload to the numbers it trained to is an
error, never a table of wrong numbers.

Under torchrun (:mod:`pyrovae.infer.distributed`) every rank calls :func:`train`
and :func:`load_run`; rank 0 alone reads and writes the run folder and hands
what it read (configuration, checkpoints) and any error to the other ranks, so
only rank 0's machine needs the folder. Every rank loads the data itself.
"""

import json
import os
import time
import warnings
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from pyrovae.app import pictures
from pyrovae.app.build import build_pair, likelihood_name
from pyrovae.app.config import ConfigError, applicable, check_resume
from pyrovae.data import load_dataset
from pyrovae.evaluate.shape_check import shape_classifier, shape_summary
from pyrovae.infer import checkpoint as ckpt_io
from pyrovae.infer import distributed
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.iwae import IWAE
from pyrovae.infer.regularized import BetaVAE, ControlledCapacity, FreeBits
from pyrovae.infer.runfolder import RunFolder, RunFolderError
from pyrovae.infer.svi import DivergenceError, SVIRun, evaluate_elbo, load_param_store
from pyrovae.infer.trace import trace_pair
from pyrovae.util import error_line

SUMMARY_TOLERANCE = 1e-4  # nats per datum between a reloaded run's test ELBO and the one it reported


class RunError(RuntimeError):
    """A run folder whose files do not agree with each other or with the pair built from them."""


def dataset_for(cfg):
    """The configured dataset's splits (:func:`pyrovae.data.load_dataset`)."""
    return load_dataset(cfg["dataset"], cfg.get("data_dir"), cfg.get("binarize"), cfg.get("val_size"),
                        cfg.get("seed", 0), cfg.get("download", False), cfg.get("num_train"), cfg.get("num_test"),
                        cfg.get("condition_on"), cfg.get("num_labelled"))


def check_splits(data):
    """Validation and test data must have the training data's shape and keyword fields."""
    for name in ("val", "test"):
        split = getattr(data, name)
        if split.event_shape != data.train.event_shape:
            raise ValueError(f"the {name} data have shape {list(split.event_shape)} but the training data "
                             f"{list(data.train.event_shape)}")
        if sorted(split.keywords) != sorted(data.train.keywords):
            raise ValueError(f"the {name} data have fields {split.keywords} but the training data "
                             f"{data.train.keywords}")


# -- objectives ---------------------------------------------------------------------------------------------

FLAGS = {"beta": "--beta", "capacity": "--capacity", "free_bits": "--free-bits"}


def objective_from_config(cfg):
    """The objective a run configuration asks for with ``beta``, ``capacity`` or ``free_bits``, else None.

    ``capacity`` needs ``capacity_steps``; ``gamma`` defaults to 1000 (Burgess et
    al. 2018). Contradictory settings raise a ValueError naming the flags: two of
    these objectives at once, any of them with ``objective="iwae"``, ``dreg`` or
    ``warmup``, and ``capacity_steps`` or ``gamma`` without ``capacity``.
    """
    given = [key for key in FLAGS if cfg.get(key) is not None]
    if cfg.get("capacity") is None:
        orphans = [flag for key, flag in (("capacity_steps", "--capacity-steps"), ("gamma", "--gamma"))
                   if cfg.get(key) is not None]
        if orphans:
            raise ValueError(f"{' and '.join(orphans)} set the controlled-capacity objective: pass --capacity C too")
    if not given:
        return None
    flag = FLAGS[given[0]]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(FLAGS[k] for k in given)} are different objectives: choose one")
    conflicts = [f"--objective {cfg['objective']}"] if cfg.get("objective", "elbo") != "elbo" else []
    conflicts += [f"--{key}" for key in ("dreg", "warmup") if cfg.get(key)]
    if conflicts:
        raise ValueError(f"{flag} reshapes the ELBO's KL term and does not combine with {', '.join(conflicts)}")
    common = dict(analytic_kl=cfg.get("analytic_kl", True), num_particles=cfg.get("particles", 1))
    if given == ["beta"]:
        return BetaVAE(cfg["beta"], **common)
    if given == ["free_bits"]:
        return FreeBits(cfg["free_bits"], **common)
    if cfg.get("capacity_steps") is None:
        raise ValueError("--capacity needs --capacity-steps N: the number of SVI steps over which the target KL "
                         "rises from 0 to the capacity")
    gamma = 1000.0 if cfg.get("gamma") is None else cfg["gamma"]
    return ControlledCapacity(cfg["capacity"], cfg["capacity_steps"], gamma, **common)


def make_objective(cfg):
    """``elbo``: :class:`~pyrovae.infer.elbo.ELBO`; ``iwae``: the K-sample bound (K = ``particles``).

    ``beta``, ``capacity`` or ``free_bits`` pick an objective of :mod:`pyrovae.infer.regularized` instead.
    """
    regularized = objective_from_config(cfg)
    if regularized is not None:
        return regularized
    if cfg["objective"] == "iwae":
        if cfg.get("warmup"):
            raise ValueError("--warmup anneals the ELBO's KL term; the IWAE objective has none to anneal")
        return IWAE(num_particles=cfg["particles"], dreg=cfg.get("dreg", False))
    if cfg.get("dreg"):
        raise ValueError("--dreg applies to --objective iwae only")
    return ELBO(analytic_kl=cfg.get("analytic_kl", True), num_particles=cfg.get("particles", 1),
                warmup=cfg.get("warmup", 0))


# -- a run, reloaded ------------------------------------------------------------------------------------------

@dataclass
class Run:
    """A run folder's pair with everything that defines it: ``cfg``, ``model``, ``guide``, ``data`` (its
    splits) and ``param_state`` (its Pyro parameter store; evaluate inside :meth:`scope`)."""

    folder: str
    cfg: dict
    model: object
    guide: object
    data: object
    param_state: dict

    def scope(self):
        """``with run.scope():`` Pyro's param store holds this run's parameters."""
        return pyro.get_param_store().scope(self.param_state)

    @property
    def device(self):
        return self.cfg.get("device", "cpu")


def read_config(run_dir):
    """The run's ``config.json``; clear errors for a folder that is no run and for a damaged file."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"no run folder {run_dir!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} is not a pyrovae run folder (no config.json)")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or "model" not in cfg or "dataset" not in cfg:
        raise RunError(f"{path} lacks the run's model and dataset; was it written by pyrovae?")
    if cfg["model"] is None:
        raise RunError(f"{path} names no model: the run was trained in Python from a pair pyrovae cannot import "
                       "again; give SVIRun config={'model': 'path/to/file.py:Name', 'dataset': ...}")
    return cfg


def _verify_config(cfg, saved, path):
    """The config file must agree with the copy inside the checkpoint (keys that both hold)."""
    differ = sorted(k for k in set(cfg) & set(saved) if k not in ("out", "device", "step_mode")
                    and json.dumps(cfg[k], sort_keys=True) != json.dumps(saved[k], sort_keys=True))
    if differ:
        detail = ", ".join(f"{k}: config.json {cfg[k]!r}, checkpoint {saved[k]!r}" for k in differ[:6])
        raise RunError(f"config.json disagrees with the configuration saved in {path} ({detail}); config.json was "
                       "edited after training: restore it, or train a new run")


def load_run(run_dir, which="best", verify=True):
    """A :class:`Run` with the ``best`` (or ``last``) checkpoint loaded, its pair, data and param store.

    With ``verify`` (and a ``summary.json`` from a finished training), the
    test ELBO of the reloaded best checkpoint is recomputed and must equal the
    one the run reported; a difference is a :class:`RunError`.
    """
    cfg, path, state = distributed.current().on_main(lambda: _read_run(run_dir, which))
    data = dataset_for(cfg)
    model, guide, _ = build_pair(cfg, data.train)
    for m in (model, guide):
        if isinstance(m, torch.nn.Module):
            m.to(cfg.get("device", "cpu"))
    run = Run(os.path.abspath(run_dir), cfg, model, guide, data, {"params": {}, "constraints": {}})
    with run.scope():
        store = _register_params(run)
        ckpt_io.load_pair_state(model, guide, state["pair"], path)
        load_param_store(store, state.get("param_store", {}), path)
    if verify and which == "best":
        _verify_summary(run)
    return run


def _read_run(run_dir, which):
    """The configuration, the checkpoint's path and its state, checked against each other."""
    cfg = read_config(run_dir)
    path = RunFolder(run_dir).checkpoint(which)
    state = ckpt_io.load(path)
    if "pair" not in state or "config" not in state:
        raise ckpt_io.CheckpointError(f"{path} lacks the pair's state; it is not a complete pyrovae checkpoint")
    _verify_config(cfg, state["config"], path)
    return cfg, path, state


def _register_params(run):
    """Run the pair once (no gradient) so that its ``pyro.param`` s exist in the run's store; ``{name: tensor}``."""
    batch = run.data.test.fixed(0).materialize(torch.arange(min(2, len(run.data.test)))).to(run.device)
    with poutine.trace(param_only=True) as tr, torch.no_grad(), poutine.block(hide_types=["sample"]):
        trace_pair(run.model, run.guide, batch.x, **batch.kwargs)
    return {name: site["value"].unconstrained() for name, site in tr.trace.nodes.items()}


def _verify_summary(run):
    summary = distributed.current().on_main(lambda: read_summary(run.folder))
    if not summary or summary.get("status") != "finished" or summary.get("test_elbo") is None:
        return
    with run.scope():
        elbo = evaluate_elbo(run.model, run.guide, run.data.test, device=run.device, seed=run.cfg.get("seed", 0))
    if not abs(elbo - summary["test_elbo"]) <= SUMMARY_TOLERANCE * max(1.0, abs(elbo)):
        raise RunError(f"the reloaded run gives test ELBO {elbo:.4f} but its summary.json says "
                       f"{summary['test_elbo']:.4f}: the pair built from config.json is not the pair that was "
                       "trained (a changed pair file or library?)")


def read_summary(run_dir):
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is not valid JSON: {e}") from None


# -- training -----------------------------------------------------------------------------------------------

def train(cfg, resume=False, progress=True):
    """Train the configured pair into the run folder ``cfg["out"]``; returns the summary dict.

    The folder is locked first (an unwritable folder or a second writer fails
    before any data is loaded). With ``resume`` the run continues from its last
    checkpoint; options given now must agree with the run's (``--epochs`` and
    the others of :data:`pyrovae.app.config.RESUMABLE` may change). The summary,
    the pictures (each one skipped with a one-line warning when the pair cannot
    draw it) and the report are written after training; a diverged run writes a
    summary with the reason and raises :class:`~pyrovae.infer.svi.DivergenceError`.
    """
    world = distributed.init(cfg.get("device", "cpu"))
    folder = RunFolder(cfg["out"])
    world.on_main(lambda: folder.lock() and None)
    try:
        cfg = world.on_main(lambda: _open_run(folder, cfg, resume))  # rank 0's: a default --out names a time
        return _train(RunFolder(cfg["out"]) if not world.is_main else folder, cfg, resume, progress, world)
    finally:
        if world.is_main:
            folder.unlock()


def _open_run(folder, cfg, resume):
    """The configuration to train: the resumed run's with the options given now, or ``cfg`` for a new run."""
    if resume:
        saved = read_config(folder.path)
        given = {k: cfg[k] for k in cfg.get("given", ())}
        return check_resume(saved, given)
    if folder.has_checkpoint() or os.path.exists(folder.file("config.json")):
        raise RunFolderError(f"{folder.path} already holds a run; pass --resume to continue it or choose another "
                             "--out")
    return cfg


def _train(folder, cfg, resume, progress, world):
    data = dataset_for(cfg)
    check_splits(data)
    pyro.set_rng_seed(cfg["seed"])
    if ":" not in str(cfg["model"]) and not cfg.get("likelihood"):
        cfg = {**cfg, "likelihood": likelihood_name(cfg, data.train)}  # the data-dependent default, recorded
    model, guide, sources = build_pair(cfg, data.train)
    cfg = {**cfg, "sources": sources, "event_shape": list(data.event_shape)}
    objective = make_objective(cfg)
    if not resume:
        world.on_main(lambda: ckpt_io.write_json(folder.file("config.json"), cfg))
    run = SVIRun(model, guide, data.train, data.val, objective, lr=cfg["lr"], lr_decay=cfg["lr_decay"],
                 lr_decay_after=cfg["lr_decay_after"], batch_size=cfg["batch_size"], epochs=cfg["epochs"],
                 clip_norm=cfg["clip_norm"], patience=cfg["patience"], batching=cfg["batching"],
                 ignore_before_epoch=cfg["warmup"], seed=cfg["seed"], device=cfg["device"], run_dir=folder, config=cfg,
                 step_mode=cfg["step_mode"], progress=progress, max_bad_steps=cfg["max_bad_steps"])
    start = time.perf_counter()
    try:
        run.fit(resume=resume)
    except DivergenceError as e:
        world.on_main(lambda: ckpt_io.write_json(folder.file("summary.json"), {
            "status": "diverged", "reason": str(e), "epochs_run": run.epoch}))
        raise
    wall = time.perf_counter() - start
    loaded = Run(folder.path, cfg, model, guide, data, run.param_state)
    path, best = world.on_main(lambda: (folder.checkpoint("best"), ckpt_io.load(folder.checkpoint("best"))))
    with loaded.scope():
        ckpt_io.load_pair_state(model, guide, best["pair"], path)
        load_param_store(run._store_names, best.get("param_store", {}), path)
        test_elbo = evaluate_elbo(model, guide, data.test, device=cfg["device"], seed=cfg["seed"])
    summary = {"status": "finished", "test_elbo": test_elbo, "epochs_run": run.epoch, "train_seconds": wall,
               "num_test": len(data.test), "best_val_elbo": run.best_val, "step_mode": run.step_fn.mode,
               "ranks": world.size, **({"eager_because": run.step_fn.reason} if run.step_fn.reason else {})}
    return world.on_main(lambda: _finish(folder, loaded, summary))


def _finish(folder, loaded, summary):
    """Rank 0, after training: the pictures, ``summary.json`` and the report (drawn as a single process)."""
    from pyrovae.app.report import write_report

    with distributed.local(), loaded.scope():
        summary = {**summary, **pictures.write_run_pictures(loaded, overwrite=True)}
        summary.update(shape_check(loaded))
        ckpt_io.write_json(folder.file("summary.json"), summary)
        write_report(folder.path, run=None, pictures=False)
    return summary


def shape_check(run, num=1000):
    """The shape figures of a run on ``shapes``; ``{}`` for other data.

    :func:`pyrovae.evaluate.shape_check.shape_summary` of the run's pair on the
    first ``num`` test images, judged by the classifier of seed 0 (the same judge
    for every run), trained here in this process (nothing cached on disk), with
    ``shape_check_seconds`` (classifier and figures). A pair that takes keyword
    fields, or cannot be read, gets ``shape_check_skipped`` (why) and a warning
    instead. The run's param store must be in scope (``with run.scope():``).
    """
    if run.cfg.get("dataset") != "shapes":
        return {}
    if run.data.test.keywords:
        return {"shape_check_skipped": "the pair takes keyword fields; the shape check reads x alone"}
    start = time.perf_counter()
    try:
        figures = shape_summary(run.model, run.guide, run.data.test, num=num, seed=run.cfg.get("seed", 0),
                                classifier=shape_classifier(0))
    except (ValueError, RuntimeError, TypeError, NotImplementedError, KeyError, IndexError) as e:
        reason = error_line(e)
        warnings.warn(f"no shape check: {reason}", stacklevel=2)
        return {"shape_check_skipped": reason}
    return {**figures, "shape_check_seconds": time.perf_counter() - start}


def config_view(cfg):
    """What applies to the pair trained, for the report (user pairs: the options given and the data's)."""
    view = applicable(cfg)
    return {k: v for k, v in view.items() if k not in ("given", "sources")}


__all__ = ["ConfigError", "Run", "RunError", "config_view", "dataset_for", "load_run",
           "make_objective", "objective_from_config", "read_config", "shape_check", "train"]
