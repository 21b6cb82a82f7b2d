"""Where a K-sample estimate of a conv VAE spends its time, and the three kernels that cut it.

A K-sample log p(x) of a 64x64 conv VAE is almost all decoder (transposed
convolutions, their activations) and the Bernoulli log-density of its output.
This script times, in one process with the two sides of each comparison
alternating in blocks (CPU time, ``time.process_time``):

- ``last_layer``: the decoder's last layer (32 channels at 32x32 -> C at 64x64,
  also 32 at 14x14 -> 1 at 28x28) as ``nn.ConvTranspose2d`` and as
  :class:`pyrovae.nn.nets.SubPixelConvTranspose2d`, without gradients (how
  evaluation runs it) and with them (how training would: it trains with the
  transposed convolution);
- ``activations``: the 64x64 :class:`~pyrovae.nn.nets.ConvDecoder` without
  gradients with in-place ReLUs (as built) and with ReLUs that allocate;
- ``bernoulli``: the log-density of 64x64 binary images under K x B logits,
  ``-binary_cross_entropy_with_logits`` summed (torch's ``Bernoulli``) against
  :class:`pyrovae.nn.likelihoods.BernoulliImage`, with each one's float32 error
  against float64 on a confident decoder's logits (and the error of the sum
  ``x.l - softplus(l)``, a faster form this library does not use because of it).

    OMP_NUM_THREADS=1 python benchmarks/decoder_kernels.py [--images 1000] [--repeats 5]
"""

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F

from common import environment
from pyrovae.nn.likelihoods import BernoulliImage
from pyrovae.nn.nets import ConvDecoder, SubPixelConvTranspose2d


def cpu_seconds(fn, repeats):
    """The median CPU seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def compare(sides, repeats, blocks=3):
    """``{name: median CPU seconds}`` of each side's function, the sides alternating in ``blocks`` blocks."""
    times = {name: [] for name in sides}
    for _ in range(blocks):
        for name, fn in sides.items():
            times[name].append(cpu_seconds(fn, repeats))
    return {name: statistics.median(t) for name, t in times.items()}


def last_layer(images, repeats):
    rows = []
    for c_in, c_out, size in [(32, 1, 32), (32, 2, 32), (32, 3, 32), (32, 6, 32), (32, 1, 14)]:
        sub = SubPixelConvTranspose2d(c_in, c_out).to(memory_format=torch.channels_last)
        plain = torch.nn.ConvTranspose2d(c_in, c_out, 4, 2, 1).to(memory_format=torch.channels_last)
        plain.load_state_dict(sub.state_dict())
        x = torch.randn(images, c_in, size, size).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            t = compare({"transposed": lambda: plain(x), "sub_pixel": lambda: sub(x)}, repeats)
            error = (sub(x) - plain(x)).abs().max().item()
        x.requires_grad_()
        g = torch.randn(images, c_out, 2 * size, 2 * size)
        t_grad = compare({"transposed": lambda: plain(x).backward(g), "sub_pixel": lambda: sub(x).backward(g)},
                         repeats)
        rows.append({"layer": f"{c_in}x{size}x{size} -> {c_out}x{2 * size}x{2 * size}",
                     "no_grad_s": t, "speedup_no_grad": t["transposed"] / t["sub_pixel"],
                     "forward_backward_s": t_grad, "max_abs_difference": error})
    return rows


def activations(images, repeats):
    torch.manual_seed(0)
    in_place = ConvDecoder((1, 64, 64), 10).eval()
    allocating = copy.deepcopy(in_place)
    for module in allocating.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    z = torch.randn(images, 10)
    with torch.no_grad():
        t = compare({"allocating": lambda: allocating(z), "in_place": lambda: in_place(z)}, repeats)
    return {"decoder_no_grad_s": t, "speedup": t["allocating"] / t["in_place"]}


def bernoulli(images, repeats):
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((images // 50, 1, 64, 64), 0.2), generator=g)
    logits = (2 * x - 1) * 12 + torch.randn(50, *x.shape, generator=g)  # a confident decoder
    dims = (-3, -2, -1)
    forms = {
        "torch_bernoulli": lambda lg, xx: -F.binary_cross_entropy_with_logits(
            *torch.broadcast_tensors(lg, xx), reduction="none").sum(dims),
        "bernoulli_image": lambda lg, xx: BernoulliImage(lg, 3).log_prob(xx),
        "dot_minus_softplus": lambda lg, xx: (lg * xx).sum(dims) - F.softplus(lg).sum(dims),
    }
    t = compare({name: (lambda f=f: f(logits, x)) for name, f in forms.items()}, repeats)
    exact = forms["torch_bernoulli"](logits.double(), x.double())
    errors = {name: (f(logits, x).double() - exact).abs().max().item() for name, f in forms.items()}
    return {"images": 50 * len(x), "cpu_s": t, "speedup": t["torch_bernoulli"] / t["bernoulli_image"],
            "float32_max_abs_error": errors, "mean_abs_log_density": exact.abs().mean().item()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images per call")
    parser.add_argument("--repeats", type=int, default=5, help="calls per block (3 blocks per side)")
    args = parser.parse_args()
    print(json.dumps({"benchmark": "decoder_kernels", "images": args.images,
                      "last_layer": last_layer(args.images, args.repeats),
                      "activations": activations(args.images, args.repeats),
                      "bernoulli": bernoulli(10 * args.images, args.repeats), **environment()}, indent=1))


if __name__ == "__main__":
    main()
