"""Seconds to compute all five disentanglement scores on ``shapes``, at disentanglement_lib's sample sizes.

disentanglement_lib's defaults (Locatello et al. 2019) use 10,000 training
points per metric: BetaVAE and FactorVAE 10,000 train / 5,000 eval points of
64-observation batches (FactorVAE also 10,000 points for its variance
estimate), MIG 10,000 points, DCI and SAP 10,000 train / 5,000 test points, and
100 boosting stages in DCI -- ``pyrovae metrics RUN`` with its default
``--num-points 10000``. The cost is driven by the observations rendered and
encoded: 2 x 64 per BetaVAE point and 64 per FactorVAE point, one per MIG, DCI
or SAP point. The reference in the same process is the same computation with
every sample size divided by ``--ratio`` (default 10: 1,000 points).

The representation is the mean of q(z|x) of the default shapes guide (MLP
4096-400-10, untrained: the encoder's cost does not depend on its weights),
standardised so that every dimension stays above FactorVAE's pruning threshold
and the metric does its full work. Prints JSON: per metric and in total, the
seconds, the observations encoded and the ratio to the reference.

    python benchmarks/metric_cost.py [--num-points 10000] [--ratio 10] [--trees 100]
"""

import argparse
import json

import numpy as np
import pyro

from common import environment
from pyrovae.app.build import build_pair
from pyrovae.data import ShapesFactors
from pyrovae.evaluate.disentangle import METRICS, compute_all, mean_representation
from pyrovae.app.config import make_config

BATCH = 64


def observations(n, batch=BATCH):
    """Observations each metric encodes with n training points (n / 2 evaluation points)."""
    n_eval = n // 2
    return {"beta_vae": 2 * batch * (n + n_eval), "factor_vae": n + batch * (n + n_eval), "mig": n,
            "dci": n + n_eval, "sap": n + n_eval}


def standardized_guide_means(seed):
    cfg = make_config(dataset="shapes", out="unused")
    cfg["image_shape"] = list(ShapesFactors.image_shape)
    pyro.set_rng_seed(seed)
    _, guide, _ = build_pair(cfg)
    means = mean_representation(guide, sites="z")
    sample = means(ShapesFactors().sample(2000, np.random.default_rng(seed))[1])
    loc, scale = sample.mean(0), sample.std(0)
    return lambda x: (means(x) - loc) / scale


def timed(representation, n, trees, seed):
    scores = compute_all(representation, ShapesFactors(), np.random.default_rng(seed), num_train=n, num_eval=n // 2,
                         num_variance_estimate=n, batch_size=BATCH, n_estimators=trees)
    return {name: scores[name]["seconds"] for name in METRICS}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-points", type=int, default=10_000)
    p.add_argument("--ratio", type=int, default=10, help="the reference uses num_points / ratio points")
    p.add_argument("--trees", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    representation = standardized_guide_means(args.seed)
    small = args.num_points // args.ratio
    reference = timed(representation, small, args.trees, args.seed)
    full = timed(representation, args.num_points, args.trees, args.seed)
    obs_small, obs_full = observations(small), observations(args.num_points)
    result = {
        **environment(), "num_points": args.num_points, "reference_points": small, "trees": args.trees,
        "per_metric": {name: {"seconds": full[name], "observations": obs_full[name],
                              "reference_seconds": reference[name], "reference_observations": obs_small[name],
                              "ratio": full[name] / reference[name]} for name in METRICS},
        "total_seconds": sum(full.values()), "reference_total_seconds": sum(reference.values()),
        "total_ratio": sum(full.values()) / sum(reference.values()),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
