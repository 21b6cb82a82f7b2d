"""Importance-sampled log p(x) of a conv VAE: the old fixed chunking against the memory-budgeted one.

The old evaluation ran ``chunk_size=500`` particles for ``batch_size=100`` data
in every pass (50,000 decoded 64x64 images at once); the default now chooses the
chunk from a memory budget (``memory_mb=512``). Both estimate the same K-sample
log-likelihood of the same conv VAE on the same test images; the script prints
JSON with wall and CPU time, the peak bytes of live tensors of one pass, and
the speedup. Train the run first (or pass another run folder):

    pyrovae train --arch conv --num-train 2000 --epochs 1 --out /tmp/conv-run
    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py /tmp/conv-run --iw-samples 1000 --num-test 100
"""

import argparse
import json
import time

import torch

from common import environment
from pyrovae.app.runs import load_run
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.util import peak_tensor_bytes


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder of a conv VAE")
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=100)
    args = parser.parse_args()
    run = load_run(args.run)
    test = run.data.test.fixed(0).subset(args.num_test)
    settings = {"old: chunk 500 x batch 100": dict(chunk_size=500, batch_size=100),
                "new: memory budget 512 MB": dict(memory_mb=512, batch_size=100)}
    result = {"benchmark": "eval_speed", "run": args.run, "iw_samples": args.iw_samples, "num_test": len(test),
              "settings": {}, **environment()}
    with run.scope():
        for name, kwargs in settings.items():
            probe = dict(kwargs, batch_size=min(kwargs["batch_size"], len(test)))
            peak, _ = peak_tensor_bytes(lambda: log_likelihood(run.model, run.guide, test.subset(probe["batch_size"]),
                                                               num_samples=min(args.iw_samples, 500), seed=0,
                                                               **probe))
            ll, wall, cpu = timed(lambda: log_likelihood(run.model, run.guide, test, num_samples=args.iw_samples,
                                                         seed=0, **kwargs))
            result["settings"][name] = {"wall_s": wall, "cpu_s": cpu, "nll": ll.nll, "nll_std_error": ll.nll_std_error,
                                        "peak_tensor_mb_first_pass": peak / 2 ** 20}
    old, new = result["settings"].values()
    result["speedup_wall"] = old["wall_s"] / new["wall_s"]
    result["speedup_cpu"] = old["cpu_s"] / new["cpu_s"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
