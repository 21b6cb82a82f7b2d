"""What pyrovae guarantees about run folders and bad input, one promise per test.

Kills at chosen writes (``PYROVAE_KILL_AT_WRITE``, which stops the process inside
an atomic write and leaves its temporary file behind, as a real kill does) and a
real SIGKILL; a second writer; a full disk; divergence; bad arguments, data,
files and run folders. Each test asserts the clear error or the intact state.
"""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from pyrovae.app.cli import main
from pyrovae.app.config import ConfigError, check_resume, make_config
from pyrovae.app.runs import RunError, load_run, train
from pyrovae.data import Split
from pyrovae.infer import checkpoint
from pyrovae.infer.checkpoint import SimulatedKill
from pyrovae.infer.runfolder import RunFolder, RunFolderError
from pyrovae.infer.svi import DivergenceError

from conftest import small_pair

TINY = dict(num_train=64, val_size=32, num_test=32, epochs=3, hidden=[16], latent_dim=2, batch_size=32)
TINY_FLAGS = ["--num-train", "64", "--val-size", "32", "--num-test", "32", "--epochs", "3", "--hidden", "16",
              "--latent-dim", "2", "--batch-size", "32", "--no-progress"]


def _cfg(out, **overrides):
    return make_config(out=str(out), **{**TINY, **overrides})


def _last_params(out):
    return checkpoint.load(RunFolder(out).checkpoint("last"))["pair"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for role in a:
        for k in a[role]:
            assert torch.equal(a[role][k], b[role][k]), (role, k)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "whole"
    train(_cfg(out), progress=False)
    return out


def _assert_consistent(out):
    """After any kill: the manifest names two loadable checkpoints that agree with it and with each other."""
    folder = RunFolder(out)
    manifest = folder.manifest()
    if manifest is None:
        return
    last, best = (checkpoint.load(folder.checkpoint(w)) for w in ("last", "best"))
    assert last["epoch"] == manifest["epoch"] >= best["epoch"]
    assert manifest["best_val"] == last["best_val"] == max(r["val_elbo"] for r in last["history"])
    assert best["history"][-1]["val_elbo"] == manifest["best_val"]


# writes of a 3-epoch run: 1 config.json, then per epoch the checkpoint, the manifest, metrics.jsonl,
# then summary.json and report.html
@pytest.mark.parametrize("write", [1, 2, 3, 5, 6, 7, 11])
def test_a_kill_inside_any_write_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, uninterrupted, write):
    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "_WRITES", [0])
    monkeypatch.setenv("PYROVAE_KILL_AT_WRITE", str(write))
    with pytest.raises(SimulatedKill):
        train(_cfg(out), progress=False)
    monkeypatch.delenv("PYROVAE_KILL_AT_WRITE")
    assert any(name.startswith(".tmp-") for name in os.listdir(out))  # the kill left its temporary file
    _assert_consistent(out)
    train(_cfg(out), resume=os.path.exists(out / "config.json"), progress=False)
    assert not any(name.startswith(".tmp-") for name in os.listdir(out))  # orphans cleaned
    _assert_same(_last_params(out), _last_params(uninterrupted))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("write", range(1, 13))
def test_a_kill_inside_every_write_resumes(tmp_path, monkeypatch, uninterrupted, write):
    test_a_kill_inside_any_write_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, uninterrupted, write)


def _cli(*args, env=None):
    """The CLI in a child process with this process's thread count (float sums split over another number of
    threads round differently, and the bitwise promises hold for a fixed thread count)."""
    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen([sys.executable, "-m", "pyrovae", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **threads, **(env or {})})


