"""The SVI run: learning, exact resume, atomic checkpoints, captured vs eager steps."""

import os

import pytest
import torch

from pyrovae import SVIRun
from pyrovae.infer import checkpoint
from pyrovae.infer.runfolder import RunFolder
from pyrovae.infer.svi import evaluate_elbo

from conftest import small_pair


def params_of(model, guide):
    return {**{"m." + k: v.clone() for k, v in model.state_dict().items()},
            **{"g." + k: v.clone() for k, v in guide.state_dict().items()}}


def test_elbo_improves_on_shapes(shapes_small):
    model, guide = small_pair()
    before = evaluate_elbo(model, guide, shapes_small.val)
    run = SVIRun(model, guide, shapes_small.train, shapes_small.val, lr=3e-3, batch_size=64, epochs=4,
                 progress=False)
    history = run.fit()
    after = history[-1]["val_elbo"]
    # an untrained decoder puts ~0.5 on every one of 4096 pixels (about -2800 nats); the shapes cover ~3%
    assert before < -2000
    assert after > before + 1500
    assert history[-1]["val_elbo"] > history[0]["val_elbo"]


def _run(shapes, run_dir, epochs, mode="graph", seed=0, **kwargs):
    model, guide = small_pair(seed=seed)
    run = SVIRun(model, guide, shapes.train, shapes.val, batch_size=100, epochs=epochs, run_dir=str(run_dir),
                 seed=seed, step_mode=mode, progress=False, **kwargs)
    return run, model, guide


@pytest.mark.parametrize("schedule", [{}, {"lr_decay": 0.5, "lr_decay_after": 1}], ids=["constant", "decaying"])
def test_resume_after_kill_gives_same_parameters(shapes_small, tmp_path, schedule):
    run, model, guide = _run(shapes_small, tmp_path / "full", 4, **schedule)
    run.fit()
    expected = params_of(model, guide)

    # a run killed in the middle of its third epoch ...
    run, model, guide = _run(shapes_small, tmp_path / "killed", 4, **schedule)
    real_step, calls = run.step_fn, {"n": 0}

    def dying_step(x):
        calls["n"] += 1
        if calls["n"] == 2 * 6 + 3:  # 6 batches per epoch: dies during epoch 3
            raise KeyboardInterrupt
        return real_step(x)

    dying_step.recheck = real_step.recheck
    run.step_fn = dying_step
    with pytest.raises(KeyboardInterrupt):
        run.fit()
    assert checkpoint.load(RunFolder(tmp_path / "killed").checkpoint("last"))["epoch"] == 2
    # ... resumed by a fresh process-like setup (new pair, new optimizer) from the last checkpoint
    run, model, guide = _run(shapes_small, tmp_path / "killed", 4, seed=0, **schedule)
    run.fit(resume=True)
    got = params_of(model, guide)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_the_learning_rate_decays_each_epoch_after_the_first_lr_decay_after(shapes_small, tmp_path):
    run, model, guide = _run(shapes_small, tmp_path / "decay", 4, lr=2e-3, lr_decay=0.5, lr_decay_after=2)
    history = run.fit()
    assert [row["lr"] for row in history] == [2e-3, 2e-3, 1e-3, 5e-4]
    assert [group["lr"] for group in run.optimizer.param_groups] == [5e-4]
    constant, model_c, guide_c = _run(shapes_small, tmp_path / "constant", 4, lr=2e-3)
    constant.fit()
    first_two = [row["val_elbo"] for row in constant.history[:2]]
    assert [row["val_elbo"] for row in history[:2]] == first_two  # the same run until the decay starts
    assert params_of(model, guide).keys() == params_of(model_c, guide_c).keys()
    assert any(not torch.equal(a, b) for a, b in zip(params_of(model, guide).values(),
                                                     params_of(model_c, guide_c).values()))


def test_the_default_schedule_start_is_torchs_exponential_lr(shapes_small, tmp_path):
    run, _, _ = _run(shapes_small, tmp_path / "exp", 1, lr=2e-3, lr_decay=0.9)
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=2e-3)
    scheduler, torchs = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9), []
    for _ in range(5):
        torchs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert [run.learning_rate(e) for e in range(5)] == pytest.approx(torchs, rel=1e-12)


@pytest.mark.parametrize("bad", [{"lr_decay": 0.0}, {"lr_decay": 1.5}, {"lr_decay_after": -1},
                                 {"lr_decay_after": 1.5}])
def test_a_bad_schedule_is_named(shapes_small, tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        _run(shapes_small, tmp_path / "bad", 1, **bad)


def test_captured_step_matches_eager(shapes_small, tmp_path):
    results = []
    for mode in ("eager", "graph"):
        run, model, guide = _run(shapes_small, tmp_path / mode, 2, mode=mode)
        run.fit()
        assert run.step_fn.mode == mode
        results.append(params_of(model, guide))
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-4, atol=1e-5)


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    checkpoint.save_atomic({"format": checkpoint.FORMAT, "epoch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.save_atomic({"format": checkpoint.FORMAT, "epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = checkpoint.load(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [f for f in os.listdir(tmp_path) if f != "last.pt"] == []


def test_early_stopping_and_best_checkpoint(shapes_small, tmp_path):
    model, guide = small_pair()
    run = SVIRun(model, guide, shapes_small.train, shapes_small.val, lr=1e-9, batch_size=128, epochs=50,
                 patience=2, run_dir=str(tmp_path), progress=False)
    history = run.fit()
    # with a learning rate of 1e-9 nothing improves by much: patience ends the run early
    assert len(history) < 50
    best = checkpoint.load(RunFolder(tmp_path).checkpoint("best"))
    assert best["best_val"] == max(row["val_elbo"] for row in history)
