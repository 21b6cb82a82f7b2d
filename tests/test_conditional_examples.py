"""The conditional-VAE and M2 examples and the M2 table run end to end on a tiny MNIST look-alike.

Slow (each script trains, reloads, draws its pictures and writes a report in a fresh interpreter: half a
minute to a minute on a shared 2-core machine): run with ``-m slow``.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import write_tiny_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--num-train", "120", "--val-size", "40", "--num-test", "30", "--epochs", "1", "--hidden", "16",
        "--latent-dim", "2"]


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """The four IDX files of 200 training and 30 test grey images in 10 classes."""
    folder = tmp_path_factory.mktemp("mnist")
    return write_tiny_mnist(folder, (("train", 200), ("t10k", 30)))


def _run(script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _last_json(stdout):
    start = stdout.index("{\n")
    return json.loads(stdout[start:stdout.index("\n}", start) + 2])


@pytest.mark.slow
def test_cvae_example_draws_a_row_per_class(tiny_mnist, tmp_path):
    out = _last_json(_run("examples/cvae_mnist.py", "--data-dir", tiny_mnist, "--out", str(tmp_path / "run"), *TINY))
    assert out["test_elbo"] < 0 and os.path.getsize(out["picture"]) > 0


@pytest.mark.slow
def test_ssvae_example_and_table_classify_the_test_data(tiny_mnist, tmp_path):
    out = _last_json(_run("examples/ssvae_mnist.py", "--data-dir", tiny_mnist, "--num-labelled", "20",
                          "--out", str(tmp_path / "run"), *TINY))
    assert 0 <= out["test_error"] <= 1 and out["alpha_per_labelled_datum"] == pytest.approx(0.1 * 120 / 20)
    stdout = _run("benchmarks/ssvae_table.py", "--data-dir", tiny_mnist, "--labels", "20", "30",
                  "--baseline-steps", "5", "--out", str(tmp_path / "table"), *TINY)
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"labels"')]
    assert [r["labels"] for r in rows] == [20, 30]
    # batch 100: one batch of the unlabelled data and one of the labelled data per epoch
    assert all(0 <= r["test_error"] <= 1 and r["steps"] == 2 * r["epochs"] for r in rows)
