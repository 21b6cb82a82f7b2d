"""Posterior predictive checks tell a Gaussian from a Bernoulli likelihood on Fashion-MNIST.

Two VAEs are trained on Fashion-MNIST for a small budget: one with a Gaussian
likelihood p(x|z) = N(x; G(z), 0.1^2 I) on the grey images, one with a Bernoulli
likelihood on dynamically binarized images (the usual way to put binary-data
models on grey images). Each is then checked against the grey test images, and
the Bernoulli model also against binarized ones, with pyrovae's built-in test
statistics plus three that look at the kind of values an image holds:

- ``zeros``: the fraction of pixels that are exactly 0 (Fashion-MNIST's
  background is exactly 0; Gaussian noise never is);
- ``mid_tones``: the fraction of pixels strictly between 0.05 and 0.95
  (binary replications have none);
- ``outside_unit``: the fraction of pixels outside [0, 1] (an image has none).

A dataset-level statistic whose mid-p posterior predictive p-value falls
outside [alpha/2, 1 - alpha/2] *rejects* the model (Gelman, Meng & Stern 1996).
Each run folder gets a ``report.html`` with the checks on the grey images
(``ppc/``); the Bernoulli run's checks on binarized images are in ``ppc-binarized/``.

    python examples/ppc_fashion_mnist.py [--data-dir /usr/share/datasets/fashion-mnist]
                                         [--num-train 10000] [--epochs 3] [--out runs/ppc-fashion-mnist]
"""

import argparse
import json
import os
import warnings

from pyrovae.evaluate.ppc import BUILTIN_STATISTICS, TestStatistic, run_ppc
from pyrovae.app.report import write_report
from pyrovae.app.config import make_config
from pyrovae.app.runs import load_run, train


def zeros(x):
    """Fraction of each image's pixels that are exactly 0."""
    return (x == 0).flatten(1).float().mean(1)


def mid_tones(x):
    """Fraction of each image's pixels strictly between 0.05 and 0.95."""
    return ((x > 0.05) & (x < 0.95)).flatten(1).float().mean(1)


def outside_unit(x):
    """Fraction of each image's pixels outside [0, 1]."""
    return ((x < 0) | (x > 1)).flatten(1).float().mean(1)


STATISTICS = {**BUILTIN_STATISTICS, "zeros": TestStatistic(zeros, per_datum=True),
              "mid_tones": TestStatistic(mid_tones, per_datum=True),
              "outside_unit": TestStatistic(outside_unit, per_datum=True)}


def check(run_dir, x, label, folder, args):
    """Run the checks of ``run_dir``'s pair on ``x``, plots in ``run_dir/folder``; returns ``{statistic: p}``."""
    run = load_run(run_dir)
    model, guide = run.model, run.guide
    folder = os.path.join(run_dir, folder)
    result = run_ppc(model, guide, x, num_samples=args.num_samples, folder=folder, statistics=STATISTICS,
                     alpha=args.alpha, mid_p=True, seed=args.seed)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({**result["summary"], "num_data": x.shape[0], "num_samples": args.num_samples,
                   "obs_site": "x", "data": label}, f, indent=2)
    return result["summary"]["p_value"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist",
                        help="folder with the four Fashion-MNIST IDX files")
    parser.add_argument("--num-train", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--num-data", type=int, default=200, help="test images to check")
    parser.add_argument("--num-samples", type=int, default=100, help="replicated data sets")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("runs", "ppc-fashion-mnist"))
    args = parser.parse_args()
    # ArviZ's KDE of a statistic that is constant in the data (outside_unit is 0 on images) warns; so does
    # its use of a matplotlib API
    warnings.filterwarnings("ignore", message="Your data appears to have a single value")
    warnings.filterwarnings("ignore", message="Passing a dict or None as alias_mapping")

    checks = {}
    for likelihood in ("gaussian", "bernoulli"):
        cfg = make_config(dataset="fashion-mnist", data_dir=args.data_dir, likelihood=likelihood,
                          num_train=args.num_train, num_test=args.num_data, val_size=2000, epochs=args.epochs,
                          latent_dim=args.latent_dim, seed=args.seed, out=os.path.join(args.out, likelihood))
        summary = train(cfg, progress=False)
        print(f"{likelihood:>9} VAE: test ELBO {summary['test_elbo']:.1f} nats per image "
              f"({summary['train_seconds']:.0f} s of training), run folder {cfg['out']}")
        test = load_run(cfg["out"]).data.test
        checks[f"{likelihood} / grey"] = check(cfg["out"], test.data, "grey", "ppc", args)
        if likelihood == "bernoulli":
            binary = test.fixed(args.seed).data
            checks[f"{likelihood} / binarized"] = check(cfg["out"], binary, "binarized", "ppc-binarized", args)
        write_report(cfg["out"])

    low, high = args.alpha / 2, 1 - args.alpha / 2
    columns = list(checks)
    print(f"\nmid-p posterior predictive p-values, {args.num_data} test images, {args.num_samples} "
          f"replications (* = rejected: outside [{low:g}, {high:g}])")
    print(f"{'statistic':<18}" + "".join(f"{c:>24}" for c in columns))
    for name in checks[columns[0]]:
        cells = []
        for c in columns:
            p = checks[c][name]
            cells.append(f"{p:.3f}{'*' if p < low or p > high else ' '}")
        print(f"{name:<18}" + "".join(f"{cell:>24}" for cell in cells))
    for c in columns:
        rejected = [n for n, p in checks[c].items() if p < low or p > high]
        print(f"{c:<22} rejected by: {', '.join(rejected) if rejected else 'none'}")


if __name__ == "__main__":
    main()
