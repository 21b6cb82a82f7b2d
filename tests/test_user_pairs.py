"""The pairs users write, from training to report: conditioning data, any data shape, Pyro's example style.

Pyro's VAE example written in its own style (a module with ``.model``/``.guide``,
``pyro.module``, sites ``latent``/``obs``, flattening the images inside) trains
through the command line and reloads to the numbers it trained to; a conditional
VAE trains on labels through every entry point; flat vectors and tabular rows
train and evaluate; a user's class keeps its own defaults.
"""

import math
import json
import textwrap

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrovae
from pyrovae.app.cli import main
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.evaluate.ppc import run_ppc

from conftest import write_tiny_mnist

FAST = ["--num-train", "96", "--val-size", "32", "--num-test", "32", "--epochs", "2", "--batch-size", "32",
        "--no-progress"]


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """The four IDX files of a tiny MNIST look-alike (grey digits-to-be: random blobs, 10 classes)."""
    folder = tmp_path_factory.mktemp("mnist")
    return write_tiny_mnist(folder, (("train", 200), ("t10k", 60)), random_labels=True)


PYRO_VAE = '''
    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn


    class Decoder(nn.Module):
        def __init__(self, z_dim, hidden_dim):
            super().__init__()
            self.fc1, self.fc21 = nn.Linear(z_dim, hidden_dim), nn.Linear(hidden_dim, 784)

        def forward(self, z):
            return torch.sigmoid(self.fc21(nn.functional.softplus(self.fc1(z))))


    class Encoder(nn.Module):
        def __init__(self, z_dim, hidden_dim):
            super().__init__()
            self.fc1 = nn.Linear(784, hidden_dim)
            self.fc21, self.fc22 = nn.Linear(hidden_dim, z_dim), nn.Linear(hidden_dim, z_dim)

        def forward(self, x):
            hidden = nn.functional.softplus(self.fc1(x.reshape(*x.shape[:-3], 784)))
            return self.fc21(hidden), torch.exp(self.fc22(hidden))


    class VAE(nn.Module):
        """Pyro's examples/vae/vae.py in miniature: sites latent and obs, images flattened inside."""

        def __init__(self, z_dim=5, hidden_dim={hidden}):
            super().__init__()
            self.encoder, self.decoder = Encoder(z_dim, hidden_dim), Decoder(z_dim, hidden_dim)
            self.z_dim = z_dim

        def model(self, x):
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
                z = pyro.sample("latent", dist.Normal(z_loc, torch.ones_like(z_loc)).to_event(1))
                loc_img = self.decoder(z)
                pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                            obs=x.reshape(-1, 784))

        def guide(self, x):
            pyro.module("encoder", self.encoder)
            with pyro.plate("data", x.shape[0]):
                z_loc, z_scale = self.encoder(x)
                pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
'''


def test_pyros_vae_example_trains_reloads_and_reports_its_numbers(tmp_path, tiny_mnist, capsys):
    path = tmp_path / "vae.py"
    path.write_text(textwrap.dedent(PYRO_VAE.replace("{hidden}", "32")))
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", tiny_mnist, "--model", f"{path}:VAE", "--out",
                 str(out), *FAST]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert main(["evaluate", str(out), "--iw-samples", "50", "--surgery-points", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_elbo"] == pytest.approx(summary["test_elbo"], abs=1e-5)  # trained weights reloaded
    assert result["nll"] <= -summary["test_elbo"] + 1.0 and result["active_units"]["latent"] >= 0
    assert main(["ppc", str(out), "--obs-site", "obs", "--num-data", "8", "--num-samples", "5", "--json"]) == 0
    assert main(["report", str(out)]) == 0
    assert (out / "samples.png").exists() and (out / "reconstructions.png").exists()  # [B, 784] shown as images
    config = json.loads((out / "config.json").read_text())
    assert "latent_dim" not in config["given"] and config["binarize"] == "dynamic"


def test_a_user_class_keeps_its_own_defaults(tmp_path, tiny_mnist, capsys):
    path = tmp_path / "vae.py"
    path.write_text(textwrap.dedent(PYRO_VAE.replace("{hidden}", "24")) + textwrap.dedent('''
        def make(latent_dim=7, hidden=None):
            assert hidden is None, "hidden was not given and must not be passed"
            return VAE(z_dim=latent_dim)
    '''))
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", tiny_mnist, "--model", f"{path}:make", "--out",
                 str(out), *FAST]) == 0
    state = torch.load(next(out.glob("epoch-*.pt")), weights_only=True)
    assert state["param_store"]["encoder$$$fc21.weight"].shape == (7, 24)  # the factory's own defaults
    out2 = tmp_path / "run2"
    assert main(["train", "--dataset", "mnist", "--data-dir", tiny_mnist, "--model", f"{path}:make", "--out",
                 str(out2), "--latent-dim", "3", *FAST]) == 0
    state = torch.load(next(out2.glob("epoch-*.pt")), weights_only=True)
    assert state["param_store"]["encoder$$$fc21.weight"].shape == (3, 24)


