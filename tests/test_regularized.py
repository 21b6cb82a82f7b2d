"""Tests for pyrovae.infer.regularized: beta-VAE, controlled capacity, free bits, and their flags."""

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.distributions import kl_divergence

from conftest import pair_sites, small_pair
from pyrovae import SVIRun
from pyrovae.app.cli import main
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.regularized import BetaVAE, ControlledCapacity, FreeBits, site_kl_per_dimension
from pyrovae.app.config import make_config
from pyrovae.app.runs import make_objective, objective_from_config


@pytest.fixture
def one_thread():
    """Train on one thread: on a shared 2-core machine two OpenMP threads per process can be 30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _loss_and_grads(objective, model, guide, x, seed=0):
    params = list(guide.parameters()) + list(model.parameters())
    torch.manual_seed(seed)
    loss, stats = objective.loss(model, guide, x)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss, stats, grads


# ---------------------------------------------------------------------------
# beta-VAE


def test_beta_one_is_the_elbo_bit_for_bit(shapes_small):
    x = shapes_small.train.data[:32]
    model, guide = small_pair()
    loss_e, stats_e, grads_e = _loss_and_grads(ELBO(), model, guide, x)
    loss_b, stats_b, grads_b = _loss_and_grads(BetaVAE(1.0), model, guide, x)
    assert torch.equal(loss_e, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_e, grads_b))
    assert all(torch.equal(stats_e[k], stats_b[k]) for k in ("elbo", "reconstruction", "kl"))


def test_beta_weights_the_kl_and_reports_the_true_bound(shapes_small):
    x = shapes_small.train.data[:32]
    model, guide = small_pair()
    torch.manual_seed(0)
    loss, stats = BetaVAE(4.0).loss(model, guide, x)
    # loss = -(rec - 4 KL) = -ELBO + 3 KL, on the same draw
    assert torch.allclose(loss, -stats["elbo"] + 3 * stats["kl"], rtol=1e-6)
    assert torch.allclose(stats["elbo"], stats["reconstruction"] - stats["kl"], rtol=1e-6)


@pytest.mark.parametrize("make", [lambda: BetaVAE(-1.0), lambda: BetaVAE(float("nan")),
                                  lambda: ControlledCapacity(25.0, 0), lambda: ControlledCapacity(-1.0, 10),
                                  lambda: ControlledCapacity(25.0, 10, gamma=0.0), lambda: FreeBits(-0.5),
                                  lambda: FreeBits(0.5, groups=0)])
def test_bad_arguments_are_named(make):
    with pytest.raises(ValueError, match="beta|capacity|gamma|lambda_|groups"):
        make()


# ---------------------------------------------------------------------------
# controlled capacity


def test_capacity_schedule_is_linear_then_flat():
    objective = ControlledCapacity(25.0, 100)
    seen = []
    for step in (0, 10, 50, 100, 1000):
        objective.set_progress(0, step)
        seen.append(float(objective.state["capacity"]))
    assert seen == pytest.approx([0.0, 2.5, 12.5, 25.0, 25.0])


def test_graph_steps_follow_the_capacity_schedule(shapes_small, one_thread):
    """The captured step takes C as an input: it must match eager steps while C moves, and log each step's C."""
    results = {}
    for mode in ("graph", "eager"):
        model, guide = small_pair(latent_dim=3, hidden=(16,))
        objective = ControlledCapacity(6.0, 24, gamma=100.0)
        run = SVIRun(model, guide, shapes_small.train, None, objective, batch_size=128, epochs=8, seed=0,
                     step_mode=mode, progress=False)
        history = run.fit()
        assert run.step_fn.mode == mode  # no fallback to eager
        results[mode] = ([row["train_capacity"] for row in history], [p.detach().clone() for p in run.params])
    capacities, graph_params = results["graph"]
    # 4 steps per epoch; the epoch's mean C over steps 4e..4e+3 of C(s) = 6 min(s / 24, 1)
    expected = [np.mean([6.0 * min(s / 24, 1.0) for s in range(4 * e, 4 * e + 4)]) for e in range(8)]
    assert capacities == pytest.approx(expected, abs=1e-6)
    for g, e in zip(graph_params, results["eager"][1]):
        assert torch.allclose(g, e, atol=1e-4), "graph and eager steps diverged: the graph froze C"


