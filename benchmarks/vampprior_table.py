"""The VampPrior paper's HVAE (L=2) rows on MNIST: standard, mixture-of-Gaussians and VampPrior priors.

Tomczak & Welling 2018 (arXiv 1705.07120), table 2: MNIST with dynamic
binarization, test log-likelihood by importance sampling with K=5000, two 40-d
latent levels, K=500 pseudo-inputs, batch 100, lr 5e-4, linear KL warm-up. The
paper trains up to 2000 epochs with 100 warm-up epochs and gated (GLU) layers;
this script trains each prior for ``--epochs`` with ``--warmup`` and plain MLPs
(stated in the output) through ``pyrovae.app.runs.train``, the path ``pyrovae
train`` takes, then estimates log p(x) on ``--num-test`` test images with
``pyrovae.evaluate.likelihood.log_likelihood``. Prints one JSON object and a markdown table
beside the paper's numbers.

    python benchmarks/vampprior_table.py --data-dir DIR [--epochs 20] [--warmup 5] [--num-test 1000]
"""

import argparse
import json
import os
import platform
import tempfile
import time

import torch

from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.app.config import make_config
from pyrovae.app.runs import load_run, train

PAPER = {"standard": -85.89, "mog": -85.07, "vamp": -83.19}
NAMES = {"standard": "HVAE (L=2) + standard prior", "mog": "HVAE (L=2) + mixture of Gaussians",
         "vamp": "HVAE (L=2) + VampPrior"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--components", type=int, default=500, help="VampPrior pseudo-inputs")
    parser.add_argument("--mog-components", type=int, default=500, help="mixture components (the paper: 500)")
    parser.add_argument("--num-train", type=int, default=None, help="training images (default: all 50000)")
    parser.add_argument("--num-test", type=int, default=1000, help="test images for the K=5000 estimate")
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--priors", nargs="+", default=["standard", "mog", "vamp"], choices=sorted(PAPER))
    parser.add_argument("--out", default=None, help="folder for the run folders (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = args.out or tempfile.mkdtemp(prefix="vampprior_table_")
    rows = []
    for prior in args.priors:
        cfg = make_config(model="hvae", prior=prior, dataset="mnist", data_dir=args.data_dir, binarize="dynamic",
                          latent_dim=40, hidden=[300, 300], components=args.mog_components if prior == "mog"
                          else args.components, warmup=args.warmup, epochs=args.epochs, batch_size=100, lr=5e-4,
                          num_train=args.num_train, seed=args.seed, out=os.path.join(root, prior))
        start = time.perf_counter()
        summary = train(cfg, progress=False)
        train_s = time.perf_counter() - start
        run = load_run(cfg["out"])
        model, guide, data = run.model, run.guide, run.data
        test = data.test.fixed(args.seed)
        x = test.data[:args.num_test]
        start = time.perf_counter()
        ll = log_likelihood(model, guide, x, num_samples=args.iw_samples, chunk_size=500, batch_size=100,
                            seed=args.seed)
        rows.append({"prior": prior, "test_ll": -ll.nll, "test_ll_std_error": ll.nll_std_error,
                     "test_elbo": summary["test_elbo"], "best_val_elbo": summary["best_val_elbo"],
                     "epochs": summary["epochs_run"], "train_seconds": train_s,
                     "eval_seconds": time.perf_counter() - start, "paper_test_ll": PAPER[prior]})
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "vampprior_table", "epochs": args.epochs, "warmup": args.warmup,
              "num_test": args.num_test, "iw_samples": args.iw_samples, "components": args.components,
              "network": "HVAE L=2, z 40+40, 300-300 ReLU MLPs (the paper: gated layers), batch 100, lr 5e-4",
              "rows": rows, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.machine()}
    print(json.dumps(result, indent=2))
    print(f"\n| model | test LL (K={args.iw_samples}, {args.num_test} images) | test ELBO | paper (2000 epochs) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {NAMES[r['prior']]} | {r['test_ll']:.2f} +- {r['test_ll_std_error']:.2f} | {r['test_elbo']:.2f} "
              f"| {r['paper_test_ll']:.2f} |")


if __name__ == "__main__":
    main()
