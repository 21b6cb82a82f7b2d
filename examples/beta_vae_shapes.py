"""A beta-VAE on ``shapes``: train, score the representation, draw latent traversals.

The beta-VAE (Higgins et al. 2017) trains on E_q[log p(x|z)] - beta KL(q(z|x) || p(z));
beta > 1 presses the code towards the factorised prior, and on data made from
independent factors -- here shapes' shape, scale, orientation and position --
towards one factor per latent dimension. The script trains one run with
``pyrovae.app.runs.train`` (the same code as ``pyrovae train --beta B``), scores the
guide's mean representation with all five disentanglement metrics on the full
shapes factor grid, and saves traversal grids (``pyrovae.app.viz.save_traversals``)
from the codes of a square, an ellipse and a heart: one row per latent
dimension, ordered by its KL, sweeping it from -3 to +3 prior standard
deviations with the others held at the image's code. Dimensions with KL near 0
are unused; each used one should change one factor, the same one from every
starting image.

    python examples/beta_vae_shapes.py [--beta 4] [--num-train 10000] [--epochs 5]
                                       [--num-points 1000] [--out runs/beta-vae-shapes]

The default budget (400 SVI steps, 1,000 metric points) takes about 3.5 minutes
on a 2-core CPU. At that budget the code is still entangled -- dimensions mix
scale and position, BetaVAE score about 0.69, MIG about 0.01 -- so read it as a
demonstration of the tools; ``BENCHMARKS.md``'s beta sweep shows how the scores
move with beta and training time.
"""

import argparse
import os

import numpy as np
import torch

from pyrovae.app import viz
from pyrovae.data import ShapesFactors
from pyrovae.data.shapes import SHAPE_NAMES
from pyrovae.evaluate.disentangle import compute_all, mean_representation
from pyrovae.app.config import make_config
from pyrovae.app.runs import load_run, train


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--beta", type=float, default=4.0)
    p.add_argument("--num-train", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--num-points", type=int, default=1000,
                   help="training points per metric (evaluation: half); disentanglement_lib uses 10000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("runs", "beta-vae-shapes"))
    return p.parse_args()


def main():
    args = parse_args()
    cfg = make_config(dataset="shapes", beta=args.beta, num_train=args.num_train, epochs=args.epochs,
                      latent_dim=args.latent_dim, seed=args.seed, out=args.out)
    summary = train(cfg, progress=False)
    print(f"beta = {args.beta:g}: test ELBO {summary['test_elbo']:.2f} nats per image "
          f"({summary['train_seconds']:.0f} s of training)")

    run = load_run(args.out)
    model, guide, data = run.model, run.guide, run.data
    n = args.num_points
    scores = compute_all(mean_representation(guide, sites="z"), ShapesFactors(), np.random.default_rng(args.seed),
                         num_train=n, num_eval=n // 2, num_variance_estimate=n, n_estimators=50)
    print(f"disentanglement scores ({n} training points per metric):")
    for metric, values in scores.items():
        shown = ", ".join(f"{k}={v:.3f}" for k, v in values.items() if isinstance(v, (int, float)) and k != "seconds")
        print(f"  {metric:<12} {shown}")

    x, shapes = data.test.data[:256], data.test.labels[:256, 0]
    with torch.no_grad():
        kl = viz.kl_per_dimension(model, guide, x)
    print(f"{int((kl.values > 0.1).sum())} of {args.latent_dim} latent dimensions carry more than 0.1 nats")
    for k, name in enumerate(SHAPE_NAMES):  # the same sweeps from a square's, an ellipse's and a heart's code
        base = int(torch.nonzero(shapes == k)[0])
        path = viz.save_traversals(model, guide, x, os.path.join(args.out, f"traversals-{name}.png"),
                                   base_index=base)
        print(f"latent traversals from the {name}: {path}")


if __name__ == "__main__":
    main()