def test_trained_kl_tracks_the_capacity(shapes_small, one_thread):
    """With gamma = 1000 the |KL - C| term pins each batch's KL to C while C rises 0 -> 10 nats.

    What is left is sampling error: a batch's mean KL differs from the training
    set's by about s / sqrt(B) (s = the per-image KL's standard deviation across
    the training set, measured at the end; B = 64), and Adam's steps add some
    jitter around the pinned value. So every epoch's mean KL must lie within
    4 s / sqrt(B) of its mean C (a 4-sigma band even if the 8 steps of an epoch
    were fully correlated), the last 25 epochs within s / sqrt(B) on average, and
    the whole training set's KL within 3 s / sqrt(B) of C_max at the end.
    The same pair trained on the ELBO ends at a KL of about 46 nats.
    """
    model, guide = small_pair(latent_dim=6, hidden=(64,), seed=0)
    objective = ControlledCapacity(10.0, 200, gamma=1000.0)
    run = SVIRun(model, guide, shapes_small.train, None, objective, lr=1e-3, batch_size=64, epochs=50, seed=0,
                 progress=False)
    history = run.fit()
    assert run.step_fn.mode == "graph"
    with torch.no_grad():
        q, p = pair_sites(model, guide, shapes_small.train.data)
        per_image = kl_divergence(q["z"]["fn"], p["z"]["fn"])
    band = per_image.std().item() / math.sqrt(64)
    residual = np.array([row["train_kl"] - row["train_capacity"] for row in history])
    assert np.abs(residual).max() < 4 * band, residual
    assert abs(residual[-25:].mean()) < band
    assert abs(per_image.mean().item() - 10.0) < 3 * band


# ---------------------------------------------------------------------------
# free bits


