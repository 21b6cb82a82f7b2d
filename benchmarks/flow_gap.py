"""The gap between log p(x) and the ELBO on binarized MNIST: a diagonal Gaussian guide against IAF guides.

Kingma et al. 2016 ("Improved variational inference with inverse autoregressive
flow", arXiv 1606.04934), table 1, MNIST: the same encoder and decoder with a
diagonal Gaussian posterior and with 2 and 4 IAF steps; a more flexible q(z|x)
narrows the gap log p(x) - ELBO and so improves the likelihood the decoder
learns. Rows (``--rows``):

- ``diagonal``: ``--guide gaussian``;
- ``iaf2``, ``iaf4``: ``--guide iaf --flow-steps 2`` / ``4`` (pyrovae's IAF guide:
  a Gaussian with a 32-d context from the encoder, then Pyro's conditional
  affine autoregressive steps, hidden width 10 D).

Every row is trained by ``pyrovae.app.runs.train`` (the path ``pyrovae train``
takes) on Larochelle's statically binarized MNIST (``--dataset binarized-mnist``,
50,000 training images, validation on the ``valid`` file, the best epoch by
validation ELBO kept), with the same MLP networks (``--hidden``, latent
``--latent-dim``), seed, epochs, batch 100 and learning rate 1e-3. Scored on
the test file:

- ``test_elbo``: the run's test ELBO over all 10,000 test images (one draw each);
- on the first ``--num-test`` test images: ``nll``, -log p(x) by importance
  sampling with ``--iw-samples`` (5000) draws from the guide
  (:func:`pyrovae.evaluate.likelihood.log_likelihood`), with its Monte Carlo
  standard error; ``elbo``, the ELBO of each image averaged over
  ``--elbo-draws`` (100) draws; and ``gap`` = NLL - (-ELBO) = mean over images of
  log p^(x) - ELBO^(x), with the standard error of that mean over the images;
- ``nll_vs_diagonal``: the NLL difference to the diagonal row on the same images
  (paired, with its standard error over the images).

The paper's numbers (their networks are ResNets with 1920 / 320 units trained for
far longer, IAF's width per row as in the table) are printed beside.

    python benchmarks/flow_gap.py --data-dir DIR [--epochs 10] [--num-test 200] [--rows diagonal,iaf2,iaf4]

For a quick check: ``--epochs 1 --num-train 1000 --num-test 10 --iw-samples 100``.
"""

import argparse
import json
import math
import os
import tempfile
import time

import torch
from pyro import poutine

from common import add_binarized_mnist_dir, environment, parse_rows
from pyrovae.app.config import make_config
from pyrovae.app.runs import load_run, train
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.infer.importance import log_weights
from pyrovae.infer.trace import evaluation_mode, max_plate_nesting, trace_pair
from pyrovae.util import seeded

ROWS = {"diagonal": {"guide": "gaussian"}, "iaf2": {"guide": "iaf", "flow_steps": 2},
        "iaf4": {"guide": "iaf", "flow_steps": 4}}
# Kingma et al. 2016, table 1, MNIST: (variational lower bound, log p(x)) in nats
PAPER = {"diagonal": ("Diagonal covariance", -84.08, -81.08), "iaf2": ("IAF (Depth = 2, Width = 320)", -82.02, -79.77),
         "iaf4": ("IAF (Depth = 4, Width = 1920)", -80.93, -79.17)}


def elbo_per_image(model, guide, x, draws, seed, batch_size=100):
    """The ELBO of each image, E_q[log p(x, z) - log q(z | x)] averaged over ``draws`` guide draws: ``[N]``."""
    out = []
    with seeded(seed), torch.no_grad(), poutine.block(), evaluation_mode(model, guide):
        nesting = max_plate_nesting(model, guide, x[:1])
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            out.append(log_weights(trace_pair(model, guide, batch, num_particles=draws, nesting=nesting),
                                   len(batch)).double().mean(0))
    return torch.cat(out)


def mean_and_se(t):
    return float(t.mean()), float(t.std() / math.sqrt(t.numel())) if t.numel() > 1 else float("nan")


