"""The command line: train writes a run folder; evaluate reads it back; errors exit 2 with a message."""

import json
import textwrap

import numpy as np
import pytest

from pyrovae.app.cli import main

SMALL = ["--num-train", "256", "--val-size", "64", "--num-test", "64", "--epochs", "2", "--hidden", "32",
         "--latent-dim", "3", "--no-progress"]


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *SMALL]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "test ELBO:" in printed and "nats per datum" in printed
    # the main job's defaults it took are named (not --epochs and --num-train: given)
    said = captured.out.split("the vae on shapes takes the main job's defaults (options given win): ")[1]
    assert said.splitlines()[0] == "--lr 0.003, --lr-decay 0.7, --lr-decay-after 14, --beta 0.5"
    for name in ("config.json", "checkpoints.json", "epoch-0002.pt", "metrics.jsonl", "samples.png",
                 "reconstructions.png", "summary.json", "report.html"):
        assert (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    # the shape check of a run on shapes: printed, in summary.json and in the report beside both kinds of samples
    summary = json.loads((out / "summary.json").read_text())
    for key in ("reconstruction_shape_accuracy", "prior_sample_confidence", "aggregate_posterior_confidence"):
        assert 0 <= summary[key] <= 1, key
    assert f"reconstructions with the test image's shape: {100 * summary['reconstruction_shape_accuracy']:.1f}%" \
        in printed
    assert "prior samples showing one shape" in printed
    assert summary["prior_samples"]["num"] == 64 and (out / "aggregate_samples.png").stat().st_size > 0
    report = (out / "report.html").read_text()
    assert "Did it learn the shapes?" in report and report.count("<b>aggregate_samples.png</b>") == 1
    assert main(["evaluate", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert abs(result["test_elbo"] - summary["test_elbo"]) < 1e-6


def test_resume_extends_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *SMALL]) == 0
    small = list(SMALL)
    small[small.index("--epochs") + 1] = "3"
    assert main(["train", "--out", str(out), "--resume", *small]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_user_pair_from_a_file(tmp_path, capsys):
    pair = tmp_path / "mypair.py"
    pair.write_text(textwrap.dedent('''
        import pyro, pyro.distributions as dist, torch
        from torch import nn

        class Model(nn.Module):
            def __init__(self, image_shape, latent_dim):
                super().__init__()
                self.shape, self.d = tuple(image_shape), latent_dim
                self.dec = nn.Linear(latent_dim, 64 * 64)
            def forward(self, x=None, batch_size=None):
                with pyro.plate("data", x.shape[0] if x is not None else batch_size):
                    h = pyro.sample("h", dist.Normal(torch.zeros(self.d), 1.).to_event(1))
                    logits = self.dec(h).reshape(*h.shape[:-1], *self.shape)
                    return pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(3), obs=x)

        def make_guide(latent_dim):
            enc = nn.Linear(64 * 64, 2 * latent_dim)
            def guide(x, batch_size=None):
                pyro.module("enc", enc)
                with pyro.plate("data", x.shape[0]):
                    loc, s = enc(x.flatten(-3)).chunk(2, -1)
                    pyro.sample("h", dist.Normal(loc, s.exp()).to_event(1))
            return guide
    '''))
    out = tmp_path / "run"
    code = main(["train", "--model", f"{pair}:Model", "--guide", f"{pair}:make_guide", "--out", str(out), *SMALL])
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["test_elbo"] < 0


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "mnist IDX files not found" in err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a pyrovae run folder" in capsys.readouterr().err


def test_iwae_training_and_the_other_commands(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--objective", "iwae", "--particles", "3", "--dreg", *SMALL]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--iw-samples", "50", "--num-test", "16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # log p(x) >= ELBO on average: the importance-sampled NLL sits below -ELBO up to Monte Carlo error
    assert result["nll"] < -result["test_elbo"] + 3 * result["nll_std_error"] + 1.0
    assert main(["ppc", str(out), "--num-data", "16", "--num-samples", "10", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0.0 <= summary["p_value"]["mean_intensity"] <= 1.0
    assert any((out / "ppc").iterdir())
    assert main(["metrics", str(out), "--num-points", "200", "--trees", "5", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"beta_vae", "factor_vae", "mig", "dci", "sap"}
    assert main(["train", "--out", str(tmp_path / "r2"), "--dreg", *SMALL]) == 2
    assert "--dreg applies to --objective iwae only" in capsys.readouterr().err


def test_the_main_job_defaults_apply_to_the_vae_on_shapes_only():
    from pyrovae.app.config import MAIN_JOB, OPTIONS, make_config

    defaults = {o.name: o.default for o in OPTIONS}
    main_job = make_config(out="run")
    assert {k: main_job[k] for k in MAIN_JOB} == MAIN_JOB and main_job["given"] == ["out"]
    given = make_config(out="run", lr=1e-4, epochs=2)  # options given win
    assert (given["lr"], given["epochs"], given["num_train"]) == (1e-4, 2, MAIN_JOB["num_train"])
    for other in ({"model": "hvae"}, {"dataset": "mnist"}, {"dataset": "rivers"}):
        cfg = make_config(out="run", **other)
        assert {k: cfg[k] for k in MAIN_JOB} == {k: defaults[k] for k in MAIN_JOB}, other


@pytest.mark.parametrize("objective", [{"free_bits": 0.5}, {"capacity": 25.0, "capacity_steps": 100},
                                       {"warmup": 2}, {"objective": "iwae", "particles": 5}, {"objective": "elbo"}])
def test_the_main_jobs_beta_gives_way_to_any_other_objective(objective):
    """The main job trains with beta = 0.5; asking for another objective on shapes gets that objective alone
    (beta would not combine with it), and the rest of the main job's budget stays."""
    from pyrovae.app.config import MAIN_JOB, make_config
    from pyrovae.app.runs import make_objective

    cfg = make_config(out="run", **objective)
    assert cfg["beta"] is None and cfg["epochs"] == MAIN_JOB["epochs"]
    make_objective(cfg)  # no "different objectives" error
    assert make_config(out="run", beta=4.0)["beta"] == 4.0
    assert type(make_objective(make_config(out="run"))).__name__ == "BetaVAE"


def test_resuming_the_main_job_with_another_objective_is_refused():
    """A new run given --objective elbo trains the ELBO; a main-job run (beta = 0.5 by default) resumed with it would
    quietly go on with beta = 0.5, so the resume names the option instead."""
    from pyrovae.app.config import ConfigError, check_resume, make_config

    saved = make_config(out="run")
    with pytest.raises(ConfigError, match=r"--objective 'elbo' \(the run trains with the main job's --beta 0.5\)"):
        check_resume(saved, {"out": "run", "objective": "elbo"})
    assert check_resume(saved, {"out": "run", "epochs": 30})["beta"] == 0.5
    assert check_resume(make_config(out="run", beta=0.5), {"out": "run", "objective": "elbo"})["beta"] == 0.5


def test_train_on_binarized_mnist_files(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("valid", 16), ("test", 16)):
        rows = rng.integers(0, 2, size=(n, 784))
        (tmp_path / f"binarized_mnist_{split}.amat").write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    out = tmp_path / "run"
    assert main(["train", "--dataset", "binarized-mnist", "--data-dir", str(tmp_path), "--out", str(out),
                 "--epochs", "1", "--hidden", "16", "--batch-size", "32", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["dataset"], config["binarize"], config["likelihood"]) == ("binarized-mnist", "none", "bernoulli")
    assert json.loads((out / "summary.json").read_text())["num_test"] == 16
