"""Cost of an SVI step of the HVAE (L=2) with a VampPrior against the same step with a standard prior.

The VampPrior paper's MNIST setting (Tomczak & Welling 2018, arXiv 1705.07120):
two 40-d latent levels, 300-unit layers, batch 100, K pseudo-inputs of 28x28.
Each VampPrior step also runs the guide's q(z2 | u) on the K pseudo-inputs and a
K-component mixture log-density for every datum; this script measures what that
costs, as a ratio of median seconds per step in one process, with the methods
timed in alternating blocks. Both use pyrovae's default (captured graph) step.

    python benchmarks/vamp_step.py [--components 500] [--steps 100] [--repeats 5]
"""

import argparse
import json
import statistics

import pyro
import torch

from pyrovae.app.build import build_pair
from pyrovae.infer.elbo import ELBO
from pyrovae.app.config import make_config
from pyrovae.infer.step import StepFunction

from common import environment, time_block


def make_step(prior, components):
    cfg = make_config(model="hvae", prior=prior, components=components, latent_dim=40, hidden=[300, 300],
                      out="unused")
    cfg["image_shape"] = [1, 28, 28]
    pyro.set_rng_seed(0)
    model, guide, _ = build_pair(cfg)
    module = ELBO(warmup=100)(model, guide)
    params = list(module.parameters())
    opt = torch.optim.Adam(params, lr=5e-4)
    step_fn = StepFunction(module, params, "graph")

    def step(x):
        step_fn(x)
        opt.step()

    return step, sum(p.numel() for p in params)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=500)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(args.batch_size, 1, 28, 28, generator=gen) < 0.13).float() for _ in range(args.steps)]
    pyro.enable_validation(False)
    steps = {name: make_step(name, args.components) for name in ("standard", "mog", "vamp")}
    for step, _ in steps.values():
        time_block(step, batches[:10])  # capture and warm up
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, (step, _) in steps.items():
            times[name].append(time_block(step, batches))
    median = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "benchmark": "vamp_step",
        "network": f"HVAE L=2, 40+40 latents, 300-300 MLPs, batch {args.batch_size}, K={args.components}",
        "s_per_step": median,
        "ratio_vamp_to_standard": median["vamp"] / median["standard"],
        "ratio_mog_to_standard": median["mog"] / median["standard"],
        "parameters": {k: n for k, (_, n) in steps.items()},
        **environment(),
    }, indent=2))


if __name__ == "__main__":
    main()
