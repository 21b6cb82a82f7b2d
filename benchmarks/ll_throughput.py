"""Throughput of the K=5000 importance-sampled log p(x): pyrovae against a hand-written PyTorch estimator.

Both estimate, per test image, log p^(x) = logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K
(Burda et al. 2015, arXiv 1509.00519, the IWAE paper's test protocol) with its
delta-method standard error, for the same networks (the IWAE paper's 1-layer
model: 784-200-200-50 tanh encoder and decoder, Bernoulli likelihood), the same
chunking (K particles in chunks of ``--chunk-size``, ``--batch-size`` images at a
time) and the same streaming float64 log-sum-exp. pyrovae reads the pair through
Pyro (:func:`pyrovae.evaluate.likelihood.log_likelihood`); the reference is plain tensors.
The methods alternate ``--repeats`` times in one process, in a rotating order;
the figure is the ratio of medians. A second reference scores the pixels through
``torch.distributions.Bernoulli.log_prob`` (what Pyro's likelihood does) instead
of negating the summed binary cross-entropy, to show what part of a gap is the
distribution's arithmetic rather than pyrovae's machinery. Prints JSON.

    python benchmarks/ll_throughput.py [--num-images 100] [--samples 5000] [--repeats 3] [--data-dir DIR]

Without ``--data-dir`` the images are random binary images (throughput does not
depend on the data); with it, the first MNIST test images, binarized once.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.guides import GaussianGuide
from pyrovae.nn.likelihoods import Bernoulli
from pyrovae.models import VAE
from pyrovae.nn.nets import MLPDecoder, MLPEncoder
from pyrovae.nn.priors import StandardNormal
from pyrovae.util import chunk_sizes

from common import environment

SHAPE = (1, 28, 28)
LATENT, HIDDEN = 50, (200, 200)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def bernoulli_log_lik(logits, x):
    """log p(x | z) summed over the image: -BCE, negated after the sum (one pass fewer than torch.distributions)."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum((-3, -2, -1))


def distributions_log_lik(logits, x):
    """The same through ``torch.distributions.Bernoulli.log_prob`` (negates per pixel, then sums), as Pyro does."""
    return torch.distributions.Bernoulli(logits=logits, validate_args=False).log_prob(x).sum((-3, -2, -1))


@torch.no_grad()
def handwritten_log_likelihood(encoder, decoder, data, num_samples, chunk_size, batch_size, log_lik=bernoulli_log_lik):
    """The reference: log p^(x) and its standard error per image, written directly in PyTorch."""
    log_px, std_error = [], []
    for start in range(0, data.shape[0], batch_size):
        x = data[start:start + batch_size]
        loc, log_scale = encoder(x)
        scale = log_scale.exp()
        log_s1 = log_s2 = None
        for k in chunk_sizes(num_samples, chunk_size):
            eps = torch.randn(k, *loc.shape)
            z = loc + scale * eps
            log_q = (-0.5 * eps ** 2 - log_scale - HALF_LOG_2PI).sum(-1)
            log_prior = (-0.5 * z ** 2 - HALF_LOG_2PI).sum(-1)
            log_w = (log_lik(decoder(z), x) + log_prior - log_q).double()
            s1, s2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
            log_s1 = s1 if log_s1 is None else torch.logaddexp(log_s1, s1)
            log_s2 = s2 if log_s2 is None else torch.logaddexp(log_s2, s2)
        k = num_samples
        log_px.append(log_s1 - math.log(k))
        rel_var = (torch.exp(log_s2 - 2 * log_s1 + math.log(k)) - 1).clamp(min=0) * k / (k - 1)
        std_error.append(torch.sqrt(rel_var / k))
    return torch.cat(log_px), torch.cat(std_error)


def load_images(args):
    if args.data_dir is None:
        gen = torch.Generator().manual_seed(0)
        return (torch.rand(args.num_images, *SHAPE, generator=gen) < 0.13).float()
    from pyrovae.data import load_dataset

    data = load_dataset("mnist", args.data_dir, "dynamic", num_test=args.num_images)
    return data.test.fixed(0).data


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--samples", type=int, default=5000, help="K importance samples per image")
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method")
    parser.add_argument("--data-dir", default=None, help="MNIST IDX folder (default: random binary images)")
    args = parser.parse_args()

    x = load_images(args)
    torch.manual_seed(1)
    encoder = MLPEncoder(SHAPE, LATENT, HIDDEN, "tanh")
    decoder = MLPDecoder(SHAPE, LATENT, HIDDEN, "tanh")
    model, guide = VAE(decoder, StandardNormal(LATENT), Bernoulli()), GaussianGuide(encoder)
    sizes = dict(num_samples=args.samples, chunk_size=args.chunk_size, batch_size=args.batch_size)

    def pyrovae_run():
        return log_likelihood(model, guide, x, seed=0, **sizes)

    def reference_run():
        return handwritten_log_likelihood(encoder, decoder, x, **sizes)

    def distributions_run():
        return handwritten_log_likelihood(encoder, decoder, x, **sizes, log_lik=distributions_log_lik)

    small = dict(sizes, num_samples=args.chunk_size)
    log_likelihood(model, guide, x[:args.batch_size], seed=0, **small)  # warm-up
    handwritten_log_likelihood(encoder, decoder, x[:args.batch_size], **small)
    runs = {"pyrovae": pyrovae_run, "handwritten": reference_run, "handwritten_distributions": distributions_run}
    times, outputs = {name: [] for name in runs}, {}
    for repeat in range(args.repeats):
        names = list(runs)
        for name in names[repeat % 3:] + names[:repeat % 3]:  # rotate the order: no method always runs first
            t, outputs[name] = timed(runs[name])
            times[name].append(t)
    median = {k: statistics.median(v) for k, v in times.items()}
    ours, (ref_log_px, ref_se) = outputs["pyrovae"], outputs["handwritten"]
    # the same quantity: the two NLLs agree within their Monte Carlo standard errors
    gap = float((ours.log_px - ref_log_px).mean())
    gap_se = float((ours.std_error ** 2 + ref_se ** 2).sum().sqrt() / x.shape[0])
    result = {
        "benchmark": "ll_throughput",
        "network": "784-200-200-50 tanh MLP, Bernoulli",
        "num_images": x.shape[0], **sizes,
        "s_per_image": {k: v / x.shape[0] for k, v in median.items()},
        "ratio_pyrovae_to_handwritten": median["pyrovae"] / median["handwritten"],
        "ratio_per_repeat": [a / b for a, b in zip(times["pyrovae"], times["handwritten"])],
        "ratio_pyrovae_to_handwritten_distributions": median["pyrovae"] / median["handwritten_distributions"],
        "nll": {"pyrovae": ours.nll, "handwritten": float(-ref_log_px.mean()), "difference_in_se": gap / gap_se},
        **environment(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
