"""K-sample log p(x) of a conv VAE: today's pyrovae against the code before issue 13.

Issue 13 reported ``pyrovae evaluate RUN --iw-samples 5000 --num-test 100`` on a
conv VAE of ``shapes`` taking 16.6 minutes and 2.9 GB. This script times that
estimator as it was (``--old-commit``, default 9a960ab, the last commit before
the issue's work: fixed chunks of 500 particles for 100 data) against
today's :func:`pyrovae.log_likelihood` with its defaults, on the same networks
(one state dict loaded into both), the same test images and the same K. The old
code runs in a subprocess from ``git archive`` of that commit; the two alternate
``--repeats`` times, and both NLLs are printed so the reader sees they estimate
the same number. Prints JSON with wall and CPU time (``time.process_time`` of
the process that ran the estimator) and the ratios old / new, beside the time
of the decoder alone on the same K x N latents (the floor of any K-sample
estimator of this model).

    OMP_NUM_THREADS=1 python benchmarks/eval_speed_history.py --iw-samples 1000 --num-test 100
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time

import torch

from common import environment
import pyrovae
from pyrovae.app.build import build_pair
from pyrovae.app.config import make_config
from pyrovae.data import load_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OLD_RUNNER = textwrap.dedent("""
    import json, sys, time
    import torch
    import pyrovae
    from pyrovae.build import build_pair
    from pyrovae.estimate import log_likelihood
    from pyrovae.runs import make_config

    state, images, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    assert pyrovae.__file__.startswith(sys.argv[4]), pyrovae.__file__
    torch.set_grad_enabled(False)
    size = int(sys.argv[6])
    model, guide = build_pair(make_config(arch="conv", image_shape=(1, size, size)))
    saved = torch.load(state)
    model.load_state_dict(saved["model"]), guide.load_state_dict(saved["guide"])
    x = torch.load(images)
    start, cpu = time.perf_counter(), time.process_time()
    ll = log_likelihood(model, guide, x, num_samples=k, seed=0)
    print(json.dumps({"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "nll": ll.nll,
                      "nll_std_error": ll.nll_std_error}))
""")


def old_tree(commit, into):
    """The package as it was at ``commit``, laid out as it installed (models/ and guides/ inside pyrovae/)."""
    os.makedirs(into)
    archive = os.path.join(into, "old.tar")
    subprocess.run(["git", "-C", REPO, "archive", "-o", archive, commit, "pyrovae", "models", "guides"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    for package in ("models", "guides"):
        os.replace(os.path.join(into, package), os.path.join(into, "pyrovae", package))
    return into


def run_old(tree, state, images, k):
    env = dict(os.environ, PYTHONPATH=tree, PYTHONSAFEPATH="1")
    code = "import sys; sys.path.insert(0, sys.argv[5]); " + OLD_RUNNER
    size = str(torch.load(images).shape[-1])
    out = subprocess.run([sys.executable, "-c", code, state, images, str(k), os.path.join(tree, "pyrovae"), tree, size],
                         env=env, check=True, capture_output=True, text=True, cwd=tree)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_new(model, guide, x, k):
    start, cpu = time.perf_counter(), time.process_time()
    ll = pyrovae.log_likelihood(model, guide, x, num_samples=k, seed=0, progress=False)
    return {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "nll": ll.nll,
            "nll_std_error": ll.nll_std_error}


def decoder_floor(model, guide, x, k, chunk=5000):
    """CPU and wall time of the decoder alone on K x N latents: what any K-sample estimator must spend."""
    latent_dim = guide.encoder.latent_dim
    start, cpu = time.perf_counter(), time.process_time()
    for done in range(0, k * len(x), chunk):
        model.decoder(torch.randn(min(chunk, k * len(x) - done), latent_dim))
    return {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-commit", default="9a960ab")
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=28, choices=(28, 64),
                        help="28: an MNIST-sized conv VAE, scored on random binary images (the estimator's cost "
                             "does not depend on the pixels); 64: on shapes test images")
    args = parser.parse_args()
    torch.manual_seed(0)
    size = args.image_size
    model, guide, _ = build_pair(make_config(arch="conv", likelihood="bernoulli", image_shape=[1, size, size]))
    if size == 64:
        x = load_dataset("shapes", num_train=8, val_size=8, num_test=args.num_test, seed=0).test.data
    else:
        x = torch.bernoulli(torch.full((args.num_test, 1, size, size), 0.2), generator=torch.Generator().manual_seed(0))
    runs = {"old": [], "new": [], "decoder alone": []}
    with tempfile.TemporaryDirectory() as tmp:
        state, images = os.path.join(tmp, "state.pt"), os.path.join(tmp, "images.pt")
        torch.save({"model": model.state_dict(), "guide": guide.state_dict()}, state)
        torch.save(x, images)
        tree = old_tree(args.old_commit, os.path.join(tmp, "old"))
        with torch.no_grad():
            for _ in range(args.repeats):
                runs["old"].append(run_old(tree, state, images, args.iw_samples))
                runs["new"].append(run_new(model, guide, x, args.iw_samples))
                runs["decoder alone"].append(decoder_floor(model, guide, x, args.iw_samples))
    median = {name: {key: statistics.median(r[key] for r in rs) for key in ("wall_s", "cpu_s")}
              for name, rs in runs.items()}
    print(json.dumps({"benchmark": "eval_speed_history", "old_commit": args.old_commit, "image_size": size,
                      "iw_samples": args.iw_samples,
                      "num_test": args.num_test, "runs": runs, "median": median,
                      "speedup_wall": median["old"]["wall_s"] / median["new"]["wall_s"],
                      "speedup_cpu": median["old"]["cpu_s"] / median["new"]["cpu_s"], **environment()}, indent=2))


if __name__ == "__main__":
    main()
