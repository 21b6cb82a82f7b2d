"""Run folders: train from a configuration, reload a trained pair, evaluate it.

A run folder holds ``config.json``, ``last.pt`` and ``best.pt``,
``metrics.jsonl``, ``samples.png``, ``reconstructions.png``,
``summary.json``, the pictures of :mod:`pyrovae.app.report` and ``report.html``.
"""

import json
import os
import time
import warnings

import pyro
import torch

from pyrovae.infer import checkpoint as ckpt_io
from pyrovae.app import viz
from pyrovae.app.build import build_pair
from pyrovae.data import load_dataset
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.regularized import BetaVAE, ControlledCapacity, FreeBits
from pyrovae.infer.svi import SVIRun, evaluate_elbo

DEFAULTS = {
    "model": "vae", "guide": "gaussian", "dataset": "shapes", "data_dir": None, "download": False,
    "binarize": None, "num_train": None, "num_test": None, "val_size": None,
    "arch": "mlp", "hidden": None, "activation": "relu", "latent_dim": 10, "likelihood": "bernoulli",
    "levels": None, "prior": "standard", "components": None, "prior_init": "random", "warmup": 0,
    "objective": "elbo", "analytic_kl": True, "particles": 1, "dreg": False,
    "beta": None, "capacity": None, "capacity_steps": None, "gamma": None, "free_bits": None,
    "epochs": 20, "batch_size": 128, "lr": 1e-3, "clip_norm": None, "patience": None, "seed": 0,
    "device": "cpu", "step_mode": "graph", "out": None,
}


def make_config(**overrides):
    """A full run configuration: :data:`DEFAULTS` updated with ``overrides`` (unknown keys are errors)."""
    unknown = sorted(set(overrides) - set(DEFAULTS) - {"image_shape"})
    if unknown:
        raise ValueError(f"unknown configuration keys {unknown}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    if cfg["binarize"] is None and cfg["dataset"] not in ("shapes", "dsprites") and cfg["likelihood"] == "bernoulli":
        cfg["binarize"] = "dynamic"
    if cfg["out"] is None:
        cfg["out"] = os.path.join("runs", f"{cfg['dataset']}-{cfg['model']}-{time.strftime('%Y%m%d-%H%M%S')}")
    return cfg


def dataset_for(cfg):
    return load_dataset(cfg["dataset"], cfg["data_dir"], cfg["binarize"], cfg["val_size"], cfg["seed"],
                        cfg["download"], cfg["num_train"], cfg["num_test"])


# configuration keys (``pyrovae train`` flags) that choose one of the objectives above
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


OBJECTIVES = ("elbo", "iwae")


def make_objective(cfg):
    """``elbo``: :class:`~pyrovae.infer.elbo.ELBO`; ``iwae``: the K-sample bound (K = ``particles``).

    ``beta``, ``capacity`` or ``free_bits`` pick an objective of :mod:`pyrovae.infer.regularized` instead.
    """
    regularized = objective_from_config(cfg)
    if regularized is not None:
        return regularized
    if cfg["objective"] == "iwae":
        from pyrovae.infer.iwae import IWAE

        if cfg["warmup"]:
            raise ValueError("--warmup anneals the ELBO's KL term; the IWAE objective has none to anneal")
        return IWAE(num_particles=cfg["particles"], dreg=cfg["dreg"])
    if cfg["objective"] != "elbo":
        raise ValueError(f"unknown objective {cfg['objective']!r}; expected one of {OBJECTIVES}")
    if cfg["dreg"]:
        raise ValueError("--dreg applies to --objective iwae only")
    return ELBO(analytic_kl=cfg["analytic_kl"], num_particles=cfg["particles"], warmup=cfg["warmup"])


def train(cfg, resume=False, progress=True):
    """Train the configured pair into the run folder ``cfg["out"]``; returns the summary dict."""
    out = cfg["out"]
    if resume:
        saved = read_config(out)
        saved.update({k: cfg[k] for k in ("epochs", "patience", "device", "step_mode")})
        cfg = saved
    elif os.path.exists(os.path.join(out, "last.pt")):
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    data = dataset_for(cfg)
    cfg["image_shape"] = list(data.image_shape)
    pyro.set_rng_seed(cfg["seed"])
    model, guide = build_pair(cfg, data.train)
    os.makedirs(out, exist_ok=True)
    ckpt_io.write_json(os.path.join(out, "config.json"), cfg)
    run = SVIRun(model, guide, data.train, data.val, make_objective(cfg), lr=cfg["lr"],
                 batch_size=cfg["batch_size"], epochs=cfg["epochs"], clip_norm=cfg["clip_norm"],
                 patience=cfg["patience"], ignore_before_epoch=cfg["warmup"], seed=cfg["seed"],
                 device=cfg["device"], run_dir=out, config=cfg,
                 step_mode=cfg["step_mode"], progress=progress)
    start = time.perf_counter()
    run.fit(resume=resume)
    wall = time.perf_counter() - start
    best = os.path.join(out, "best.pt")
    if os.path.exists(best):
        ckpt_io.load_pair_state(model, guide, ckpt_io.load(best)["pair"], best)
    summary = {"test_elbo": evaluate_elbo(model, guide, data.test, device=cfg["device"], seed=cfg["seed"]),
               "epochs_run": run.epoch, "train_seconds": wall, "num_test": len(data.test),
               "best_val_elbo": run.best_val}
    write_pictures(model, guide, data.test, out, cfg["device"])
    ckpt_io.write_json(os.path.join(out, "summary.json"), summary)
    from pyrovae.app.report import write_report  # report imports this module

    write_report(out, run=(cfg, model, guide, data))
    return summary


def write_pictures(model, guide, split, out, device="cpu"):
    """``samples.png`` and ``reconstructions.png`` in the run folder."""
    batch = split.fixed(0).materialize(torch.arange(min(32, len(split)))).to(device)
    viz.save_reconstructions(model, guide, batch.x, os.path.join(out, "reconstructions.png"), **batch.kwargs)
    like = split.fixed(0).materialize(torch.arange(min(64, len(split)))).to(device)
    viz.save_grid(viz.sample_means(model, like.x, **like.kwargs), os.path.join(out, "samples.png"),
                  title="samples: mean of p(x|z), z ~ p(z)")


def read_config(run_dir):
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} is not a pyrovae run folder (no config.json)")
    with open(path) as f:
        return json.load(f)


def load_run(run_dir, which="best"):
    """``(cfg, model, guide, dataset)`` of a run folder, with the ``best`` (or ``last``) parameters."""
    cfg = read_config(run_dir)
    data = dataset_for(cfg)
    model, guide = build_pair(cfg, data.train)
    path = os.path.join(run_dir, f"{which}.pt")
    state = ckpt_io.load(path)
    ckpt_io.load_pair_state(model, guide, state["pair"], path)
    for m in (model, guide):
        if isinstance(m, torch.nn.Module):
            m.to(cfg["device"]).eval()
    return cfg, model, guide, data
