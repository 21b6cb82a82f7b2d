"""Time per SVI step of pyrovae's default training path against a hand-written PyTorch loop.

Both train the same networks (784-400-20 MLP encoder and decoder, Bernoulli
likelihood, batch 128, Adam) with the same estimator (one reparameterised draw,
analytic Gaussian KL) in one process, on the same batches. Steps alternate
between the methods in blocks so that machine noise hits all alike. Prints JSON:
the median seconds per step of pyrovae's default (captured graph) step, its
eager step and the hand-written loop, and the ratios to the hand-written loop.

    python benchmarks/svi_step.py [--steps 300] [--repeats 5]
"""

import argparse
import json
import statistics

import pyro
import torch
import torch.nn.functional as F

from pyrovae.models import VAE
from pyrovae.guides import GaussianGuide
from pyrovae.nn.likelihoods import Bernoulli
from pyrovae.nn.nets import MLPDecoder, MLPEncoder
from pyrovae.infer.elbo import ELBO
from pyrovae.nn.priors import StandardNormal
from pyrovae.infer.step import StepFunction

from common import environment, time_block

SHAPE = (1, 28, 28)


def make_nets(seed, latent_dim=20):
    torch.manual_seed(seed)
    return MLPEncoder(SHAPE, latent_dim, (400,)), MLPDecoder(SHAPE, latent_dim, (400,))


def handwritten_step(encoder, decoder, optimizer, x):
    """The reference: the same ELBO written directly in PyTorch."""
    loc, log_scale = encoder(x)
    scale = log_scale.exp()
    z = loc + scale * torch.randn_like(loc)
    logits = decoder(z)
    rec = -F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum() - log_scale.sum()
    loss = -(rec - kl) / x.shape[0]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per method")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(args.batch_size, *SHAPE, generator=gen) < 0.13).float() for _ in range(args.steps)]

    enc_ref, dec_ref = make_nets(1)
    opt_ref = torch.optim.Adam([*enc_ref.parameters(), *dec_ref.parameters()], lr=1e-3)

    enc, dec = make_nets(1)
    model = VAE(dec, StandardNormal(20), Bernoulli())
    guide = GaussianGuide(enc)
    module = ELBO(analytic_kl=True)(model, guide)
    params = list(module.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    pyro.enable_validation(False)
    modes = {mode: StepFunction(module, params, mode) for mode in ("graph", "eager")}

    def steps(mode):
        def pyro_step(x):
            modes[mode](x)
            opt.step()
        return pyro_step

    def ref_step(x):
        handwritten_step(enc_ref, dec_ref, opt_ref, x)

    for step in (steps("graph"), steps("eager"), ref_step):  # warm-up (and the graph's capture)
        time_block(step, batches[:20])
    times = {"graph": [], "eager": [], "handwritten": []}
    for _ in range(args.repeats):
        times["graph"].append(time_block(steps("graph"), batches))
        times["handwritten"].append(time_block(ref_step, batches))
        times["eager"].append(time_block(steps("eager"), batches))
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "svi_step",
        "network": "784-400-20 MLP, Bernoulli, batch %d" % args.batch_size,
        "s_per_step": median,
        "ratio_default_graph": median["graph"] / median["handwritten"],
        "ratio_eager": median["eager"] / median["handwritten"],
        "ratio_graph_per_block": [a / b for a, b in zip(times["graph"], times["handwritten"])],
        **environment(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
