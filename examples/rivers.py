"""The rivers experiment: does a VAE find the grass colour and the river's net curvature?

A seed chapter trains a VAE on cartoon aerial views of rivers drawn by a script
whose inputs are known (:mod:`pyrovae.data.rivers`) and, walking two latent
dimensions, finds one that sets the grass colour and one that bends the whole
river left or right -- a global mode that no single input of the script sets:
the script draws eight independent left/right turns, and the overall bend is
their sum, the net curvature. This script measures that claim.

It trains a conv VAE and a beta-VAE (beta = 4, Higgins et al. 2017) with the
same budget (``pyrovae.app.runs.train``, the code of ``pyrovae train --dataset
rivers``), by default side by side, one process and one core each. For each run
it then reads the guide means of ``FACTOR_POINTS`` held-out pictures against
the script's inputs (:func:`pyrovae.app.pictures.factor_information`: the
plug-in mutual information of every dimension with every input, MIG's binning,
:mod:`pyrovae.evaluate.factors`) and writes into the run folder

- ``rivers_finding.json`` (:func:`rivers_finding`): the dimension most
  informative about the grass colour and the one most informative about the net
  curvature, each with its MI and the runner-up's, and whether the curvature
  dimension is better explained by the net curvature than by any single turn
  (:func:`pyrovae.evaluate.factors.curvature_vs_turns`, bias-corrected MI);
- ``disentanglement.json``: MIG, DCI and SAP on the rivers factor grid
  (:mod:`pyrovae.evaluate.disentangle`, disentanglement_lib's definitions);
- ``report.html``, which shows both, with the factor-by-latent heat map
  (``factor_latents.png``) and the latent walk of the grass and curvature
  dimensions (``latent_walk.png``) that every rivers run's report has.

    python examples/rivers.py [--out runs/rivers] [--epochs 12] [--num-train 12000] [--seed 0]

The default budget (12,000 pictures, 12 epochs of batches of 64: 2,256 SVI steps)
takes about 7 minutes of CPU time per run (6.8 and 7.3 measured), so about 8
minutes of wall time for both runs on 2 unloaded cores; the metrics and reports
add a few minutes. Both runs then reconstruct the river's position, heading,
bends and width (not the trees): the conv networks' He initialisation and the
discretized logistic's initial scale 0.3 (:mod:`pyrovae.nn.nets`,
:mod:`pyrovae.nn.likelihoods`; issue 14). The
script prints, and the finding records, the CPU time (``time.process_time``)
and the wall time of each training: on a shared machine the wall time is
inflated by the other jobs, the CPU time much less.
"""

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import torch

from pyrovae.app.config import make_config
from pyrovae.app.pictures import FACTOR_POINTS, factor_information
from pyrovae.app.report import write_report
from pyrovae.app.runs import load_run, train
from pyrovae.data import RiversFactors
from pyrovae.evaluate.disentangle import compute_all, mean_representation
from pyrovae.evaluate.factors import curvature_vs_turns, most_informative_dims
from pyrovae.infer.checkpoint import write_json
from pyrovae.nn.likelihoods import bits_per_dim

DOMINANCE = 2.0  # "one dimension controls v": I(z_best; v) >= DOMINANCE * I(z_runner-up; v)
METRICS = ("mig", "dci", "sap")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("runs", "rivers"), help="folder for the two run folders")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--num-train", type=int, default=12_000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--beta", type=float, default=4.0, help="the beta of the beta-VAE compared with the VAE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--num-test", type=int, default=1000)
    p.add_argument("--metric-points", type=int, default=10_000,
                   help="training points of MIG, DCI and SAP (their test points: half); disentanglement_lib's 10000")
    p.add_argument("--jobs", type=int, default=2, choices=(1, 2),
                   help="train the two runs side by side (2, one core each) or one after the other (1)")
    return p.parse_args(argv)


def rivers_finding(info):
    """The seed's claim, measured on a :class:`~pyrovae.evaluate.factors.FactorInformation` of a rivers code.

    For ``grass`` and ``net_curvature``: the most informative dimension and the
    runner-up (:func:`~pyrovae.evaluate.factors.most_informative_dims`, MI in
    nats), with ``share`` = I / H(v) and ``dominant`` = the best dimension
    carries at least ``DOMINANCE`` times the runner-up's MI (one dimension, not
    several, follows the input); ``curvature_vs_turns``: whether the curvature
    dimension is better explained by the net curvature than by any single turn
    (bias-corrected MI); ``curvature_dim_inputs``: the three inputs the
    curvature dimension carries the largest share of. ``seed_claim_holds``: the
    two dimensions differ, both are dominant, and the net curvature explains
    the curvature dimension better than any turn does.
    """
    picks = most_informative_dims(info, ["grass", "net_curvature"])
    for name, pick in picks.items():
        h = info.entropy[info.column(name)]
        pick["share"] = pick["mi"] / h if h > 0 else 0.0
        pick["dominant"] = bool(pick["mi"] >= DOMINANCE * pick["runner_up_mi"])
    versus = curvature_vs_turns(info)
    dim = picks["net_curvature"]["dim"]
    share = info.mi[dim] / info.entropy.clip(min=1e-12)
    top = np.argsort(-share, kind="stable")[:3]
    distinct = picks["grass"]["dim"] != dim
    holds = (distinct and picks["grass"]["dominant"] and picks["net_curvature"]["dominant"]
             and versus["curvature_explains_better"])
    return {"grass": picks["grass"], "net_curvature": picks["net_curvature"], "curvature_vs_turns": versus,
            "curvature_dim_inputs": {info.factor_names[k]: float(share[k]) for k in top},
            "distinct_dims": bool(distinct), "seed_claim_holds": bool(holds), "num_points": info.num_points,
            "units": "nats: plug-in mutual information, MIG's 20 equal-width bins per dimension"}


