"""dSprites from a small .npz that the test writes in the published format (keys, dtypes, column order).

The file holds a sub-grid of dSprites' factors -- color 1 x shape 3 x scale 2 x
orientation 2 x position 4 x 4 = 192 images -- rendered with pyrovae's shapes
renderer, stored in shuffled row order, with a pickled ``metadata`` entry as in
the original file.
"""

import json

import numpy as np
import pytest
import torch

from pyrovae.app.cli import main
from pyrovae.data import DSprites, ground_truth, load_dataset
from pyrovae.data.dsprites import FILE_NAME
from pyrovae.data.shapes import factor_values, render
from pyrovae.evaluate.disentangle import compute_all

# the sub-grid: for each shapes factor, the shapes-grid levels kept
LEVELS = [np.array([0, 1, 2]), np.array([0, 5]), np.array([0, 20]), np.array([0, 10, 20, 31]),
          np.array([0, 10, 20, 31])]
SIZES = tuple(len(v) for v in LEVELS)


def _grid():
    """Every combination of the sub-grid: ``[192, 5]`` indices into LEVELS."""
    return np.stack(np.meshgrid(*[np.arange(n) for n in SIZES], indexing="ij"), -1).reshape(-1, len(SIZES))


def _shapes_factors(sub):
    """Shapes-grid factor indices of sub-grid indices."""
    return np.stack([LEVELS[k][sub[:, k]] for k in range(len(LEVELS))], axis=1)


def write_dsprites(path, drop=0, grey=False, keys=("imgs", "latents_values", "latents_classes")):
    sub = _grid()
    order = np.random.default_rng(0).permutation(len(sub))  # rows out of grid order
    sub = sub[order][:len(sub) - drop]
    full = _shapes_factors(sub)
    imgs = render(full)[:, 0]
    if grey:
        imgs = imgs * 255
    values = factor_values()
    latents_values = np.column_stack([np.ones(len(full))] + [values[0][full[:, 0]] + 1] +
                                     [values[k][full[:, k]] for k in range(1, 5)])
    latents_classes = np.column_stack([np.zeros(len(full), dtype=np.int64), full])
    arrays = {"imgs": imgs.astype(np.uint8), "latents_values": latents_values, "latents_classes": latents_classes}
    metadata = np.array({"description": "test file in the dSprites format"}, dtype=object)
    np.savez_compressed(path, metadata=metadata, **{k: arrays[k] for k in keys})
    return path


@pytest.fixture(scope="module")
def dsprites_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dsprites")
    return write_dsprites(folder / FILE_NAME)


def test_loads_the_grid_without_the_constant_color(dsprites_file):
    data = DSprites(dsprites_file)
    assert data.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert data.factor_sizes == SIZES and data.num_factors == 5 and len(data) == 192
    values = data.factor_values()
    assert np.allclose(values[0], [1, 2, 3])
    assert np.allclose(values[1], factor_values()[1][[0, 5]])
    assert np.allclose(values[3], factor_values()[3][LEVELS[3]])


def test_factors_address_the_right_images(dsprites_file):
    data = DSprites(dsprites_file)
    rng = np.random.default_rng(1)
    factors, images = data.sample(50, rng)
    assert images.shape == (50, 1, 64, 64) and images.dtype == torch.float32
    assert torch.equal(images, torch.from_numpy(render(_shapes_factors(factors))).float())
    assert factors.max(0).tolist() == [n - 1 for n in SIZES]  # every level drawn
    for k in range(5):
        fixed, imgs = data.sample_with_fixed_factor(20, k, rng)
        assert len(np.unique(fixed[:, k])) == 1 and len(np.unique(fixed[:, (k + 1) % 5])) > 1
        assert torch.equal(imgs, data.sample_observations_from_factors(fixed))
    fixed, _ = data.sample_with_fixed_factor(10, 0, rng, value=2)
    assert (fixed[:, 0] == 2).all()
    with pytest.raises(ValueError, match="out of range"):
        data.sample_observations_from_factors([[3, 0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"shape \[N, 5\]"):
        data.sample_observations_from_factors([[0, 0, 0, 0]])


def test_load_dataset_from_the_file_or_its_folder(dsprites_file):
    by_folder = load_dataset("dsprites", data_dir=dsprites_file.parent, num_train=64, val_size=16, num_test=16)
    by_file = load_dataset("dsprites", data_dir=str(dsprites_file), num_train=64, val_size=16, num_test=16)
    assert by_folder.name == "dsprites" and by_folder.image_shape == (1, 64, 64)
    assert torch.equal(by_folder.train.data, by_file.train.data)
    labels = by_folder.train.labels.numpy()
    assert torch.equal(by_folder.train.data, torch.from_numpy(render(_shapes_factors(labels))).float())
    assert not torch.equal(by_folder.train.data[:16], by_folder.val.data)
    assert ground_truth("dsprites", dsprites_file.parent).factor_sizes == SIZES


def test_metrics_run_on_dsprites(dsprites_file):
    data = DSprites(dsprites_file)
    ink = lambda x: np.stack([x.sum((1, 2, 3)).numpy(), x[:, 0, :, :32].sum((1, 2)).numpy()], 1)  # noqa: E731
    scores = compute_all(ink, data, 0, num_train=40, num_eval=20, num_variance_estimate=100, n_estimators=5)
    assert set(scores) == {"beta_vae", "factor_vae", "mig", "dci", "sap"}
    assert all(np.isfinite(v) for s in scores.values() for v in s.values() if isinstance(v, float))


def test_missing_file_or_key_or_bad_content_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        DSprites(None)
    with pytest.raises(FileNotFoundError, match=FILE_NAME):
        DSprites(tmp_path)
    with pytest.raises(ValueError, match=r"no key\(s\) \['latents_classes'\]"):
        DSprites(write_dsprites(tmp_path / "a.npz", keys=("imgs", "latents_values")))
    with pytest.raises(ValueError, match="binary"):
        DSprites(write_dsprites(tmp_path / "b.npz", grey=True))
    with pytest.raises(ValueError, match="191 images for a grid of 192"):
        DSprites(write_dsprites(tmp_path / "c.npz", drop=1))
    (tmp_path / "d.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        DSprites(tmp_path / "d.npz")


def test_cli_trains_and_scores_on_dsprites(dsprites_file, tmp_path, capsys):
    out = tmp_path / "run"
    small = ["--num-train", "64", "--val-size", "16", "--num-test", "16", "--epochs", "1", "--hidden", "16",
             "--latent-dim", "3", "--batch-size", "32", "--step-mode", "eager", "--no-progress"]
    assert main(["train", "--dataset", "dsprites", "--data-dir", str(dsprites_file), "--out", str(out), *small]) == 0
    assert json.loads((out / "config.json").read_text())["binarize"] == "none"  # dSprites is binary already
    capsys.readouterr()
    assert main(["metrics", str(out), "--num-points", "40", "--trees", "5", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"beta_vae", "factor_vae", "mig", "dci", "sap"}
    saved = json.loads((out / "disentanglement.json").read_text())  # for pyrovae report
    assert saved["settings"] == {"dataset": "dsprites", "num_points": 40, "trees": 5, "seed": 0, "sites": None}
    assert main(["metrics", str(out), "--dataset", "shapes", "--num-points", "20", "--trees", "5"]) == 0
    assert "beta_vae" in capsys.readouterr().out
    assert main(["train", "--dataset", "dsprites", "--out", str(tmp_path / "r2"), *small]) == 2
    assert "--data-dir" in capsys.readouterr().err
