"""Semi-supervised MNIST with the M2 model: the test error of q(y|x) from a few labels, and style analogies.

Kingma, Rezende, Mohamed & Welling 2014 (arXiv 1406.5298), M2: p(y) = Cat(1/10),
p(z) = N(0, I), p(x | y, z) Bernoulli; q(y | x) q(z | x, y). ``--num-labelled N``
training images keep their label (balanced over the classes); for them y is
observed and the classifier q(y|x) is also trained on log q(y|x) with weight
0.1 * 50000 / N per image (the paper's alpha = 0.1 N); for the rest the label is
summed out exactly (the guide enumerates it). The script trains the built-in
pair the way ``pyrovae train --model m2 --condition-on labels --num-labelled N``
does, reloads the best checkpoint, prints the test error of ``guide.classify``
and the test ELBO (a bound on log p(x, y) of the labelled test data), and draws
the paper's analogies (its figure 1): for a few test images, z = the mean of
q(z | x, y) with their own label, decoded with each y = 0..9 -- the style held,
the class changed.

    python examples/ssvae_mnist.py --data-dir DIR [--num-labelled 100] [--epochs 5]

``DIR`` holds the four MNIST IDX files. An epoch (50,000 images, the label of
unlabelled ones summed over 10 classes) takes about 40 s of one CPU core with
the paper's 500 hidden units. The paper trains for about 3000 epochs (11.97%
test error with 100 labels); a few epochs land far above it -- see
``benchmarks/ssvae_table.py`` and BENCHMARKS.md.
"""

import argparse
import json
import os

import torch

from pyrovae.app import viz
from pyrovae.app.config import make_config
from pyrovae.app.runs import load_run, train
from pyrovae.infer.trace import evaluation_mode

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
parser.add_argument("--num-labelled", type=int, default=100, help="training images that keep their label")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--hidden", type=int, nargs="+", default=[500])
parser.add_argument("--latent-dim", type=int, default=50)
parser.add_argument("--batch-size", type=int, default=100)
parser.add_argument("--lr", type=float, default=3e-4)
parser.add_argument("--num-train", type=int, default=None, help="training images (default: all 50000)")
parser.add_argument("--num-test", type=int, default=None, help="test images (default: all 10000)")
parser.add_argument("--val-size", type=int, default=None, help="validation images (default: 10000)")
parser.add_argument("--out", default="runs/ssvae-mnist", help="run folder (must not hold a run yet)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

cfg = make_config(model="m2", dataset="mnist", data_dir=args.data_dir, condition_on="labels",
                  num_labelled=args.num_labelled, hidden=args.hidden, latent_dim=args.latent_dim,
                  activation="softplus", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  num_train=args.num_train, num_test=args.num_test, val_size=args.val_size, seed=args.seed,
                  out=args.out)
summary = train(cfg, progress=False)
run = load_run(args.out)
test = run.data.test.fixed(args.seed)  # one binarization of the test images, drawn with the seed
x, y = test.data, test.fields["y"]

with run.scope(), evaluation_mode(run.model, run.guide), torch.no_grad():
    error = float((run.guide.classify(x) != y).float().mean())
    rows = x[:8]
    z = viz.guide_means(run.guide, rows, y=y[:8])["z"]                     # style of each test image
    classes = torch.arange(10)
    z_grid = z.repeat_interleave(len(classes), 0)                            # row r: image r's style
    y_grid = classes.repeat(len(rows))                                       # column c: class c
    shapes_only = torch.zeros(len(y_grid), *x.shape[1:])
    analogies = viz.decode_means(run.model, {"z": z_grid}, shapes_only, y=y_grid)
picture = os.path.join(args.out, "analogies.png")
viz.save_grid(torch.cat([rows[:, None], analogies.reshape(len(rows), 10, *x.shape[1:])], 1).flatten(0, 1),
              picture, nrow=11, title="test image | its z = E q(z|x,y) decoded with y = 0 .. 9")
print(json.dumps({"num_labelled": args.num_labelled, "test_error": error, "test_elbo": summary["test_elbo"],
                  "epochs": summary["epochs_run"], "train_seconds": summary["train_seconds"],
                  "alpha_per_labelled_datum": run.model.alpha, "picture": picture}, indent=2))