def _wait_for(proc, ready, what, timeout=600):
    """Wait until ``ready()``; fail with the child's stderr if it exits first. The timeout is generous: a loaded
    2-core machine can take a minute to import torch in a fresh process."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the child exited with {proc.returncode} before {what}: {proc.stderr.read()}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"the child did not get to {what} in {timeout} s")
        time.sleep(0.05)


def test_sigkill_at_a_random_moment_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted):
    out = tmp_path / "run"
    flags = [*TINY_FLAGS, "--epochs", "3", "--out", str(out)]
    proc = _cli("train", *flags)
    _wait_for(proc, (out / "checkpoints.json").exists, "its first checkpoint")
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _assert_consistent(out)
    finished = (out / "summary.json").exists()
    assert main(["train", "--resume", *flags]) == 0 or finished
    _assert_same(_last_params(out), _last_params(uninterrupted))


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    proc = _cli("train", *TINY_FLAGS, "--epochs", "200", "--out", str(out))
    try:
        _wait_for(proc, lambda: (out / ".lock").exists() and (out / ".lock").read_text().strip(), "its lock")
        with pytest.raises(RunFolderError, match=rf"being written by another pyrovae process \(pid {proc.pid}\)"):
            train(_cfg(out), progress=False)
        with pytest.raises(RunFolderError, match="being written"):
            train(_cfg(out), resume=True, progress=False)
    finally:
        proc.kill()
        proc.wait()


def test_a_full_disk_is_named_and_the_last_good_checkpoint_stays(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save, calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RunFolderError, match=r"no space left on the device; the last good checkpoint "
                                             r"\(epoch-0001.pt\) is intact"):
        train(_cfg(out), progress=False)
    monkeypatch.undo()
    assert checkpoint.load(RunFolder(out).checkpoint("last"))["epoch"] == 1


def test_a_folder_that_cannot_be_written_fails_before_any_data_is_loaded(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunFolderError, match="cannot write the run folder"):
        train(_cfg(blocker / "run", dataset="mnist", data_dir=str(tmp_path / "no-data")), progress=False)
    with pytest.raises(RunFolderError, match="needs a path"):
        RunFolder("")


def test_divergence_stops_keeps_the_last_good_state_and_says_what_to_try(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", *TINY_FLAGS, "--lr", "1e6", "--likelihood", "gaussian", "--max-bad-steps", "3",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and "diverged" in err and "smaller learning rate" in err and len(err.strip().splitlines()) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "non-finite" in summary["reason"]
    folder = RunFolder(out)
    if folder.has_checkpoint():
        state = checkpoint.load(folder.checkpoint("last"))
        assert all(torch.isfinite(v).all() for role in state["pair"].values() for v in role.values())
        for line in (out / "metrics.jsonl").read_text().splitlines():  # strict JSON: no bare NaN
            json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


@pytest.mark.parametrize("flags,message", [
    (["--clip-norm", "-1"], "--clip-norm -1.0: expected a number > 0"),
    (["--clip-norm", "0"], "--clip-norm 0.0: expected a number > 0"),
    (["--patience", "0"], "--patience 0: expected a positive integer"),
    (["--num-train", "0"], "--num-train 0: expected a positive integer"),
    (["--num-test", "-5"], "--num-test -5: expected a positive integer"),
    (["--val-size", "0"], "--val-size 0: expected a positive integer"),
    (["--levels", "0", "--model", "hvae"], "--levels 0: expected a positive integer"),
    (["--components", "0", "--prior", "mog"], "--components 0: expected a positive integer"),
    (["--lr", "0"], "--lr 0.0: expected a number > 0"),
    (["--lr-decay", "1.5"], "--lr-decay 1.5: expected a number in (0, 1]"),
    (["--lr-decay-after", "-1"], "--lr-decay-after -1: expected an integer >= 0"),
    (["--out", ""], "needs a path"),
    (["--capacity-steps", "10"], "--capacity-steps set the controlled-capacity objective"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, flags, message):
    args = ["train", *TINY_FLAGS, *flags]
    if "--out" not in flags:
        args += ["--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_run_made_before_the_learning_rate_schedule_resumes_without_one(tmp_path):
    out = tmp_path / "run"
    train(_cfg(out, epochs=1), progress=False)
    saved = json.loads((out / "config.json").read_text())
    old = {k: v for k, v in saved.items() if k not in ("lr_decay", "lr_decay_after")}
    cfg = check_resume(old, {"epochs": 2})
    assert (cfg["lr_decay"], cfg["lr_decay_after"], cfg["epochs"]) == (1.0, 1, 2)


def test_options_given_with_resume_must_match_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY_FLAGS, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--lr", "0.5", "--seed", "3", "--epochs", "4"]) == 2
    err = capsys.readouterr().err
    run_lr = json.loads((out / "config.json").read_text())["lr"]  # the vae on shapes' default
    assert f"--lr 0.5 (the run has {run_lr!r})" in err and "--seed 3 (the run has 0)" in err and "--epochs" not in err
    assert main(["train", "--resume", "--out", str(out), "--epochs", "4", "--no-progress"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4


def test_grey_data_outside_the_first_batch_are_found_before_training():
    images = (torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    images[90, 0, 3, 3] = 0.5
    model, guide = small_pair(image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"training datum 90 lies outside the support .*binarize"):
        from pyrovae import SVIRun

        SVIRun(model, guide, Split(images), batch_size=32, progress=False)


def test_mismatched_splits_and_labels_are_named():
    with pytest.raises(ValueError, match="3 labels for 4 data"):
        Split(torch.zeros(4, 2), labels=torch.zeros(3))
    with pytest.raises(ValueError, match="field 'y' has 3 rows but the observed field 'x' has 4"):
        Split({"x": torch.zeros(4, 2), "y": torch.zeros(3)})
    from pyrovae.app.runs import check_splits
    from pyrovae.data import Dataset

    data = Dataset("d", Split(torch.zeros(4, 1, 8, 8)), Split(torch.zeros(2, 1, 8, 8)), Split(torch.zeros(2, 1, 6, 6)))
    with pytest.raises(ValueError, match=r"the test data have shape \[1, 6, 6\] but the training data \[1, 8, 8\]"):
        check_splits(data)


def test_idx_files_that_do_not_belong_together_or_are_damaged(tmp_path):
    import gzip
    import struct

    from pyrovae.data.mnist import load_idx_split, read_idx

    def idx(path, shape, count):
        data = struct.pack(">HBB" + "I" * len(shape), 0, 0x08, len(shape), count, *shape[1:]) + bytes(
            count * int(torch.Size(shape[1:]).numel()))
        with gzip.open(path, "wb") as f:
            f.write(data)

    for split, (images, labels) in {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                                    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}.items():
        idx(tmp_path / f"{images}.gz", (5, 28, 28), 5)
        idx(tmp_path / f"{labels}.gz", (4,), 4)
    with pytest.raises(ValueError, match="holds 5 images but .* 4 labels"):
        load_idx_split("mnist", "train", str(tmp_path))
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="bad.gz is not an IDX file"):
        read_idx(str(tmp_path / "bad.gz"), "images")
    whole = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "cut.gz").write_bytes(gzip.compress(whole[:100]))
    with pytest.raises(ValueError, match="cut.gz is truncated"):
        read_idx(str(tmp_path / "cut.gz"), "images")


def test_a_tampered_or_damaged_run_folder_is_named(tmp_path, uninterrupted):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run, ignore=shutil.ignore_patterns(".lock"))
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "activation": "tanh"}))
    with pytest.raises(RunError, match="activation: config.json 'tanh', checkpoint 'relu'"):
        load_run(str(run))
    (run / "config.json").write_text("{broken")
    with pytest.raises(RunError, match="config.json is not valid JSON"):
        load_run(str(run))
    (run / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "model"}))
    with pytest.raises(RunError, match="lacks the run's model"):
        load_run(str(run))
    (run / "config.json").write_text(json.dumps(cfg))
    path = RunFolder(run).checkpoint("best")
    state = checkpoint.load(path)
    torch.save({k: v for k, v in state.items() if k != "pair"}, path)
    with pytest.raises(checkpoint.CheckpointError, match="lacks the pair's state"):
        load_run(str(run))


def _pair_file(folder, body):
    path = folder / "mypair.py"
    path.write_text(textwrap.dedent(body))
    return f"{path}:make"


@pytest.mark.parametrize("body,message", [
    ("def make(:\n    pass\n", "mypair.py:1: syntax error"),
    ("import no_such_module\n", "imports no_such_module, which cannot be found"),
    ("make = 3\n", "mypair.py:make is a int, not a model, a guide, a pair class or a factory"),
    ("def make():\n    return None\n", "returned None; a factory must return (model, guide)"),
    ("x = 1\n", "defines no 'make'"),
])
def test_a_broken_pair_file_is_one_line(tmp_path, capsys, body, message):
    spec = _pair_file(tmp_path, body)
    assert main(["train", *TINY_FLAGS, "--model", spec, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_pair_file_imports_its_helpers_and_is_found_from_anywhere(tmp_path, monkeypatch, capsys):
    (tmp_path / "helpers.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        def encoder():
            return nn.Linear(4096, 4)
    '''))
    spec = _pair_file(tmp_path, '''
        import pyro, pyro.distributions as dist, torch
        from torch import nn
        from helpers import encoder

        class Pair(nn.Module):
            def __init__(self):
                super().__init__()
                self.enc, self.dec = encoder(), nn.Linear(2, 4096)

            def model(self, x):
                with pyro.plate("data", x.shape[0]):
                    z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                    pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x.flatten(-3))

            def guide(self, x):
                with pyro.plate("data", x.shape[0]):
                    h = self.enc(x.flatten(-3))
                    pyro.sample("z", dist.Normal(h[..., :2], h[..., 2:].exp()).to_event(1))

        def make():
            return Pair()
    ''')
    flags = ["--num-train", "64", "--val-size", "32", "--num-test", "32", "--epochs", "1", "--no-progress"]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    images = ["--dataset", "shapes"]
    assert main(["train", *flags, *images, "--model", "mypair.py:make", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    source = saved["sources"]["mypair.py:make"]
    assert os.path.isabs(source["path"]) and len(source["sha256"]) == 64
    monkeypatch.chdir("/")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--surgery-points", "0", "--json"]) == 0
    assert math.isfinite(json.loads(capsys.readouterr().out)["test_elbo"])
    assert spec.endswith("mypair.py:make")


def test_written_files_share_one_permission_mode(uninterrupted):
    modes = {name: os.stat(uninterrupted / name).st_mode & 0o777
             for name in ("config.json", "summary.json", "metrics.jsonl", "checkpoints.json", "samples.png")}
    assert len(set(modes.values())) == 1, modes


def test_config_errors_in_python_name_every_bad_value():
    with pytest.raises(ConfigError) as err:
        make_config(clip_norm=0, levels=0)
    assert "--clip-norm 0: expected a number > 0" in str(err.value)
    assert "--levels 0: expected a positive integer" in str(err.value)
    with pytest.raises(ConfigError, match="unknown configuration keys"):
        make_config(learning_rate=1.0)


def test_a_diverging_python_run_raises_and_commits_nothing_non_finite(tmp_path):
    from pyrovae import SVIRun

    model, guide = small_pair(image_shape=(1, 8, 8))
    x = (torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    run = SVIRun(model, guide, x, x, lr=1e8, batch_size=16, epochs=5, progress=False, run_dir=str(tmp_path / "r"),
                 max_bad_steps=2)
    with pytest.raises(DivergenceError, match="non-finite"):
        run.fit()


def test_grey_data_in_the_validation_split_are_found_before_training():
    """Training runs with Pyro's validation off, and the validation bound is scored inside it: a grey validation
    image must be named before training, not scored as if it were binary."""
    images = (torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    val = images[32:].clone()
    val[50, 0, 2, 2] = 0.25  # beyond the first batch, which the pair check reads with Pyro's validation on
    model, guide = small_pair(image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"validation datum 50 lies outside the support .*binarize"):
        from pyrovae import SVIRun

        SVIRun(model, guide, Split(images[:32]), Split(val), batch_size=32, progress=False)
