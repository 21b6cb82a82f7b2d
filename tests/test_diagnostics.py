"""Active units, KL per dimension and ELBO surgery, checked on linear Gaussian pairs with known answers.

The one-layer pair: z ~ N(0, I_L), x | z ~ N(W z + b, s^2 I_D), and the guide
q(z | x) = N(A x + c, diag(sigma)^2). E_q[z|x] = A x + c, so the active units are
the dims whose row of A is not zero, with A_u = Var_x((A x)_u) exactly, and the
KL per dimension has the closed form 0.5 (mu^2 + sigma^2 - 1) - log sigma.
Everything runs in float64.
"""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from conftest import pair_sites
from pyro.distributions.transforms import AffineTransform
from torch import nn

from pyrovae.evaluate.diagnostics import active_units, elbo_surgery, format_active_units, kl_per_dimension
from pyrovae.infer.elbo import ELBO

DT = torch.float64
D, L = 6, 4


class LinearModel(nn.Module):
    """z ~ prior (N(0, I) by default), x | z ~ N(W z + b, 0.5^2 I)."""

    def __init__(self, prior=None):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(D, L, generator=g, dtype=DT))
        self.b = nn.Parameter(torch.randn(D, generator=g, dtype=DT))
        self.prior = prior or (lambda: dist.Normal(torch.zeros(L, dtype=DT), 1.0).to_event(1))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", dist.Normal(z @ self.W.T + self.b, 0.5).to_event(1), obs=x)


class LinearGuide(nn.Module):
    def __init__(self, a, c, log_scale):
        super().__init__()
        self.A, self.c, self.log_scale = nn.Parameter(a), nn.Parameter(c), nn.Parameter(log_scale)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.log_scale.exp()).to_event(1))

    def loc(self, x):
        return x @ self.A.T + self.c


def make_guide(dead_rows=(), a_scale=0.4, log_scale=-1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    a = a_scale * torch.randn(L, D, generator=g, dtype=DT)
    a[list(dead_rows)] = 0.0
    c = 0.2 * torch.randn(L, generator=g, dtype=DT)
    return LinearGuide(a, c, torch.full((L,), log_scale, dtype=DT) + 0.3 * torch.randn(L, generator=g, dtype=DT))


def make_data(n, seed=2):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=DT)


def closed_form_kl(guide, x):
    """[N, L] KL(N(mu, sigma) || N(0, 1)) per datapoint and dim."""
    mu, sigma = guide.loc(x).detach(), guide.log_scale.detach().exp()
    return 0.5 * (mu ** 2 + sigma ** 2 - 1) - torch.log(sigma)


# -- active units ----------------------------------------------------------------

def test_active_units_are_the_dims_whose_mean_depends_on_x():
    model, guide, x = LinearModel(), make_guide(dead_rows=(1, 3)), make_data(300)
    au = active_units(model, guide, x, num_samples=3, batch_size=64)
    assert au.counts == {"z": 2}
    assert str(au) == "2" and au.dims == {"z": 4}
    # A_u = Var_x(E_q[u|x]) = Var_x((A x + c)_u), exactly for a site that depends on x only
    exact = guide.loc(x).detach().var(0)
    torch.testing.assert_close(au.variance["z"].double(), exact, rtol=1e-6, atol=1e-12)
    assert exact[[0, 2]].min() > 0.01
    # the threshold decides: above the largest variance nothing is active
    assert active_units(model, guide, x, threshold=float(exact.max()) * 1.01).counts == {"z": 0}


def test_format_and_bad_arguments():
    assert format_active_units({"z1": 16, "z2": 5}) == "16+5"
    model, guide, x = LinearModel(), make_guide(), make_data(10)
    with pytest.raises(ValueError, match="threshold"):
        active_units(model, guide, x, threshold=-1)
    with pytest.raises(ValueError, match="at least 2 datapoints"):
        active_units(model, guide, x[:1])
    with pytest.raises(ValueError, match="num_samples"):
        kl_per_dimension(model, guide, x, num_samples=0)
    with pytest.raises(ValueError, match="num_points"):
        elbo_surgery(model, guide, x, num_points=0)
    with pytest.raises(TypeError, match="data must be"):
        elbo_surgery(model, guide, [1.0, 2.0])


# -- KL per dimension ----------------------------------------------------------------