class Decoder(nn.Module):
    """p(z) = N(0, I_3), p(x | z) = N(x; W z, I_4)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)

    def forward(self, x=None, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.linear(z), 1.0).to_event(1), obs=x)


class FreeGuide(nn.Module):
    """q(z | x) = N(loc, diag(exp(log_scale))^2), the same for every x: its parameters are per dimension."""

    def __init__(self, loc, log_scale):
        super().__init__()
        self.loc = nn.Parameter(torch.tensor(loc))
        self.log_scale = nn.Parameter(torch.tensor(log_scale))

    def forward(self, x, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))


def _reconstruction_only(model, guide, x):
    guide_sites, model_sites = pair_sites(model, guide, x)
    return -model_sites["x"]["log_prob"].sum() / x.shape[0]


def test_free_bits_give_no_kl_gradient_below_lambda():
    """Dims 0 and 2 have KL 0.005 and 0 nats < lambda = 0.5; dim 1 has KL 2.57 nats."""
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    model = Decoder()
    guide = FreeGuide([0.1, 2.0, 0.0], [0.0, -1.0, 0.0])
    params = [guide.loc, guide.log_scale]

    def grads(loss_fn):
        torch.manual_seed(1)  # the same draw of z for every loss
        return torch.autograd.grad(loss_fn(), params)

    free = grads(lambda: FreeBits(0.5).loss(model, guide, x)[0])
    rec_only = grads(lambda: _reconstruction_only(model, guide, x))
    elbo = grads(lambda: ELBO().loss(model, guide, x)[0])
    # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1)/2 - log s: d/dm = m, d/dlog s = s^2 - 1
    loc, scale = guide.loc.detach(), guide.log_scale.detach().exp()
    kl_grad_loc, kl_grad_log_scale = loc, scale**2 - 1
    below = torch.tensor([True, False, True])
    for g_free, g_rec, g_elbo, g_kl in zip(free, rec_only, elbo, (kl_grad_loc, kl_grad_log_scale)):
        assert torch.allclose(g_free[below], g_rec[below], atol=1e-6)  # reconstruction only
        assert torch.allclose(g_free[~below], (g_rec + g_kl)[~below], atol=1e-5)  # plus the KL's gradient
        assert torch.allclose(g_elbo, g_rec + g_kl, atol=1e-5)  # the ELBO moves every dimension
    assert not torch.allclose(elbo[0][0], rec_only[0][0], atol=1e-3)  # so the first check could fail


def test_free_bits_loss_value_and_groups():
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    model, guide = Decoder(), FreeGuide([0.1, 2.0, 0.0], [0.0, -1.0, 0.0])
    kl = torch.tensor([0.005, 0.5 * (4.0 + math.exp(-2.0) - 1.0) + 1.0, 0.0])
    torch.manual_seed(0)
    loss, stats = FreeBits(0.5).loss(model, guide, x)
    rec = stats["reconstruction"]
    assert torch.allclose(stats["kl"], kl.sum(), atol=1e-6)
    assert torch.allclose(loss, -rec + kl.clamp(min=0.5).sum(), atol=1e-5)
    torch.manual_seed(0)
    loss3, _ = FreeBits(3.0, groups=3).loss(model, guide, x)  # one group of 3 dims, KL 2.58 < 3
    assert torch.allclose(loss3, -rec + 3.0, atol=1e-5)
    with pytest.raises(ValueError, match="groups=2 does not divide the 3 dimensions"):
        FreeBits(0.5, groups=2).loss(model, guide, x)


def test_per_dimension_kl_closed_form_and_monte_carlo():
    x = torch.zeros(4000, 4)
    model, guide = Decoder(), FreeGuide([0.3, -1.0, 2.0], [0.2, -0.5, 0.0])
    with torch.no_grad():
        torch.manual_seed(0)
        q, p = pair_sites(model, guide, x)
        closed = site_kl_per_dimension(q["z"], p["z"])
        mc = site_kl_per_dimension(q["z"], p["z"], analytic=False)
    assert closed.shape == (4000, 3)
    assert torch.allclose(closed.sum(-1), kl_divergence(q["z"]["fn"], p["z"]["fn"]), atol=1e-6)
    # the Monte Carlo value is log q - log p at the draw: unbiased, so its mean over 4000 draws lies within
    # 4 standard errors of the closed form
    err = mc.std(0) / math.sqrt(len(x))
    assert ((mc.mean(0) - closed[0]).abs() < 4 * err).all(), (mc.mean(0), closed[0], err)


def test_per_dimension_kl_needs_a_factorised_guide():
    x = torch.zeros(5, 4)

    def full_cov_guide(x, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(torch.zeros(3), torch.eye(3)))

    with pytest.raises(ValueError, match="latent site 'z'.*factorises"):
        FreeBits(0.5).loss(Decoder(), full_cov_guide, x)


def test_masked_data_points_have_no_kl():
    model = Decoder()

    def guide(x, batch_size=None):
        with pyro.plate("data", x.shape[0]), pyro.poutine.mask(mask=torch.tensor([True, False])):
            pyro.sample("z", dist.Normal(torch.ones(3), 1.0).to_event(1))

    q, p = pair_sites(model, guide, torch.zeros(2, 4))
    per_dim = site_kl_per_dimension(q["z"], p["z"])
    assert torch.allclose(per_dim, torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]))


# ---------------------------------------------------------------------------
# configuration and command line


def test_config_picks_the_objective():
    assert isinstance(make_objective(make_config(beta=4.0)), BetaVAE)
    capacity = make_objective(make_config(capacity=25.0, capacity_steps=100000))
    assert isinstance(capacity, ControlledCapacity) and capacity.gamma == 1000.0
    assert make_objective(make_config(capacity=25.0, capacity_steps=10, gamma=5.0)).gamma == 5.0
    free = make_objective(make_config(free_bits=0.5))
    assert isinstance(free, FreeBits) and free.lambda_ == 0.5
    plain = make_config(dataset="mnist")  # no objective option: the ELBO (the main job on shapes has beta = 0.5)
    assert objective_from_config(plain) is None
    assert type(make_objective(plain)) is ELBO


@pytest.mark.parametrize("overrides, message", [
    (dict(beta=4.0, objective="iwae"), "--beta .* does not combine with --objective iwae"),
    (dict(free_bits=0.5, dreg=True), "--free-bits .* does not combine with --dreg"),
    (dict(capacity=25.0), "--capacity needs --capacity-steps"),
    (dict(capacity_steps=100), "--capacity-steps set the controlled-capacity objective: pass --capacity"),
    (dict(gamma=100.0), "--gamma set"),
    (dict(beta=4.0, free_bits=0.5), "--beta and --free-bits are different objectives"),
])
def test_contradictory_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_objective(make_config(**overrides))


SMALL = ["--num-train", "128", "--val-size", "32", "--num-test", "32", "--epochs", "2", "--hidden", "16",
         "--latent-dim", "3", "--batch-size", "64", "--no-progress"]


@pytest.mark.parametrize("flags, key, value, stat", [
    (["--beta", "4"], "beta", 4.0, "train_kl"),
    (["--capacity", "25", "--capacity-steps", "100000", "--gamma", "1000"], "capacity", 25.0, "train_capacity"),
    (["--free-bits", "0.5"], "free_bits", 0.5, "train_kl"),
])
def test_cli_flags_round_trip(tmp_path, capsys, one_thread, flags, key, value, stat):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *flags, *SMALL]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg[key] == value
    objective = make_objective(cfg)
    assert type(objective) is type(make_objective(make_config(**{k: cfg[k] for k in (
        "beta", "capacity", "capacity_steps", "gamma", "free_bits")})))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r[stat]) for r in rows)
    if key == "capacity":  # 2 steps per epoch: C = 25 s / 1e5 for steps s = 0..3
        assert rows[1]["train_capacity"] == pytest.approx(25 * 2.5 / 1e5)


def test_cli_rejects_contradictory_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--beta", "4", "--objective", "iwae", *SMALL]) == 2
    assert "--beta" in capsys.readouterr().err
    assert not out.exists()  # nothing written
    assert main(["train", "--out", str(out), "--capacity", "25", *SMALL]) == 2
    assert "--capacity-steps" in capsys.readouterr().err