def test_a_conditional_vae_on_labels_through_every_entry_point(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "cvae", "--condition-on", "labels", "--latent-dim", "2", "--hidden", "32",
                 "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--iw-samples", "20", "--surgery-points", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["active_units"]["z"] >= 0
    assert main(["ppc", str(out), "--num-data", "8", "--num-samples", "4"]) == 0
    run = pyrovae.app.runs.load_run(str(out))
    test = run.data.test
    assert test.keywords == ["y"]
    with run.scope():
        ll = log_likelihood(run.model, run.guide, test.subset(8), num_samples=30, seed=0)
        ppc = run_ppc(run.model, run.guide, test.subset(8), num_samples=4)
    assert torch.isfinite(ll.log_px).all() and ppc["num_data"] == 8


def test_semi_supervised_m2_with_part_of_the_labels(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "m2", "--condition-on", "labels", "--num-labelled", "12", "--latent-dim", "2",
                 "--hidden", "32", "--out", str(out), *FAST]) == 0
    run = pyrovae.app.runs.load_run(str(out))
    train = run.data.train
    assert int(train.present["y"].sum()) == 12
    assert sorted(torch.bincount(train.fields["y"][train.present["y"]]).tolist()) == [4, 4, 4]  # 3 shapes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step_mode"] in ("graph", "eager")


def _flat_pair(d_in, latent=2):
    dec, enc = nn.Linear(latent, d_in), nn.Linear(d_in, 2 * latent)

    def model(x):
        pyro.module("dec", dec)
        scale = pyro.param("scale", torch.ones(d_in), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(latent), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), scale).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide


def test_flat_vectors_and_tabular_rows_train_and_evaluate():
    g = torch.Generator().manual_seed(2)
    flat = torch.randn(200, 12, generator=g) @ torch.randn(12, 12, generator=g)
    tabular = {"x": torch.cat([torch.randn(200, 3, generator=g), torch.randint(0, 5, (200, 2), generator=g)], -1),
               "group": torch.randint(0, 3, (200,), generator=g)}
    vector_model, vector_guide = _flat_pair(12)
    row_model, row_guide = _flat_pair(5)

    def table_model(x, group):  # a keyword field the pair receives (and here ignores)
        assert group.shape == x.shape[:1]
        return row_model(x)

    def table_guide(x, group):
        return row_guide(x)

    for model, guide, data in ((vector_model, vector_guide, flat), (table_model, table_guide, tabular)):
        run = pyrovae.SVIRun(model, guide, data, lr=1e-2, batch_size=50, epochs=30, progress=False)
        history = run.fit()
        assert history[-1]["train_elbo"] > history[0]["train_elbo"]
        with run.param_scope():
            elbo = pyrovae.evaluate_elbo(model, guide, data)
            ll = log_likelihood(model, guide, data, num_samples=100, seed=0)
        assert math.isfinite(elbo) and -ll.nll >= elbo - 0.5  # the K-sample bound lies above the ELBO


def test_a_run_trained_in_python_is_read_by_the_command_line(tmp_path, capsys):
    from pyrovae.app.config import make_config
    from pyrovae.app.runs import train

    out = tmp_path / "run"
    cfg = make_config(out=str(out), num_train=96, val_size=32, num_test=32, epochs=1, hidden=[16], latent_dim=2)
    train(cfg, progress=False)  # the Python way: the same configuration the command line writes
    assert main(["evaluate", str(out), "--surgery-points", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_elbo"] == pytest.approx(
        json.loads((out / "summary.json").read_text())["test_elbo"], abs=1e-5)
