"""beta-VAE sweep and one controlled-capacity run on ``shapes``: bound, active units, disentanglement.

Every setting trains the same pair (the default MLP VAE, latent dim 10, Bernoulli
likelihood) from the same seed on the same ``--num-train`` images drawn from the
shapes factor grid (dSprites' grid: 3 shapes x 6 scales x 40 orientations x 32 x
32 positions), for the same number of epochs, with one objective each:

- beta in ``--betas`` (default 1, 4, 16): reconstruction - beta KL (Higgins et al. 2017);
  beta = 1 is the ELBO and the reference;
- controlled capacity: reconstruction - gamma |KL - C|, C rising linearly from 0
  to ``--capacity`` nats over the first ``--capacity-fraction`` of the steps
  (Burgess et al. 2018), gamma = ``--gamma``.

For each it reports the test ELBO and KL (nats per image, 1000 test images),
the active units A_u = Cov_x(E_q[u|x]) > 0.01 over the test images (Burda et al.
2015), and every disentanglement score of :func:`pyrovae.evaluate.disentangle.compute_all`
on the guide's mean representation, with ``--num-points`` training points per
metric (half as many evaluation points; disentanglement_lib uses 10,000 / 5,000)
and ``--trees`` boosting stages in DCI. Prints one JSON object per setting, then
the table in Markdown.

    python benchmarks/beta_sweep.py [--num-train 6400] [--epochs 10] [--batch-size 64] [--num-points 500]
                                    [--trees 20] [--betas 1 4 16] [--capacity 20]

The defaults (1000 SVI steps per setting, 500 metric points) fit about 15
minutes for the four settings on a shared 2-core CPU; the published beta-VAE
runs train for hundreds of thousands of steps, so read the table as the
direction of the trend at a small budget, not as the papers' numbers.
"""

import argparse
import json
import time

import numpy as np
import pyro
import torch

from common import environment
from pyrovae.app.build import build_pair
from pyrovae.data import ShapesFactors, load_dataset
from pyrovae.evaluate.diagnostics import active_units
from pyrovae.evaluate.disentangle import compute_all, mean_representation
from pyrovae.infer.elbo import ELBO
from pyrovae.app.config import make_config
from pyrovae.app.runs import make_objective
from pyrovae.infer.svi import SVIRun, evaluate_elbo

def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--betas", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    p.add_argument("--capacity", type=float, default=20.0, help="C_max of the controlled-capacity run (0: skip it)")
    p.add_argument("--capacity-fraction", type=float, default=0.6,
                   help="fraction of the training steps over which C rises to C_max")
    p.add_argument("--gamma", type=float, default=1000.0)
    p.add_argument("--num-train", type=int, default=6400)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--num-points", type=int, default=500)
    p.add_argument("--trees", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def settings(args):
    steps = args.epochs * -(-args.num_train // args.batch_size)
    # beta = 1 asks for the ELBO by name: with no objective option the vae on shapes gets the main job's beta = 0.5
    out = [(f"beta={b:g}", {"beta": b} if b != 1 else {"objective": "elbo"}) for b in args.betas]
    if args.capacity > 0:
        capacity_steps = max(1, round(args.capacity_fraction * steps))
        out.append((f"capacity C={args.capacity:g} over {capacity_steps} steps, gamma={args.gamma:g}",
                    {"capacity": args.capacity, "capacity_steps": capacity_steps, "gamma": args.gamma}))
    return out


@torch.no_grad()
def mean_kl(model, guide, images):
    """KL(q(z|x) || p(z)) per image, averaged over ``images`` (analytic)."""
    terms = [ELBO().terms(model, guide, images[i:i + 500]) for i in range(0, len(images), 500)]
    return sum(float(t.total_kl) for t in terms) / len(images)


def run_setting(name, overrides, data, args):
    cfg = make_config(dataset="shapes", latent_dim=args.latent_dim, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, seed=args.seed, num_train=args.num_train, out="unused", **overrides)
    cfg["image_shape"] = list(data.image_shape)
    pyro.set_rng_seed(args.seed)
    model, guide, _ = build_pair(cfg)
    run = SVIRun(model, guide, data.train, None, make_objective(cfg), lr=cfg["lr"], batch_size=cfg["batch_size"],
                 epochs=cfg["epochs"], seed=cfg["seed"], progress=False)
    start = time.perf_counter()
    history = run.fit()
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = compute_all(mean_representation(guide, sites="z"), ShapesFactors(), np.random.default_rng(args.seed),
                         num_train=args.num_points, num_eval=args.num_points // 2,
                         num_variance_estimate=args.num_points, n_estimators=args.trees)
    return {
        "setting": name, **overrides,
        "test_elbo": evaluate_elbo(model, guide, data.test, seed=args.seed),
        "test_kl": mean_kl(model, guide, data.test.data),
        # q(z|x) depends on x only: one draw gives E_q[z|x] exactly
        "active_units": active_units(model, guide, data.test, num_samples=1).counts["z"],
        "last_train_kl": history[-1]["train_kl"],
        "beta_vae": scores["beta_vae"]["eval_accuracy"], "factor_vae": scores["factor_vae"]["eval_accuracy"],
        "mig": scores["mig"]["mig"], "dci_disentanglement": scores["dci"]["disentanglement"],
        "dci_completeness": scores["dci"]["completeness"],
        "dci_informativeness": scores["dci"]["informativeness_test"], "sap": scores["sap"]["sap"],
        "train_seconds": train_seconds, "metric_seconds": time.perf_counter() - start,
    }


COLUMNS = [("setting", "setting", "{}"), ("test ELBO", "test_elbo", "{:.1f}"), ("test KL", "test_kl", "{:.1f}"),
           ("AU", "active_units", "{}"), ("BetaVAE", "beta_vae", "{:.3f}"), ("FactorVAE", "factor_vae", "{:.3f}"),
           ("MIG", "mig", "{:.3f}"), ("DCI D", "dci_disentanglement", "{:.3f}"),
           ("DCI C", "dci_completeness", "{:.3f}"), ("DCI I", "dci_informativeness", "{:.3f}"),
           ("SAP", "sap", "{:.3f}"), ("train s", "train_seconds", "{:.0f}"), ("metrics s", "metric_seconds", "{:.0f}")]


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    data = load_dataset("shapes", num_train=args.num_train, val_size=100, num_test=1000, seed=args.seed)
    rows = []
    for name, overrides in settings(args):
        row = run_setting(name, overrides, data, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(json.dumps({**environment(), **vars(args)}))
    print("| " + " | ".join(c[0] for c in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(fmt.format(row[key]) for _, key, fmt in COLUMNS) + " |")


if __name__ == "__main__":
    main()
