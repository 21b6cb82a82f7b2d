"""The IWAE table's one-stochastic-layer rows on MNIST: VAE and IWAE with k = 1, 5, 50, NLL and active units.

Burda, Grosse & Salakhutdinov (2015, arXiv 1509.00519), table 1, MNIST, 1 stochastic
layer: x-200-200-z(50), tanh, Bernoulli likelihood, dynamic binarization, all 60,000
training images, batch 20, Adam (beta1 0.9, beta2 0.999, eps 1e-4) and learning rate
1e-3 * 10^(-i/7) in stage i = 0, 1, ... of 3^i epochs. The paper runs 8 stages
(3280 epochs); here ``--epochs E`` cuts the schedule after E epochs, the same for
every row. Rows:

- ``vae1``: the VAE (k = 1; equal to IWAE with k = 1);
- ``vae5``, ``vae50``: the VAE trained with the average of k log-weights
  (pyrovae's ELBO with k particles and Monte Carlo KL, the paper's VAE rows);
- ``iwae5``, ``iwae50``: the k-sample importance-weighted bound (``--dreg`` for
  doubly reparameterized guide gradients, which the paper did not use).

Each row is scored by the paper's protocol: NLL estimated with ``--iw-samples``
(5000) importance samples per image on the first ``--num-test`` test images (the
binarization drawn once), with its Monte Carlo standard error, and active units
A_u = Cov_x(E_q[u|x]) > 0.01 over all 10,000 test images. The table is printed
beside the paper's numbers (``REFERENCES.md``) and the rows are written as JSON
(``--out``). Targets: first the paper's ordering (NLL: IWAE-50 < IWAE-5 < VAE;
more active units with IWAE), then the numbers.

    python benchmarks/iwae_table.py --data-dir DIR [--epochs 4] [--num-test 1000] [--rows vae1,vae5,...]

For a quick check of the script: ``--epochs 1 --num-train 2000 --num-test 20 --iw-samples 200``.
"""

import argparse
import json
import os
import platform
import time

import pyro
import torch

import pyrovae
from pyrovae.data import Split
from pyrovae.evaluate.diagnostics import active_units
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.guides import GaussianGuide
from pyrovae.infer.iwae import IWAE
from pyrovae.nn.likelihoods import Bernoulli
from pyrovae.models import VAE
from pyrovae.nn.nets import MLPDecoder, MLPEncoder
from pyrovae.infer.elbo import ELBO
from pyrovae.nn.priors import StandardNormal

SHAPE, HIDDEN, LATENT = (1, 28, 28), (200, 200), 50
# (objective, k) -> the paper's (NLL, active units), MNIST, 1 stochastic layer
ROWS = {"vae1": ("vae", 1), "vae5": ("vae", 5), "vae50": ("vae", 50), "iwae5": ("iwae", 5), "iwae50": ("iwae", 50)}
PAPER = {"vae1": (86.76, 19), "vae5": (86.47, 20), "vae50": (86.35, 20), "iwae5": (85.54, 22), "iwae50": (84.78, 25)}


def make_pair(seed):
    torch.manual_seed(seed)
    encoder = MLPEncoder(SHAPE, LATENT, HIDDEN, activation="tanh")
    decoder = MLPDecoder(SHAPE, LATENT, HIDDEN, activation="tanh")
    return VAE(decoder, StandardNormal(LATENT), Bernoulli()), GaussianGuide(encoder)


def make_objective(kind, k, dreg):
    if kind == "iwae":
        return IWAE(num_particles=k, dreg=dreg)
    return ELBO(analytic_kl=False, num_particles=k)


def stages(epochs):
    """The paper's schedule cut after ``epochs``: [(epochs in stage i, learning rate 1e-3 * 10^(-i/7)), ...]."""
    out, i = [], 0
    while epochs > 0:
        n = min(3 ** i, epochs)
        out.append((n, 1e-3 * 10 ** (-i / 7)))
        epochs -= n
        i += 1
    return out


def run_row(name, train, test_nll, test_all, args):
    kind, k = ROWS[name]
    model, guide = make_pair(args.seed)
    run = pyrovae.SVIRun(model, guide, train, objective=make_objective(kind, k, args.dreg), lr=1e-3,
                         batch_size=args.batch_size, epochs=0, seed=args.seed, progress=False)
    for group in run.optimizer.param_groups:
        group["eps"] = 1e-4
    start = time.perf_counter()
    for n, lr in stages(args.epochs):
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        run.epochs += n
        run.fit()
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ll = log_likelihood(model, guide, test_nll, num_samples=args.iw_samples, seed=args.seed)
    au = active_units(model, guide, test_all, seed=args.seed)
    eval_seconds = time.perf_counter() - start
    paper_nll, paper_au = PAPER[name]
    return {"row": name, "objective": kind, "k": k, "dreg": args.dreg and kind == "iwae", "epochs": run.epoch,
            "train_bound": run.history[-1]["train_elbo"], "nll": ll.nll, "nll_std_error": ll.nll_std_error,
            "active_units": au.counts["z"], "paper_nll": paper_nll, "paper_active_units": paper_au,
            "train_seconds": train_seconds, "seconds_per_epoch": train_seconds / max(run.epoch, 1),
            "eval_seconds": eval_seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR"),
                        help="folder with the four MNIST IDX files (default: $MNIST_DIR)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows among {list(ROWS)}")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per row (the paper's schedule, cut)")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--num-train", type=int, default=None, help="train on the first N images only (quick checks)")
    parser.add_argument("--num-test", type=int, default=1000, help="test images for the NLL")
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--dreg", action="store_true", help="IWAE rows: doubly reparameterized guide gradients")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("give the MNIST folder with --data-dir DIR or the MNIST_DIR environment variable")
    names = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(names) - set(ROWS))
    if unknown or not names:
        parser.error(f"unknown rows {unknown}; choose among {list(ROWS)}")

    data = pyrovae.load_dataset("mnist", args.data_dir, binarize="dynamic", seed=args.seed)
    images = torch.cat([data.train.data, data.val.data])  # all 60,000 training images, as the paper
    train = Split(images[:args.num_train] if args.num_train else images, binarize="dynamic", seed=args.seed)
    test_all = data.test.fixed(args.seed)
    test_nll = Split(test_all.data[:args.num_test])
    rows = []
    print(f"MNIST, 1 stochastic layer, {len(train)} training images, {args.epochs} epochs "
          f"(schedule {stages(args.epochs)}), NLL with k={args.iw_samples} on {len(test_nll)} test images")
    print(f"{'row':<8}{'NLL':>9}{'+-':>7}{'paper':>8}{'active':>8}{'paper':>7}{'s/epoch':>9}")
    for name in names:
        row = run_row(name, train, test_nll, test_all, args)
        rows.append(row)
        print(f"{name:<8}{row['nll']:9.2f}{row['nll_std_error']:7.2f}{row['paper_nll']:8.2f}"
              f"{row['active_units']:8d}{row['paper_active_units']:7d}{row['seconds_per_epoch']:9.1f}", flush=True)
    result = {"benchmark": "iwae_table", "epochs": args.epochs, "num_train": len(train), "num_test": len(test_nll),
              "iw_samples": args.iw_samples, "batch_size": args.batch_size, "rows": rows,
              "torch": torch.__version__, "pyro": pyro.__version__, "threads": torch.get_num_threads(),
              "machine": platform.machine()}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