def run_row(name, root, args):
    cfg = make_config(dataset="binarized-mnist", data_dir=args.data_dir, num_train=args.num_train,
                      latent_dim=args.latent_dim, hidden=args.hidden, epochs=args.epochs, batch_size=100, lr=1e-3,
                      seed=args.seed, out=os.path.join(root, name), **ROWS[name])
    start = time.perf_counter()
    summary = train(cfg, progress=False)
    train_s = time.perf_counter() - start
    run = load_run(cfg["out"])
    x = run.data.test.data[:args.num_test]
    start = time.perf_counter()
    with run.scope():
        ll = log_likelihood(run.model, run.guide, x, num_samples=args.iw_samples, seed=args.seed)
        elbo = elbo_per_image(run.model, run.guide, x, args.elbo_draws, args.seed)
    eval_s = time.perf_counter() - start
    gap_mean, gap_se = mean_and_se(ll.log_px.double() - elbo)
    elbo_mean, elbo_se = mean_and_se(elbo)
    label, paper_elbo, paper_ll = PAPER[name]
    row = {"row": name, "guide": label, **ROWS[name], "epochs_run": summary["epochs_run"],
           "best_val_elbo": summary["best_val_elbo"], "test_elbo": summary["test_elbo"],
           "num_test_all": summary["num_test"], "nll": ll.nll, "nll_std_error": ll.nll_std_error,
           "nll_data_std_error": ll.nll_data_std_error, "khat_above_0.7": ll.khat_above, "elbo": elbo_mean,
           "elbo_std_error": elbo_se, "gap": gap_mean, "gap_std_error": gap_se, "paper_elbo": paper_elbo,
           "paper_log_px": paper_ll, "paper_gap": paper_ll - paper_elbo, "train_seconds": train_s,
           "eval_seconds": eval_s}
    return row, ll.log_px.double()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_binarized_mnist_dir(parser)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows among {list(ROWS)}")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per row (the same for every row)")
    parser.add_argument("--num-train", type=int, default=None, help="train on the first N images only (quick checks)")
    parser.add_argument("--num-test", type=int, default=200, help="test images for the NLL, ELBO and gap")
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--elbo-draws", type=int, default=100, help="guide draws per image for its ELBO")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--hidden", type=int, nargs="+", default=[300, 300])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=None, help="folder for the run folders (default: a temporary one)")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("give the binarized MNIST folder with --data-dir DIR or $BINARIZED_MNIST_DIR")
    names = parse_rows(parser, args.rows, ROWS)
    root = args.runs or tempfile.mkdtemp(prefix="flow_gap_")
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    rows, log_px = [], {}
    for name in names:
        row, log_px[name] = run_row(name, root, args)
        if "diagonal" in log_px and name != "diagonal":
            row["nll_vs_diagonal"], row["nll_vs_diagonal_std_error"] = mean_and_se(log_px["diagonal"] - log_px[name])
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"benchmark": "flow_gap", "dataset": "binarized-mnist", "epochs": args.epochs,
              "num_train": args.num_train or 50_000, "num_test": args.num_test, "iw_samples": args.iw_samples,
              "elbo_draws": args.elbo_draws, "latent_dim": args.latent_dim, "hidden": args.hidden,
              "network": f"MLP {'-'.join(map(str, args.hidden))} ReLU encoder and decoder, batch 100, lr 1e-3 "
                         "(the paper: ResNet encoder/decoder, trained far longer)",
              "seed": args.seed, "rows": rows, "wall_seconds": time.perf_counter() - start_wall,
              "cpu_seconds": time.process_time() - start_cpu, **environment()}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    k = args.iw_samples
    print(f"\n| guide | test ELBO (10,000) | ELBO ({args.num_test}) | NLL (K={k}, {args.num_test}) | gap "
          f"NLL - (-ELBO) | NLL vs diagonal | paper VLB | paper log p(x) | paper gap |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        versus = (f"{r['nll_vs_diagonal']:+.2f} +- {r['nll_vs_diagonal_std_error']:.2f}"
                  if "nll_vs_diagonal" in r else "")
        print(f"| {r['row']} | {r['test_elbo']:.2f} | {r['elbo']:.2f} +- {r['elbo_std_error']:.2f} | "
              f"{r['nll']:.2f} +- {r['nll_std_error']:.2f} | {r['gap']:.2f} +- {r['gap_std_error']:.2f} | {versus} | "
              f"{r['paper_elbo']:.2f} | {r['paper_log_px']:.2f} | {r['paper_gap']:.2f} |")


if __name__ == "__main__":
    main()