def test_kl_per_dimension_closed_form_and_the_elbo_kl():
    model, guide, x = LinearModel(), make_guide(dead_rows=(2,)), make_data(200)
    kl = kl_per_dimension(model, guide, x, batch_size=64)
    exact = closed_form_kl(guide, x).mean(0)
    torch.testing.assert_close(kl["z"].double(), exact, rtol=1e-6, atol=1e-9)
    with torch.no_grad():
        elbo_kl = ELBO(analytic_kl=True).terms(model, guide, x).kl / x.shape[0]
    assert float(kl["z"].sum()) == pytest.approx(float(elbo_kl), rel=1e-6)


def test_kl_per_dimension_by_monte_carlo_where_torch_has_no_closed_form():
    # prior N(0, 2^2) written as a transformed standard normal: torch knows no KL for it
    def prior():
        return dist.TransformedDistribution(dist.Normal(torch.zeros(L, dtype=DT), 1.0),
                                            [AffineTransform(0.0, 2.0)]).to_event(1)

    model, guide, x = LinearModel(prior), make_guide(), make_data(100)
    s = 200
    kl = kl_per_dimension(model, guide, x, num_samples=s, batch_size=50)["z"].double()
    mu, sigma = guide.loc(x).detach(), guide.log_scale.detach().exp()
    exact = (torch.log(2 / sigma) + (sigma ** 2 + mu ** 2) / 8 - 0.5).mean(0)
    # log q(z) - log p(z) at z = mu + sigma eps is const - eps^2/2 + (mu + sigma eps)^2 / 8:
    # variance 2 (sigma^2/8 - 1/2)^2 + (mu sigma / 4)^2 per draw, averaged over s * N draws
    var = 2 * (sigma ** 2 / 8 - 0.5) ** 2 + (mu * sigma / 4) ** 2
    se = (var.mean(0) / (s * x.shape[0])).sqrt()
    assert torch.all((kl - exact).abs() <= 4 * se)


# -- ELBO surgery -----------------------------------------------------------------------

def test_surgery_decomposes_the_average_kl():
    model, guide, x = LinearModel(), make_guide(), make_data(200)
    res = elbo_surgery(model, guide, x, num_points=200, point_block=64, data_block=48)
    assert res.log_n == pytest.approx(math.log(200))
    assert 0 < res.mutual_information <= res.log_n
    # avg KL over all N is in closed form here
    assert res.avg_kl == pytest.approx(float(closed_form_kl(guide, x).sum(1).mean()), rel=1e-9)
    assert res.std_errors["avg_kl"] == 0
    # MI + marginal KL estimates the same quantity from the M points
    total = res.mutual_information + res.marginal_kl
    assert abs(total - res.avg_kl) <= 4 * res.std_errors["sum"]
    assert set(res.to_dict()) >= {"avg_kl", "mutual_information", "marginal_kl", "log_n"}


def test_surgery_mutual_information_never_exceeds_log_n():
    # well-separated, nearly deterministic codes: q(z_m | x_n) vanishes for n != n_m and I[n; z] -> log N
    model, x = LinearModel(), make_data(50)
    guide = make_guide(a_scale=20.0, log_scale=-8.0)
    res = elbo_surgery(model, guide, x, num_points=120, point_block=32, data_block=16)
    assert res.mutual_information <= res.log_n
    assert res.mutual_information == pytest.approx(res.log_n, abs=1e-6)
    assert abs(res.avg_kl - res.log_n - res.marginal_kl) <= 4 * res.std_errors["marginal_kl"] + 1e-6


def test_surgery_of_a_guide_that_ignores_x():
    # q(z | x) = q(z) for every x: no information about the index, and the marginal KL is the whole KL
    model, x = LinearModel(), make_data(100)
    guide = make_guide(a_scale=0.0)
    res = elbo_surgery(model, guide, x, num_points=400, point_block=128, data_block=32)
    assert abs(res.mutual_information) < 1e-9
    assert res.std_errors["avg_kl"] == 0
    assert abs(res.marginal_kl - res.avg_kl) <= 4 * res.std_errors["marginal_kl"]


# -- a two-level pair ----------------------------------------------------------------------

L1, L2 = 4, 3
B_MATRIX = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0]], dtype=DT)


