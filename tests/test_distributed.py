"""Data-parallel training and sharded evaluation on torch.distributed (gloo, loopback only).

Ranks are processes forked from one fork server (which imported this module
once and never ran autograd, so forking is safe and takes no import time) that
find each other through torchrun's environment variables (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``): pyrovae joins the
process group itself as it does under torchrun. One test launches two real
torchrun agents as two nodes of a c10d rendezvous.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from pyrovae.app.config import make_config
from pyrovae.app.runs import load_run, train
from pyrovae.data import Split, ground_truth
from pyrovae.evaluate.diagnostics import active_units, elbo_surgery, kl_per_dimension
from pyrovae.evaluate.disentangle import compute_all, mean_representation
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.evaluate.ppc import run_ppc
from pyrovae.infer import checkpoint, distributed
from pyrovae.infer.runfolder import RunFolder
from pyrovae.infer.svi import SVIRun, evaluate_elbo

from conftest import small_pair

# what the ranks import, loaded once by the fork server (Python 3.11's server cannot see tests/ on its path)
mp.set_forkserver_preload(["pytest", "pyrovae.app.cli", "pyrovae.app.runs", "pyrovae.app.report",
                           "pyrovae.evaluate.ppc", "pyrovae.evaluate.disentangle", "pyrovae.evaluate.diagnostics"])

TINY = dict(num_train=64, val_size=32, num_test=32, epochs=3, hidden=[16], latent_dim=2, batch_size=32)
TINY_FLAGS = ["--num-train", "64", "--val-size", "32", "--num-test", "32", "--epochs", "3", "--hidden", "16",
              "--latent-dim", "2", "--batch-size", "32", "--no-progress"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world_size, port, fn, args, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        result = fn(*args)
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()
        if tdist.is_initialized():
            tdist.destroy_process_group()


def _launch(fn, *args, world_size=2, tmp_path, join=True):
    """Run ``fn(*args)`` on ``world_size`` forked ranks; returns every rank's result (or the context when not join)."""
    out = tmp_path / f"ranks-{_free_port()}"
    out.mkdir()
    context = mp.start_processes(_rank_main, args=(world_size, _free_port(), fn, args, str(out)), nprocs=world_size,
                                 join=False, start_method="forkserver")
    if not join:
        return context
    while not context.join(timeout=60):
        pass
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


# -- training: 2 ranks take the single-process step -----------------------------------------------------------

K, D = 3, 6


def enumerated_pair():
    """A function-style pair whose ELBO is exact (the class is enumerated in the guide): the gradient is a
    deterministic function of the parameters and the batch, so 1 and 2 ranks must take the same steps."""
    torch.manual_seed(0)
    decoder, encoder = nn.Embedding(K, D), nn.Linear(D, K)

    def model(x):
        pyro.module("decoder", decoder)
        logits = pyro.param("prior_logits", torch.zeros(K))
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=logits))
            pyro.sample("x", dist.Bernoulli(logits=decoder(y)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=encoder(x)), infer={"enumerate": "parallel"})

    return model, guide


def binary_rows(n=51, seed=1):
    g = torch.Generator().manual_seed(seed)
    centers = (torch.rand(K, D, generator=g) < 0.5).float()
    flips = (torch.rand(n, D, generator=g) < 0.1).float()
    return (centers[torch.randint(K, (n,), generator=g)] + flips) % 2


def _fit_enumerated(epochs, run_dir=None, resume=False):
    model, guide = enumerated_pair()
    run = SVIRun(model, guide, binary_rows(), binary_rows(20, seed=2), lr=0.05, batch_size=25, epochs=epochs,
                 run_dir=run_dir, progress=False)
    run.fit(resume=resume)
    return [p.detach().clone() for p in run.params], run.history


def _assert_close_params(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6), (x - y).abs().max()


def test_two_ranks_take_the_single_process_steps(tmp_path):
    """51 data in global batches of 25 (shares of 13 and 12 data, and a last batch of 1 datum that leaves one
    rank without data): module and param-store parameters, training statistics and validation bounds equal one
    process's."""
    ranks = _launch(_fit_enumerated, 3, tmp_path=tmp_path)
    single_params, single_history = _fit_enumerated(3)
    assert len(single_params) == 4  # encoder weight and bias, decoder embedding, prior logits (param store)
    for params, history in ranks:
        _assert_close_params(params, single_params)
        for row, ref in zip(history, single_history):
            assert row["train_elbo"] == pytest.approx(ref["train_elbo"], rel=1e-6)
            assert row["val_elbo"] == pytest.approx(ref["val_elbo"], rel=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(ranks[0][0], ranks[1][0]))  # the ranks hold identical parameters
    assert single_params[-1].abs().max() > 1e-3  # the param-store parameter was trained


def _fit_alone(epochs):
    with distributed.local():
        return _fit_enumerated(epochs)


def test_a_run_made_inside_local_trains_on_its_process_alone(tmp_path):
    """Under a process group, ``distributed.local()`` makes an ordinary single-process run (no collective)."""
    single_params, single_history = _fit_enumerated(2)
    for params, history in _launch(_fit_alone, 2, tmp_path=tmp_path):
        assert all(torch.equal(a, b) for a, b in zip(params, single_params))
        assert [r["val_elbo"] for r in history] == [r["val_elbo"] for r in single_history]


