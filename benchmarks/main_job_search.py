"""Which training configuration of the main job (``pyrovae train`` on ``shapes``) learns the shapes?

Each candidate trains a VAE pair (:func:`pyrovae.app.build.build_pair` of
:func:`pyrovae.app.config.make_config`) with :class:`pyrovae.SVIRun` as
``pyrovae train`` would (the 1,000-image validation split is scored each
epoch, as in the CLI), then measures

- the test ELBO (:func:`pyrovae.evaluate_elbo`, 1,000 test images);
- ``reconstruction_shape_accuracy``, ``prior_sample_confidence`` and
  ``aggregate_posterior_confidence`` of :mod:`pyrovae.evaluate.shape_check` on
  the same test images (the classifier is trained once, outside the timing);
- the wall time and the CPU time (``time.process_time``: all threads of this
  process) of the training loop, the number of SVI steps, torch's thread count
  and the load average of the machine before and after (the 2 cores are shared).

The run's last parameters are measured (the CLI reloads ``best.pt``, the epoch
of best validation ELBO; with a constant learning rate they are the same or
close). Prints one JSON object per candidate; ``--pictures DIR`` saves
``<name>-samples.png``, ``<name>-aggregate.png`` and ``<name>-reconstructions.png``.

    nice -n 10 python benchmarks/main_job_search.py --candidate main-job [--threads 2] [--pictures DIR] [--save DIR]
    python benchmarks/main_job_search.py --reevaluate DIR/*.pt [--pictures DIR] [--by-scale]
    python benchmarks/main_job_search.py --list

A candidate's ``lr_decay`` and ``lr_decay_after`` are ``pyrovae train``'s
``--lr-decay`` and ``--lr-decay-after``.
"""

import argparse
import json
import os
import time

import pyro
import torch

from common import environment
from pyrovae.app import viz
from pyrovae.app.build import build_pair
from pyrovae.app.config import MAIN_JOB, MAIN_JOB_BETA_YIELDS_TO, make_config
from pyrovae.app.runs import dataset_for, make_objective
from pyrovae.evaluate.shape_check import ground_truth_accuracy, reconstructions, shape_classifier, shape_summary
from pyrovae.infer.svi import SVIRun, evaluate_elbo
from pyrovae.infer.trace import evaluation_mode

# the defaults of pyrovae train on shapes before issue 13 (and still for other models and data): the plain ELBO, a
# constant learning rate. Given explicitly, so that MAIN_JOB (today's defaults of the vae on shapes) fills nothing in.
BEFORE = {"arch": "mlp", "latent_dim": 10, "lr": 1e-3, "batch_size": 128, "epochs": 20, "num_train": 10000,
          "lr_decay": 1.0, "lr_decay_after": 1}
