"""A conditional VAE on MNIST: one row of samples per digit class, and the test ELBO.

The built-in ``cvae`` pair (Sohn, Lee & Yan 2015): p(z) = N(0, I),
p(x | z, y) Bernoulli from an MLP on [z, onehot(y)], q(z | x, y) Gaussian; the
labels reach the model and the guide as the keyword argument ``y``
(``--condition-on labels``). The script trains it the way ``pyrovae train
--model cvae --condition-on labels`` does (``pyrovae.app.runs.train``), reloads
the best checkpoint (``load_run``) and draws, for each class y = 0..9, the mean
of p(x | z, y) for ``--per-class`` draws z ~ p(z): with y given the model
samples z from its prior and decodes it with that label
(``pyrovae.app.viz.sample_means``). Row y of the picture holds class y.

    python examples/cvae_mnist.py --data-dir DIR [--epochs 10] [--out runs/cvae-mnist]

``DIR`` holds the four MNIST IDX files. The run folder also gets the usual
pictures and ``report.html``. Ten epochs take about two minutes of one CPU core.
"""

import argparse
import json
import os

import torch

from pyrovae.app import viz
from pyrovae.app.config import make_config
from pyrovae.app.runs import load_run, train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--latent-dim", type=int, default=10)
parser.add_argument("--hidden", type=int, nargs="+", default=[400])
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--per-class", type=int, default=10, help="samples in each class's row")
parser.add_argument("--num-train", type=int, default=None, help="training images (default: all 50000)")
parser.add_argument("--num-test", type=int, default=None, help="test images (default: all 10000)")
parser.add_argument("--val-size", type=int, default=None, help="validation images (default: 10000)")
parser.add_argument("--out", default="runs/cvae-mnist", help="run folder (must not hold a run yet)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

cfg = make_config(model="cvae", dataset="mnist", data_dir=args.data_dir, condition_on="labels",
                  latent_dim=args.latent_dim, hidden=args.hidden, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, num_train=args.num_train, num_test=args.num_test, val_size=args.val_size,
                  seed=args.seed, out=args.out)
summary = train(cfg, progress=False)
run = load_run(args.out)

classes = int(run.data.train.fields["y"].max()) + 1
y = torch.arange(classes).repeat_interleave(args.per_class)  # row c: class c
shapes_only = torch.zeros(len(y), *run.data.event_shape)      # the model reads x's shape only
with run.scope(), torch.random.fork_rng():
    torch.manual_seed(args.seed)
    means = viz.sample_means(run.model, shapes_only, y=y)
picture = os.path.join(args.out, "samples_by_class.png")
viz.save_grid(means, picture, nrow=args.per_class,
              title="mean of p(x | z, y), z ~ p(z); row y = class 0 (top) .. 9")
print(json.dumps({"test_elbo": summary["test_elbo"], "best_val_elbo": summary["best_val_elbo"],
                  "epochs": summary["epochs_run"], "train_seconds": summary["train_seconds"],
                  "picture": picture}, indent=2))