def _train(cfg):
    """Train one run in this process on one thread; its summary with the CPU and wall seconds it took."""
    torch.set_num_threads(1)
    cpu, wall = time.process_time(), time.perf_counter()
    summary = train(cfg, progress=False)
    return {**summary, "cpu_seconds": time.process_time() - cpu, "wall_seconds": time.perf_counter() - wall}


def _configs(args):
    common = dict(dataset="rivers", num_train=args.num_train, val_size=args.val_size, num_test=args.num_test,
                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, latent_dim=args.latent_dim,
                  seed=args.seed)
    return {"vae": make_config(**common, out=os.path.join(args.out, "vae")),
            f"beta{args.beta:g}-vae": make_config(**common, beta=args.beta,
                                                  out=os.path.join(args.out, f"beta{args.beta:g}-vae"))}


def _analyse(run_dir, timing, args):
    """Metrics, finding and report of one trained run folder; returns the finding."""
    run = load_run(run_dir)
    with run.scope():
        start = time.perf_counter()
        scores = compute_all(mean_representation(run.guide, device=run.device), RiversFactors(),
                             np.random.default_rng(args.seed), num_train=args.metric_points,
                             num_eval=args.metric_points // 2, metrics=METRICS)
        settings = {"dataset": "rivers", "num_points": args.metric_points, "trees": 100, "seed": args.seed,
                    "metrics": list(METRICS), "seconds": time.perf_counter() - start}
        write_json(os.path.join(run_dir, "disentanglement.json"), {**scores, "settings": settings})
        finding = rivers_finding(factor_information(run, FACTOR_POINTS).info)
    cfg = run.cfg
    finding["training"] = {"epochs": timing["epochs_run"], "num_train": cfg["num_train"],
                           "batch_size": cfg["batch_size"], "lr": cfg["lr"], "beta": cfg["beta"] or 1.0,
                           "latent_dim": cfg["latent_dim"], "threads": 1,
                           "cpu_minutes": timing["cpu_seconds"] / 60, "wall_minutes": timing["wall_seconds"] / 60,
                           "test_elbo": timing["test_elbo"],
                           "test_bits_per_dim": bits_per_dim(-timing["test_elbo"], run.data.event_shape)}
    write_json(os.path.join(run_dir, "rivers_finding.json"), finding)
    with run.scope():
        write_report(run_dir, run=run)
    return finding, scores


def _show(name, finding, scores):
    g, c, v, t = finding["grass"], finding["net_curvature"], finding["curvature_vs_turns"], finding["training"]
    print(f"{name}: test ELBO {t['test_elbo']:.0f} nats ({t['test_bits_per_dim']:.3f} bits/dim); training "
          f"{t['cpu_minutes']:.1f} CPU min, {t['wall_minutes']:.1f} wall min")
    for label, pick in (("grass colour", g), ("net curvature", c)):
        print(f"  {label:<14} z[{pick['dim']}]: {pick['mi']:.3f} nats ({100 * pick['share']:.0f}% of H), "
              f"runner-up z[{pick['runner_up_dim']}] {pick['runner_up_mi']:.3f} nats")
    print(f"  z[{v['dim']}] vs net curvature {v['corrected_mi_curvature']:.3f} nats, best single turn "
          f"{v['best_turn']} {v['corrected_mi_best_turn']:.3f} nats (bias-corrected); the seed's claim "
          f"{'holds' if finding['seed_claim_holds'] else 'does not hold'}")
    print(f"  MIG {scores['mig']['mig']:.3f}, DCI disentanglement {scores['dci']['disentanglement']:.3f} "
          f"completeness {scores['dci']['completeness']:.3f} informativeness (test) "
          f"{scores['dci']['informativeness_test']:.3f}, SAP {scores['sap']['sap']:.3f}")


def main(argv=None):
    args = parse_args(argv)
    configs = _configs(args)
    if args.jobs == 1:
        timings = {name: _train(cfg) for name, cfg in configs.items()}
    else:  # one process per run, started fresh (spawn): each measures its own CPU time
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {name: pool.submit(_train, cfg) for name, cfg in configs.items()}
            timings = {name: future.result() for name, future in futures.items()}
    results = {}
    for name, cfg in configs.items():
        results[name] = _analyse(cfg["out"], timings[name], args)
        _show(name, *results[name])
    summary = {name: {"finding": finding, "scores": scores} for name, (finding, scores) in results.items()}
    write_json(os.path.join(args.out, "rivers_experiment.json"), summary)
    print(f"reports: {', '.join(os.path.join(cfg['out'], 'report.html') for cfg in configs.values())}")
    return summary


if __name__ == "__main__":
    main()
