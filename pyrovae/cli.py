"""``pyrovae`` command line: ``train`` and ``evaluate``.

``pyrovae train`` with no arguments trains a VAE on the built-in ``shapes``
dataset on the CPU and writes a run folder; ``pyrovae evaluate RUN`` prints the
test bound of a run folder.
"""

import argparse
import json
import sys

from .data import BINARIZE, DATASETS
from .likelihoods import LIKELIHOODS
from .step import MODES


def _train_parser(sub):
    p = sub.add_parser("train", help="train a model/guide pair with SVI and write a run folder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="vae", help="built-in model name (vae) or path/to/file.py:Name")
    p.add_argument("--guide", default="gaussian", help="built-in guide name (gaussian) or path/to/file.py:Name")
    p.add_argument("--dataset", default="shapes", choices=DATASETS)
    p.add_argument("--data-dir", default=None, help="folder with the dataset's files (MNIST / Fashion-MNIST IDX)")
    p.add_argument("--download", action="store_true", help="fetch MNIST / Fashion-MNIST with torchvision (online)")
    p.add_argument("--binarize", default=None, choices=[b for b in BINARIZE if b],
                   help="binarization of grey images (default: dynamic for a Bernoulli likelihood)")
    p.add_argument("--num-train", type=int, default=None, help="use only this many training images")
    p.add_argument("--num-test", type=int, default=None, help="use only this many test images")
    p.add_argument("--val-size", type=int, default=None, help="validation images (shapes: 1000, MNIST: 10000)")
    p.add_argument("--arch", default="mlp", choices=["mlp", "conv"], help="encoder/decoder networks")
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden layer sizes")
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--likelihood", default="bernoulli", choices=sorted(LIKELIHOODS))
    p.add_argument("--no-analytic-kl", dest="analytic_kl", action="store_false",
                   help="estimate the KL term by Monte Carlo even where it has a closed form")
    p.add_argument("--particles", type=int, default=1, help="Monte Carlo draws per datapoint")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip-norm", type=float, default=None, help="clip the gradient norm to this value")
    p.add_argument("--patience", type=int, default=None, help="early stopping: epochs without improvement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--step-mode", default="graph", choices=MODES, help="how SVI steps run (see pyrovae.step)")
    p.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def cmd_train(args):
    from .runs import make_config, train

    keys = ("model", "guide", "dataset", "data_dir", "download", "binarize", "num_train", "num_test", "val_size",
            "arch", "hidden",
            "latent_dim", "likelihood", "analytic_kl", "particles", "epochs", "batch_size", "lr", "clip_norm",
            "patience", "seed", "device", "step_mode", "out")
    cfg = make_config(**{k: getattr(args, k) for k in keys})
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out RUN_FOLDER")
    summary = train(cfg, resume=args.resume, progress=args.progress)
    print(f"run folder: {cfg['out']}")
    print(f"test ELBO: {summary['test_elbo']:.2f} nats per image ({summary['num_test']} test images)")
    print(f"epochs: {summary['epochs_run']}, training wall time: {summary['train_seconds']:.1f} s")


def cmd_evaluate(args):
    from .runs import load_run
    from .train import evaluate_elbo

    cfg, model, guide, data = load_run(args.run)
    elbo = evaluate_elbo(model, guide, data.test, device=cfg["device"], seed=cfg["seed"])
    result = {"test_elbo": elbo, "num_test": len(data.test)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test ELBO: {elbo:.2f} nats per image ({len(data.test)} test images)")


def build_parser():
    parser = argparse.ArgumentParser(prog="pyrovae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub).set_defaults(func=cmd_train)
    ev = sub.add_parser("evaluate", help="evaluate a trained run folder")
    ev.add_argument("run", help="run folder written by pyrovae train")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None):
    """Entry point of the ``pyrovae`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"pyrovae {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
