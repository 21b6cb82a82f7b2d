"""The factor-by-latent picture, the latent walk and the rivers finding, on codes whose answer is known.

A lookup pair stands in for a trained VAE: its guide knows the code of every
rivers picture of a fixed sample -- latent dimension 3 is the grass colour,
dimension 7 the net curvature, the rest noise -- and finds a picture's code by
matching a random projection of its pixels; its decoder is a fixed map of z. The
dimensions the pictures walk must then be 3 and 7, and the walk must decode the
codes it says it decodes.
"""

import importlib.util
import math
import os

import matplotlib.image
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.app import viz
from pyrovae.app.pictures import factor_information, ground_truth_sample, write_run_pictures
from pyrovae.app.runs import Run
from pyrovae.data import SPLIT_SEED_OFFSETS, load_dataset, rivers
from pyrovae.evaluate.factors import factor_latent_information

N, D, GRASS_DIM, CURVATURE_DIM = 1000, 10, 3, 7
SEED = 0  # the run's seed: its factor pictures read pictures 0 .. N-1 of seed + 20,011
IMAGES, _, INPUTS = rivers.load_split(N, SEED + SPLIT_SEED_OFFSETS[2])
TABLE, NAMES = INPUTS.table()
COLUMN = {name: k for k, name in enumerate(NAMES)}


def known_codes(table, grass="grass", curvature="net_curvature", seed=0):
    """Codes [N, D]: dim 3 follows ``grass``, dim 7 follows ``curvature`` (input names), the rest N(0, 1) noise."""
    codes = np.random.default_rng(seed).normal(size=(len(table), D))
    codes[:, GRASS_DIM] = 3 * (table[:, COLUMN[grass]] - table[:, COLUMN[grass]].mean())
    codes[:, CURVATURE_DIM] = table[:, COLUMN[curvature]] / 2
    return codes


class LookupPair:
    """A model/guide pair whose guide looks each picture's code up; p(x | z) = N(sigmoid(z W), 0.1^2)."""

    def __init__(self, images, codes, image_shape):
        g = torch.Generator().manual_seed(0)
        self.image_shape = tuple(image_shape)
        size = math.prod(self.image_shape)
        self.projection = torch.randn(size, 3, generator=g, dtype=torch.float64)
        self.keys = self._keys(images)
        self.codes = torch.as_tensor(codes, dtype=torch.float32)
        self.weight = torch.randn(D, size, generator=g) / 2

    def _keys(self, x):
        return x.reshape(*x.shape[:x.dim() - len(self.image_shape)], -1).double() @ self.projection

    def encode(self, x):
        distance = ((self._keys(x)[..., None, :] - self.keys) ** 2).sum(-1)
        return self.codes[distance.argmin(-1)]

    def decode(self, z):
        return torch.sigmoid(z @ self.weight).reshape(*z.shape[:-1], *self.image_shape)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.encode(x), 0.01).to_event(1))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decode(z), 0.1).to_event(len(self.image_shape)), obs=x)


X = torch.from_numpy(IMAGES).float().div_(255.0)
PAIR = LookupPair(X, known_codes(TABLE), (3, 64, 64))


