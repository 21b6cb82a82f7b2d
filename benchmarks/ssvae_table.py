"""The semi-supervised M2 table on MNIST: test error of q(y|x) with 100, 600, 1000 and 3000 labels.

Kingma, Rezende, Mohamed & Welling 2014 (arXiv 1406.5298), table 1, model M2:
p(y) p(z) p(x | y, z), q(y | x) q(z | x, y), y summed out exactly for unlabelled
data and observed for labelled data, plus the classification term with the
paper's alpha = 0.1 N (0.1 N / N_l on each labelled datum). Each setting trains
the built-in pair the way ``pyrovae train --model m2 --condition-on labels
--num-labelled N`` does (``pyrovae.app.runs.train``: 50,000 training images of
which N keep their label, balanced over the classes, dynamic binarization, the
validation ELBO picks the best epoch), reloads it (``load_run``) and classifies
the test images (one binarization drawn with the seed) with ``guide.classify``.
``--batching mixed`` (the default) puts labelled and unlabelled data in every
step, each part weighted by its share, as the paper does; ``grouped`` makes
separate batches of each (``pyrovae.data.Split``).

The paper: 500 softplus hidden units, z of 50 dims, Adam, about 3000 passes (the
authors' script); the defaults here are the built-in M2's one hidden layer of 500
softplus units and 50 latent dims, batch 100, lr 3e-4 (the authors' Adam step),
for ``--epochs`` epochs, all stated in the JSON. ``labels_only_error`` is the same
classifier network trained on the N labelled images alone (cross-entropy, Adam,
``--baseline-steps`` steps), for comparison with the paper's NN baseline.

    python benchmarks/ssvae_table.py --data-dir DIR --labels 100 [--epochs 5] [--out FOLDER]

Prints one JSON line per setting, then the whole result as JSON and a markdown table.
"""

import argparse
import json
import os
import tempfile
import time

import torch
from torch import nn

from common import environment
from pyrovae.app.config import make_config
from pyrovae.app.runs import load_run, train
from pyrovae.nn.nets import mlp

PAPER_M2 = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}  # test error %, table 1
PAPER_NN = {100: 25.81, 600: 11.44, 1000: 10.7, 3000: 6.04}  # the paper's supervised NN on the labels alone


@torch.no_grad()
def classification_error(guide, split, seed=0):
    """Fraction of ``split`` (its binarization drawn once with ``seed``) that ``guide.classify`` gets wrong."""
    split = split.fixed(seed)
    guide.eval()
    try:
        wrong = (guide.classify(split.data) != split.fields["y"]).sum()
    finally:
        guide.train()
    return float(wrong) / len(split)


def labels_only_error(train_split, test_split, hidden, activation, steps, lr, seed):
    """Test error of the M2 classifier's network trained on the labelled training data alone."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rows = torch.nonzero(train_split.present["y"]).squeeze(1)
    shape = train_split.event_shape
    net = nn.Sequential(nn.Flatten(-len(shape)), mlp([int(torch.Size(shape).numel()), *hidden, 10], activation))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        batch = train_split.materialize(rows[torch.randperm(len(rows), generator=g)[:100]], g)
        loss = nn.functional.cross_entropy(net(batch.x), batch.kwargs["y"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = test_split.fixed(seed)
    with torch.no_grad():
        return float((net(test.data).argmax(-1) != test.fields["y"]).float().mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batching", choices=("mixed", "grouped"), default="mixed")
    parser.add_argument("--hidden", type=int, nargs="+", default=[500])
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--activation", default="softplus")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--num-train", type=int, default=None, help="training images (default: all 50000)")
    parser.add_argument("--num-test", type=int, default=None, help="test images (default: all 10000)")
    parser.add_argument("--val-size", type=int, default=None, help="validation images (default: 10000)")
    parser.add_argument("--baseline-steps", type=int, default=2000, help="labels-only classifier steps (0: none)")
    parser.add_argument("--out", default=None, help="folder for the run folders (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = args.out or tempfile.mkdtemp(prefix="ssvae_table_")
    rows = []
    for n in args.labels:
        cfg = make_config(model="m2", dataset="mnist", data_dir=args.data_dir, condition_on="labels",
                          batching=args.batching, num_labelled=n, hidden=args.hidden, latent_dim=args.latent_dim,
                          activation=args.activation, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          num_train=args.num_train, num_test=args.num_test,
                          val_size=args.val_size, seed=args.seed, out=os.path.join(root, f"labels-{n}"))
        wall, cpu = time.perf_counter(), time.process_time()
        summary = train(cfg, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best, last = load_run(cfg["out"]), load_run(cfg["out"], which="last")
        data = best.data
        with best.scope():
            test_error = classification_error(best.guide, data.test, args.seed)
            val_error = classification_error(best.guide, data.val, args.seed)
        with last.scope():
            last_error = classification_error(last.guide, data.test, args.seed)
        row = {"labels": n, "test_error": test_error, "val_error": val_error, "test_error_last_epoch": last_error,
               "best_epoch": _best_epoch(cfg["out"]), "epochs": summary["epochs_run"],
               "steps": _steps(cfg["out"]), "test_elbo": summary["test_elbo"],
               "alpha_per_labelled_datum": best.model.alpha, "train_wall_seconds": wall,
               "train_cpu_seconds": cpu, "paper_m2_error": PAPER_M2.get(n), "paper_nn_error": PAPER_NN.get(n)}
        if args.baseline_steps:
            row["labels_only_error"] = labels_only_error(data.train, data.test, args.hidden, args.activation,
                                                         args.baseline_steps, 1e-3, args.seed)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"benchmark": "ssvae_table", "rows": rows, "epochs": args.epochs, "batching": args.batching,
              "batch_size": args.batch_size, "lr": args.lr, "num_train": len(data.train),
              "network": f"M2: q(y|x), q(z|x,y), p(x|y,z) MLPs with hidden {args.hidden} ({args.activation}), "
                         f"z {args.latent_dim}, Bernoulli p(x|y,z), dynamic binarization",
              "selection": "best validation ELBO (labelled validation data); error on the test set, one "
                           "binarization", **environment()}
    print(json.dumps(result, indent=2))
    print(f"\n| labels | M2 test error ({args.epochs} epochs) | labels-only MLP | paper M2 | paper NN |")
    print("|---|---|---|---|---|")
    for r in rows:
        base = f"{100 * r['labels_only_error']:.2f}%" if "labels_only_error" in r else "-"
        print(f"| {r['labels']} | {100 * r['test_error']:.2f}% | {base} | {_percent(r['paper_m2_error'])} "
              f"| {_percent(r['paper_nn_error'])} |")


def _percent(value):
    return "-" if value is None else f"{value:.2f}%"


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _best_epoch(run_dir):
    rows = _metrics(run_dir)
    return max(rows, key=lambda r: r["val_elbo"])["epoch"]


def _steps(run_dir):
    return _metrics(run_dir)[-1]["step"]


if __name__ == "__main__":
    main()