# the main job's budget of issue 13: 64,000 images, 12 epochs of batch 128 (6,000 steps), Adam 3e-3, no schedule
BUDGET = {"num_train": 64000, "epochs": 12, "lr": 3e-3}
# every candidate is make_config(**BEFORE, **values): the values differing from BEFORE
CANDIDATES = {
    "before": {},
    "main-job": dict(MAIN_JOB),  # today's default of pyrovae train on shapes
    "mlp-64k-e20": {"num_train": 64000, "epochs": 20},
    "mlp-64k-e20-lr3e-3": {"num_train": 64000, "epochs": 20, "lr": 3e-3},
    "mlp-64k-e14-b64": {"num_train": 64000, "epochs": 14, "batch_size": 64},
    "mlp1024-64k-e9": {"num_train": 64000, "epochs": 9, "hidden": [1024]},
    "conv-b32-lr2e-3": {"arch": "conv", "batch_size": 32, "lr": 2e-3, "num_train": 32000, "epochs": 3},
    "conv-b32-lr3e-3-z8": {"arch": "conv", "batch_size": 32, "lr": 3e-3, "latent_dim": 8, "num_train": 32000,
                           "epochs": 3},
    "conv-b16-lr1e-3": {"arch": "conv", "batch_size": 16, "lr": 1e-3, "num_train": 32000, "epochs": 2},
    "mlp-b64-lr2e-3": {"num_train": 64000, "epochs": 6, "batch_size": 64, "lr": 2e-3},
    "mlp-64k-e12-lr3e-3": dict(BUDGET),
    "mlp-b64-lr3e-3-e8": {"num_train": 64000, "epochs": 8, "batch_size": 64, "lr": 3e-3},
    "mlp512x2-64k-e8-lr2e-3": {"num_train": 64000, "epochs": 8, "lr": 2e-3, "hidden": [512, 512]},
    # the main job's budget with a learning-rate schedule, more steps or a second hidden layer
    "mj-decay": {**BUDGET, "lr_decay": 0.7, "lr_decay_after": 7},
    "mj-lr5e-3-decay": {**BUDGET, "lr": 5e-3, "lr_decay": 0.7, "lr_decay_after": 5},
    "mj-400x2-decay": {**BUDGET, "hidden": [400, 400], "lr_decay": 0.7, "lr_decay_after": 7},
    "mj-b64-e8-lr2e-3-decay": {**BUDGET, "batch_size": 64, "epochs": 8, "lr": 2e-3, "lr_decay": 0.6,
                               "lr_decay_after": 5},
    # the conv networks with He initialisation (they used to start from PyTorch's default, which shrank the signal)
    "conv-b64-e3-decay": {"arch": "conv", "num_train": 64000, "epochs": 3, "batch_size": 64, "lr": 1e-3,
                          "lr_decay": 0.5, "lr_decay_after": 2},
    # the main job's budget and schedule with a weaker KL term: beta < 1 throughout, or a KL warm-up
    "mj-beta0.5": {**BUDGET, "lr_decay": 0.7, "lr_decay_after": 7, "beta": 0.5},
    "mj-warmup3": {**BUDGET, "lr_decay": 0.7, "lr_decay_after": 7, "warmup": 3},
    "mj-beta0.25": {**BUDGET, "lr_decay": 0.7, "lr_decay_after": 7, "beta": 0.25},
    "mj-beta0.1": {**BUDGET, "lr_decay": 0.7, "lr_decay_after": 7, "beta": 0.1},
    # more steps (the step costs less since the kernels of a75759f), or the conv networks, with beta = 0.5
    "mlp-e20-beta0.5": {**BUDGET, "epochs": 20, "lr_decay": 0.7, "lr_decay_after": 14, "beta": 0.5},
    "mlp-e20-beta0.5-seed1": {**BUDGET, "epochs": 20, "lr_decay": 0.7, "lr_decay_after": 14, "beta": 0.5, "seed": 1},
    "mlp-e24-beta0.5": {**BUDGET, "epochs": 24, "lr_decay": 0.7, "lr_decay_after": 17, "beta": 0.5},
    # the same 10,000 steps, annealed longer: x0.8 per epoch over the last 10 epochs (3e-3 -> 3.2e-4)
    "mlp-e20-beta0.5-decay0.8": {**BUDGET, "epochs": 20, "lr_decay": 0.8, "lr_decay_after": 10, "beta": 0.5},
    # the same 10,000 steps annealed to a lower final rate (x0.6 per epoch over the last 7 epochs: 8.4e-5)
    "mlp-e20-beta0.5-decay0.6": {**BUDGET, "epochs": 20, "lr_decay": 0.6, "lr_decay_after": 13, "beta": 0.5},
    "mlp-e20-beta0.5-lr5e-3-decay0.6": {**BUDGET, "epochs": 20, "lr": 5e-3, "lr_decay": 0.6, "lr_decay_after": 12,
                                        "beta": 0.5},
    # 14,000 and 16,000 steps (at the main job's 24-28 ms per step on 2 quiet cores: about 6.5 and 7.5 minutes)
    "mlp-e28-beta0.5": {**BUDGET, "epochs": 28, "lr_decay": 0.7, "lr_decay_after": 21, "beta": 0.5},
    "mlp-e32-beta0.5": {**BUDGET, "epochs": 32, "lr_decay": 0.7, "lr_decay_after": 25, "beta": 0.5},
    "conv-b64-e3-lr2e-3-beta0.5": {"arch": "conv", "num_train": 64000, "epochs": 3, "batch_size": 64, "lr": 2e-3,
                                   "lr_decay": 0.5, "lr_decay_after": 2, "beta": 0.5},
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidate", action="append", help="a name of CANDIDATES (repeat for several)")
    p.add_argument("--list", action="store_true", help="print the candidates and exit")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training and evaluation")
    p.add_argument("--num-test", type=int, default=1000)
    p.add_argument("--pictures", help="folder for the pictures of each candidate")
    p.add_argument("--save", help="folder for each candidate's trained pair (state dicts)")
    p.add_argument("--reevaluate", nargs="+", metavar="PT", help="measure pairs saved by --save again, no training")
    p.add_argument("--by-scale", action="store_true", help="with --reevaluate: the square accuracy per scale, and "
                   "the accuracy of reconstructions at the guide's mean (scale_breakdown)")
    return p.parse_args()


def candidate_config(values, num_test):
    """make_config(**BEFORE, **values): the ELBO by name unless the candidate chooses an objective (beta, warm-up...)."""
    objective = {} if any(k in values for k in ("beta", *MAIN_JOB_BETA_YIELDS_TO)) else {"objective": "elbo"}
    return make_config(**{**BEFORE, **objective, **values}, num_test=num_test, out=os.devnull)


def run_candidate(name, values, args, classifier):
    cfg = candidate_config(values, args.num_test)
    data = dataset_for(cfg)
    cfg["image_shape"] = list(data.image_shape)
    pyro.set_rng_seed(cfg["seed"])
    model, guide, _ = build_pair(cfg, data.train)
    run = SVIRun(model, guide, data.train, data.val, make_objective(cfg), lr=cfg["lr"], lr_decay=cfg["lr_decay"],
                 lr_decay_after=cfg["lr_decay_after"], batch_size=cfg["batch_size"], epochs=cfg["epochs"],
                 clip_norm=cfg["clip_norm"], seed=cfg["seed"], step_mode=cfg["step_mode"], progress=False)
    load_before = os.getloadavg()
    wall, cpu = time.perf_counter(), time.process_time()
    run.fit()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    load_after = os.getloadavg()
    row = {"candidate": name, "config": values, "steps": run.global_step, "train_wall_s": round(wall, 1),
           "train_cpu_s": round(cpu, 1), "threads": torch.get_num_threads(),
           "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in load_after],
           "val_elbo": [round(r["val_elbo"], 2) for r in run.history],
           "test_elbo": round(evaluate_elbo(model, guide, data.test), 2)}
    figures = shape_summary(model, guide, data.test, num=args.num_test, classifier=classifier)
    row.update(figures)
    if args.pictures:
        save_pictures(name, model, guide, data.test, args.pictures)
    if args.save:
        os.makedirs(args.save, exist_ok=True)
        torch.save({"config": cfg, "model": model.state_dict(), "guide": guide.state_dict(), "row": row},
                   os.path.join(args.save, f"{name}.pt"))
    return row


def reevaluate(path, args, classifier):
    """The figures of a pair saved by ``--save``, measured again (with this classifier); training figures kept."""
    saved = torch.load(path, weights_only=False)
    cfg = saved["config"]
    data = dataset_for(cfg)
    model, guide, _ = build_pair(cfg, data.train)
    model.load_state_dict(saved["model"])
    guide.load_state_dict(saved["guide"])
    row = dict(saved.get("row", {"candidate": os.path.basename(path)[:-3]}))
    row["test_elbo"] = round(evaluate_elbo(model, guide, data.test), 2)
    row.update(shape_summary(model, guide, data.test, num=args.num_test, classifier=classifier))
    if args.by_scale:
        row.update(scale_breakdown(model, guide, data.test, classifier, args.num_test))
    if args.pictures:
        save_pictures(row["candidate"], model, guide, data.test, args.pictures)
    return row


@torch.no_grad()
def scale_breakdown(model, guide, test, classifier, num):
    """Where reconstructions go wrong: the square accuracy per scale of the shapes factors (z ~ q(z|x)), and the
    reconstruction shape accuracy with z at the guide's mean instead of a draw, and at that mean's rounded mode."""
    test = test.subset(num)
    x, shapes, scales = test.data, test.labels[:, 0], test.labels[:, 1]
    right = classifier.probabilities(reconstructions(model, guide, x)).argmax(-1) == shapes
    squares = {int(k): round(float(right[(scales == k) & (shapes == 0)].float().mean()), 3)
               for k in scales.unique()}
    with evaluation_mode(model, guide):
        mean = viz.decode_means(model, viz.guide_means(guide, x), x)
    at = {name: float((classifier.probabilities(r).argmax(-1) == shapes).float().mean())
          for name, r in (("at_mean", mean), ("at_mean_mode", (mean > 0.5).float()))}
    return {"square_accuracy_by_scale": squares, **{f"reconstruction_shape_accuracy_{k}": v for k, v in at.items()}}


def save_pictures(name, model, guide, test, folder):
    os.makedirs(folder, exist_ok=True)
    x = test.data[:64]
    viz.save_grid(viz.sample_means(model, x), os.path.join(folder, f"{name}-samples.png"),
                  title=f"{name}: prior samples, mean of p(x|z), z ~ p(z)")
    index = torch.randint(len(test), (64,), generator=torch.Generator().manual_seed(1))
    viz.save_grid(reconstructions(model, guide, test.data[index]), os.path.join(folder, f"{name}-aggregate.png"),
                  title=f"{name}: mean of p(x|z), z ~ q(z|x_n), random test images n")
    viz.save_reconstructions(model, guide, test.data[:32], os.path.join(folder, f"{name}-reconstructions.png"))


def main():
    args = parse_args()
    if args.list:
        print(json.dumps(CANDIDATES, indent=1))
        return
    names = [] if args.reevaluate else args.candidate or list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}; known: {sorted(CANDIDATES)}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    classifier = shape_classifier(0)
    print(json.dumps({"classifier_train_s": round(time.perf_counter() - start, 1),
                      "classifier_ground_truth_accuracy": ground_truth_accuracy(classifier), **environment()}),
          flush=True)
    for path in args.reevaluate or []:
        print(json.dumps(reevaluate(path, args, classifier)), flush=True)
    for name in names:
        print(json.dumps(run_candidate(name, CANDIDATES[name], args, classifier)), flush=True)


if __name__ == "__main__":
    main()