def load_example():
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "rivers.py")
    spec = importlib.util.spec_from_file_location("rivers_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_guide_reads_the_known_codes():
    site, codes = viz.latent_codes(PAIR.guide, X, batch_size=300)
    assert site == "z" and codes.shape == (N, D)
    assert torch.equal(codes, PAIR.codes)


def test_the_walked_dimensions_are_the_most_informative_ones():
    info = factor_latent_information(PAIR.codes.double().numpy(), TABLE, NAMES)
    walked = viz.walk_dims(info, ["grass", "net_curvature"])
    assert [w["dim"] for w in walked] == [GRASS_DIM, CURVATURE_DIM]
    # dim 3 is an affine map of the grass colour, so its 20 bins are the input's bins: I = H exactly
    assert walked[0]["share"] == pytest.approx(1.0, abs=1e-9)
    assert walked[1]["share"] == pytest.approx(1.0, abs=1e-9)  # dim 7 = net curvature / 2: its 9 levels
    # an input whose best dimension is taken gets its best free one
    again = viz.walk_dims(info, ["grass", "grass"])
    assert again[0]["dim"] == GRASS_DIM and again[1]["dim"] != GRASS_DIM
    assert viz.best_captured_factors(info) == ["grass", "net_curvature"]
    with pytest.raises(ValueError, match="need as many latent dimensions"):
        viz.walk_dims(info, ["grass"] * (D + 1))


def test_the_walk_decodes_the_base_code_with_the_two_dimensions_set():
    steps = 5
    walk = viz.latent_walk(PAIR.model, PAIR.guide, X, (GRASS_DIM, CURVATURE_DIM), num_steps=steps, base_index=2)
    assert walk.images.shape == (steps, steps, 3, 64, 64) and walk.dims == (GRASS_DIM, CURVATURE_DIM)
    for values, dim in zip(walk.values, walk.dims):
        low, high = np.quantile(PAIR.codes[:, dim].double().numpy(), [0.02, 0.98])
        assert values.tolist() == pytest.approx(np.linspace(low, high, steps).tolist(), abs=1e-6)
    base = PAIR.codes[2]
    for r in range(steps):
        for s in range(steps):
            z = base.clone()
            z[GRASS_DIM], z[CURVATURE_DIM] = walk.values[0][r], walk.values[1][s]
            torch.testing.assert_close(walk.images[r, s], PAIR.decode(z))
    with pytest.raises(ValueError, match="two different dimensions"):
        viz.latent_walk(PAIR.model, PAIR.guide, X[:10], (3, 3))
    with pytest.raises(ValueError, match="dimension 12 is outside"):
        viz.latent_walk(PAIR.model, PAIR.guide, X[:10], (3, 12))


def colourful(path):
    """Whether a PNG has pixels whose red and green differ (a colour picture, not a grey one)."""
    image = matplotlib.image.imread(path)
    return bool((np.abs(image[..., 0] - image[..., 1]) > 0.05).any())


@pytest.mark.parametrize("channels", [1, 3])
def test_walk_pictures_keep_colour_or_grey(channels, tmp_path):
    steps = 4
    values = (torch.linspace(-1, 1, steps), torch.linspace(0, 2, steps))
    images = torch.rand(steps, steps, channels, 16, 16, generator=torch.Generator().manual_seed(1))
    walk = viz.LatentWalk(images, (0, 1), values, "z")
    path = viz.save_latent_walk(walk, str(tmp_path / "walk.png"), names=("grass", "net_curvature"))
    picture = matplotlib.image.imread(path)
    assert picture.shape[0] > steps * 16 and picture.shape[1] > steps * 16
    assert colourful(path) == (channels == 3)


def test_factor_latent_heat_map_is_written(tmp_path):
    info = factor_latent_information(PAIR.codes.double().numpy(), TABLE, NAMES)
    path = viz.save_factor_latents(info, str(tmp_path / "f.png"), highlight=[("grass", 3), ("net_curvature", 7)])
    picture = matplotlib.image.imread(path)
    assert picture.shape[0] > 14 * 20 and picture.shape[1] > D * 30


def test_a_rivers_run_draws_both_pictures_of_the_dimensions_it_should(tmp_path, monkeypatch):
    data = load_dataset("rivers", num_train=8, val_size=8, num_test=32, seed=SEED)
    run = Run(str(tmp_path), {"dataset": "rivers", "seed": SEED}, PAIR.model, PAIR.guide, data,
              {"params": {}, "constraints": {}})
    x, table, names = ground_truth_sample(run.cfg, 50)
    assert torch.equal(x, X[:50]) and np.array_equal(table, TABLE[:50]) and names == NAMES
    walks = []
    save = viz.save_latent_walk
    monkeypatch.setattr(viz, "save_latent_walk", lambda walk, *a, **k: walks.append(walk) or save(walk, *a, **k))
    with run.scope():
        written = write_run_pictures(run, num_factor_points=N)
        reading = factor_information(run, N)
    assert written["pictures_skipped"] == {}
    assert {"factor_latents.png", "latent_walk.png"} <= set(written["pictures"])
    assert [w.dims for w in walks] == [(GRASS_DIM, CURVATURE_DIM)]
    assert torch.equal(reading.codes, PAIR.codes) and reading.site == "z"


def test_the_finding_names_the_grass_and_curvature_dimensions():
    example = load_example()
    table, _ = rivers.draw_inputs(1, np.arange(5000)).table()
    finding = example.rivers_finding(factor_latent_information(known_codes(table), table, NAMES))
    assert finding["grass"]["dim"] == GRASS_DIM and finding["net_curvature"]["dim"] == CURVATURE_DIM
    assert finding["grass"]["dominant"] and finding["net_curvature"]["dominant"] and finding["distinct_dims"]
    versus = finding["curvature_vs_turns"]
    assert versus["dim"] == CURVATURE_DIM and versus["curvature_explains_better"]
    assert next(iter(finding["curvature_dim_inputs"])) == "net_curvature"
    assert finding["seed_claim_holds"]


def test_the_finding_rejects_a_single_turn_and_a_split_grass_colour():
    example = load_example()
    table, _ = rivers.draw_inputs(1, np.arange(5000)).table()
    # dimension 7 copies turn 4: it is the dimension most informative about the net curvature
    # (I = H(Bin(8)) - H(Bin(7)), about 0.07 nats, against noise's bias of about 0.015), but turn 4 explains it
    finding = example.rivers_finding(factor_latent_information(known_codes(table, curvature="turn_4"), table, NAMES))
    assert finding["net_curvature"]["dim"] == CURVATURE_DIM
    assert finding["curvature_vs_turns"]["best_turn"] == "turn_4"
    assert not finding["curvature_vs_turns"]["curvature_explains_better"] and not finding["seed_claim_holds"]
    # the grass colour spread over two equal dimensions: neither controls it alone
    codes = known_codes(table)
    codes[:, 0] = codes[:, GRASS_DIM]
    finding = example.rivers_finding(factor_latent_information(codes, table, NAMES))
    assert finding["grass"]["runner_up_mi"] == pytest.approx(finding["grass"]["mi"])
    assert not finding["grass"]["dominant"] and not finding["seed_claim_holds"]


@pytest.mark.slow
def test_the_rivers_example_runs_end_to_end(tmp_path):
    """examples/rivers.py on a tiny budget: both runs get their metrics, finding and report (a minute or more)."""
    example = load_example()
    out = str(tmp_path / "rivers")
    summary = example.main(["--out", out, "--num-train", "64", "--epochs", "1", "--val-size", "32", "--num-test", "32",
                            "--metric-points", "200", "--jobs", "1"])
    assert set(summary) == {"vae", "beta4-vae"}
    for name, result in summary.items():
        folder = os.path.join(out, name)
        with open(os.path.join(folder, "report.html")) as f:
            page = f.read()
        for shown in ("latent_walk.png", "factor_latents.png", "The rivers finding", "Disentanglement scores"):
            assert shown in page, (name, shown)
        assert set(result["scores"]) == {"mig", "dci", "sap"}
        training = result["finding"]["training"]
        assert training["epochs"] == 1 and training["num_train"] == 64 and training["cpu_minutes"] > 0
        assert training["beta"] == (4.0 if name == "beta4-vae" else 1.0)