def test_a_two_rank_run_resumes_on_one_rank(tmp_path):
    """Resuming with another number of ranks continues from the same state: exact here, the objective has no draws."""
    run_dir = str(tmp_path / "run")
    _launch(_fit_enumerated, 2, run_dir, tmp_path=tmp_path)
    assert RunFolder(run_dir).manifest()["epoch"] == 2
    resumed, history = _fit_enumerated(4, run_dir, resume=True)
    whole, whole_history = _fit_enumerated(4)
    _assert_close_params(resumed, whole)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]


# -- sharded evaluation --------------------------------------------------------------------------------------

def _evaluations():
    torch.manual_seed(0)
    model, guide = small_pair(image_shape=(1, 8, 8), latent_dim=3, hidden=(16,))
    data = Split((torch.rand(70, 1, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.3).float())
    ll = log_likelihood(model, guide, data, num_samples=64, batch_size=16, chunk_size=24, seed=5)
    au = active_units(model, guide, data, batch_size=16, num_samples=8, seed=5)
    surgery = elbo_surgery(model, guide, data, num_points=45, point_block=20, batch_size=16, seed=5)
    ppc = run_ppc(model, guide, data, num_samples=6, batch_size=16, seed=5)
    _, shapes_guide = small_pair(latent_dim=3, hidden=(16,))  # for 64x64 images
    scores = compute_all(mean_representation(shapes_guide), ground_truth("shapes"), 7, num_train=60, num_eval=30,
                         num_variance_estimate=60, batch_size=8, n_estimators=3)
    return {"elbo": evaluate_elbo(model, guide, data, batch_size=16, seed=5),
            "ll": (ll.log_px, ll.std_error, ll.ess, ll.khat), "au": au.variance,
            "surgery": surgery.to_dict(), "kl": kl_per_dimension(model, guide, data, batch_size=16, seed=5),
            "ppc": (ppc["statistics"]["ink"], ppc["summary"], ppc["idata"].posterior["z"].values),
            "metrics": {name: {k: v for k, v in s.items() if k != "seconds"} for name, s in scores.items()}}


def _assert_equal_results(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True), (a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_equal_results(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_equal_results(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12, nan_ok=True)
    else:
        assert (a == b) if not hasattr(a, "shape") else (a == b).all()


def test_sharded_evaluation_equals_one_process(tmp_path):
    """NLL with its standard errors and k-hats, the ELBO, active units, KL per dimension, ELBO surgery, PPC draws
    and the metrics on 2 ranks equal one process's on the same seeds, in the data's order, on both ranks."""
    ranks = _launch(_evaluations, tmp_path=tmp_path)
    single = _evaluations()
    assert single["ll"][0].shape == (70,)
    for result in ranks:
        _assert_equal_results(result, single)


# -- run folders: a killed 2-rank run, and two torchrun agents as two nodes ----------------------------------

def _train_tiny(out, resume=False):
    summary = train(make_config(out=out, **TINY), resume=resume, progress=False)
    return summary["ranks"]


def _last_params(out):
    return checkpoint.load(RunFolder(out).checkpoint("last"))["pair"]


def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_result(tmp_path):
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    assert _launch(_train_tiny, whole, tmp_path=tmp_path) == [2, 2]
    context = _launch(_train_tiny, killed, tmp_path=tmp_path, join=False)
    deadline = time.time() + 600  # generous: a loaded 2-core machine is slow to start two fresh ranks
    while not os.path.exists(os.path.join(killed, "checkpoints.json")):
        assert time.time() < deadline and all(p.is_alive() for p in context.processes), "no first checkpoint"
        time.sleep(0.02)
    for pid in context.pids():  # both ranks die at once, as when a node is lost
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(mp.ProcessExitedException):
        context.join()
    assert not os.path.exists(os.path.join(killed, "summary.json"))
    _launch(_train_tiny, killed, True, tmp_path=tmp_path)
    a, b = _last_params(killed), _last_params(whole)
    assert all(torch.equal(a[role][k], b[role][k]) for role in a for k in a[role])
    rows = [json.loads(line) for line in open(os.path.join(killed, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    load_run(killed)  # the summary's test ELBO reloads on one process


def test_an_error_on_rank_0_stops_every_rank(tmp_path):
    """Rank 0 alone opens the run folder; its refusal reaches rank 1 instead of leaving it waiting."""
    out = str(tmp_path / "run")
    os.makedirs(out)
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write("{}")
    context = _launch(_train_tiny, out, tmp_path=tmp_path, join=False)
    try:
        for process in context.processes:  # each rank on its own: context.join SIGTERMs rank 1 once rank 0 fails
            process.join(timeout=600)
        assert [p.exitcode for p in context.processes] == [1, 1]  # rank 1 stopped by itself, not left waiting
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    with pytest.raises(mp.ProcessRaisedException, match="already holds a run"):
        context.join()


def test_two_torchrun_agents_as_two_nodes_train_one_run_folder(tmp_path):
    port = _free_port()
    out = tmp_path / "run"

    def agent(node):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={node}",
                   "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                   "--rdzv-id=pyrovae-test", "--local-addr=127.0.0.1", "-m", "pyrovae", "train", *TINY_FLAGS,
                   "--out", str(out)]
        return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})

    agents = [agent(0), agent(1)]
    outputs = [a.communicate(timeout=600) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs
    printed = "".join(o for o, _ in outputs)
    assert printed.count("test ELBO:") == 1  # rank 0 alone prints
    assert sorted(os.listdir(tmp_path)) == ["run"]  # one run folder, nothing written elsewhere
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["ranks"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert not any(name.startswith(".tmp-") for name in os.listdir(out))