class TwoLevelModel(nn.Module):
    """p(z2) p(z1 | z2) p(x | z1): z2 ~ N(0, I_3), z1 | z2 ~ N(U z2, 0.5^2 I_4), x | z1 ~ N(V z1, 0.3^2 I_6)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.U = nn.Parameter(2 * B_MATRIX.T + 0.1 * torch.randn(L1, L2, generator=g, dtype=DT))
        self.V = nn.Parameter(torch.randn(D, L1, generator=g, dtype=DT))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(L2, dtype=DT), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ self.U.T, 0.5).to_event(1))
            return pyro.sample("x", dist.Normal(z1 @ self.V.T, 0.3).to_event(1), obs=x)


class TwoLevelGuide(nn.Module):
    """q(z1 | x) q(z2 | z1), the IWAE paper's 2-layer guide, linear: z1 ~ N(A x, 0.3), z2 ~ N(B z1, 0.2).

    Rows 2, 3 of A are zero, so z1 has 2 active units; z2 = B z1 reads z1[0] (active), z1[2] (a dim that
    carries no information about x) and nothing: 1 active unit.
    """

    def __init__(self):
        super().__init__()
        a = torch.randn(L1, D, generator=torch.Generator().manual_seed(4), dtype=DT) * 0.5
        a[2:] = 0
        self.A = nn.Parameter(a)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x @ self.A.T, 0.3).to_event(1))
            pyro.sample("z2", dist.Normal(z1 @ B_MATRIX.T, 0.2).to_event(1))


def test_two_level_pair_reports_active_units_per_site():
    model, guide, x = TwoLevelModel(), TwoLevelGuide(), make_data(400)
    s = 200
    au = active_units(model, guide, x, num_samples=s)
    assert au.counts == {"z1": 2, "z2": 1}
    assert str(au) == "2+1"
    assert au.describe() == "2+1 (z1: 2/4, z2: 1/3)"
    # E_q[z2 | x] = B A x, estimated from s draws of z1: its variance over x gains 0.3^2 / s of noise
    exact = (x @ guide.A.detach().T @ B_MATRIX.T).var(0) + 0.09 / s * B_MATRIX.sum(1)
    torch.testing.assert_close(au.variance["z2"].double(), exact, rtol=0.1, atol=1e-3)


def test_two_level_surgery_and_kl_use_the_draws_where_the_prior_depends_on_a_later_latent():
    model, guide, x = TwoLevelModel(), TwoLevelGuide(), make_data(60)
    res = elbo_surgery(model, guide, x, num_points=240, num_samples=50, point_block=80, data_block=32)
    assert res.mutual_information <= res.log_n
    # reference: E_q[log q(z1, z2 | x) - log p(z1, z2)] with many joint draws
    with torch.no_grad():
        q, p = pair_sites(model, guide, x, num_particles=4000)
        per_draw = sum(q[n]["log_prob"] - p[n]["log_prob"] for n in ("z1", "z2"))  # [draws, N]
    ref = float(per_draw.mean())
    ref_se = float(per_draw.var(0).sum().sqrt() / (4000 ** 0.5 * x.shape[0]))
    assert abs(res.avg_kl - ref) <= 4 * math.hypot(res.std_errors["avg_kl"], ref_se)
    total = res.mutual_information + res.marginal_kl
    assert abs(total - res.avg_kl) <= 4 * math.hypot(res.std_errors["sum"], res.std_errors["avg_kl"])
    kl = kl_per_dimension(model, guide, x, num_samples=50)
    assert list(kl) == ["z1", "z2"] and kl["z1"].shape == (L1,) and kl["z2"].shape == (L2,)
    kl_total = float(sum(v.sum() for v in kl.values()))
    assert abs(kl_total - ref) <= 4 * math.hypot(res.std_errors["avg_kl"], ref_se) + 0.05


# -- evaluate on the command line -------------------------------------------------------------

def test_evaluate_prints_and_writes_the_diagnostics(tmp_path, capsys):
    from pyrovae.app.cli import main

    out = tmp_path / "run"
    small = ["--num-train", "64", "--val-size", "16", "--num-test", "48", "--epochs", "1", "--hidden", "16",
             "--latent-dim", "3", "--batch-size", "64", "--step-mode", "eager", "--no-progress"]
    assert main(["train", "--out", str(out), *small]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--iw-samples", "20", "--surgery-points", "48"]) == 0
    printed = capsys.readouterr().out
    assert "active units" in printed and "mutual information" in printed and "+-" in printed
    result = json.loads((out / "evaluation.json").read_text())
    assert set(result) >= {"test_elbo", "nll", "nll_std_error", "iw_samples", "num_test", "active_units", "surgery"}
    assert result["iw_samples"] == 20 and result["num_test"] == 48
    assert set(result["active_units"]) == {"z"} and 0 <= result["active_units"]["z"] <= 3
    surgery = result["surgery"]
    assert surgery["log_n"] == pytest.approx(math.log(48))
    assert surgery["mutual_information"] <= surgery["log_n"]
    assert set(surgery) >= {"avg_kl", "mutual_information", "marginal_kl", "log_n"}
