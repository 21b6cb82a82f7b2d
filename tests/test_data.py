"""Datasets: shapes is deterministic and factor-addressable; IDX files load in both layouts."""

import gzip
import struct

import numpy as np
import pytest
import torch

from pyrovae.data import ShapesFactors, Split, load_dataset
from pyrovae.data.mnist import read_idx
from pyrovae.data.shapes import FACTOR_SIZES, render


def test_shapes_is_deterministic_and_carries_its_factors():
    a = load_dataset("shapes", num_train=200, val_size=50, num_test=50, seed=7)
    b = load_dataset("shapes", num_train=200, val_size=50, num_test=50, seed=7)
    assert torch.equal(a.train.data, b.train.data)
    assert a.train.data.shape == (200, 1, 64, 64)
    assert set(a.train.data.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(torch.from_numpy(render(a.train.labels.numpy())).float(), a.train.data)
    assert not torch.equal(a.train.data[:50], a.val.data)


def test_shapes_factors_change_the_image():
    base = np.array([[2, 5, 0, 16, 16]])  # the heart: no rotational symmetry
    img = render(base)
    for k, size in enumerate(FACTOR_SIZES):
        other = base.copy()
        other[0, k] = (base[0, k] + 1) % size if k != 1 else 0
        assert not np.array_equal(render(other), img), f"factor {k} does not change the image"
    # larger scale -> more ink; position x moves the centre of mass right
    assert render([[0, 5, 0, 16, 16]]).sum() > render([[0, 0, 0, 16, 16]]).sum()
    cols = np.arange(64)
    com = [(render([[1, 3, 0, px, 16]])[0, 0].sum(0) * cols).sum() / render([[1, 3, 0, px, 16]]).sum()
           for px in (0, 31)]
    assert com[1] > com[0] + 20


def test_fixed_factor_sampling():
    grid = ShapesFactors()
    assert len(grid) == 737_280
    factors, images = grid.sample_with_fixed_factor(16, 2, np.random.default_rng(0), value=7)
    assert (factors[:, 2] == 7).all() and len(np.unique(factors[:, 3])) > 1
    assert images.shape == (16, 1, 64, 64)
    assert torch.equal(grid[int(np.ravel_multi_index(factors[0], FACTOR_SIZES))], images[0])


def _idx_bytes(array, dtype_code=0x08):
    header = struct.pack(">HBB", 0, dtype_code, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(path, array):
    with gzip.open(path, "wb") as f:
        f.write(_idx_bytes(array))


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_from_idx_files(tmp_path, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(60, 28, 28))
    _write_idx(folder / "train-images-idx3-ubyte.gz", train)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, size=60))
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, size=(20, 28, 28)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, size=20))
    data = load_dataset("mnist", data_dir=str(tmp_path), binarize="dynamic", val_size=10)
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 20)
    assert data.image_shape == (1, 28, 28)
    all_train = torch.cat([data.train.data, data.val.data]) * 255
    assert sorted(all_train.round().sum(dim=(1, 2, 3)).tolist()) == sorted(train.sum(axis=(1, 2)).astype(float).tolist())


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "plain"])
def test_idx_files_read_back_exactly_and_bad_ones_are_named(tmp_path, compressed):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, size=(5, 28, 28)), rng.integers(0, 10, size=5)

    def write(name, data):
        path = tmp_path / (name + (".gz" if compressed else ""))
        with (gzip.open if compressed else open)(path, "wb") as f:
            f.write(data)
        return str(path)

    read_images = read_idx(write("images", _idx_bytes(images)), "images")
    assert read_images.dtype == torch.uint8 and np.array_equal(read_images.numpy(), images)
    read_labels = read_idx(write("labels", _idx_bytes(labels)), "labels")
    assert read_labels.dtype == torch.int64 and np.array_equal(read_labels.numpy(), labels)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(write("short", _idx_bytes(images)[:-10]), "images")
    with pytest.raises(ValueError, match="not an IDX file of images"):
        read_idx(write("html", b"<html>not found</html>" * 10), "images")
    with pytest.raises(ValueError, match="not an IDX file of images"):
        read_idx(write("labels-as-images", _idx_bytes(labels)), "images")
    with pytest.raises(ValueError, match="not an IDX file of labels"):
        read_idx(write("int32", _idx_bytes(labels, dtype_code=0x0C)[:8] + labels.astype(">i4").tobytes()), "labels")


def test_dynamic_binarization_redraws_static_does_not():
    grey = torch.full((64, 1, 4, 4), 0.5)
    dynamic = Split(grey, binarize="dynamic")
    g = torch.Generator().manual_seed(0)
    first, second = next(dynamic.batches(64, g)).x, next(dynamic.batches(64, g)).x
    assert set(first.unique().tolist()) == {0.0, 1.0} and not torch.equal(first, second)
    static = Split(grey, binarize="static", seed=1)
    assert torch.equal(next(static.batches(64, g)).x, next(static.batches(64, g)).x)
    assert 0.4 < static.data.mean() < 0.6


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_conditioning_on_labels_keeps_the_binarization(tmp_path, binarize):
    """``condition_on="labels"`` rebuilds the splits with a ``y`` field; the images stay binarized as asked."""
    rng = np.random.default_rng(2)
    for stem, n in (("train", 60), ("t10k", 20)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, size=n))
    plain = load_dataset("mnist", str(tmp_path), binarize=binarize, val_size=10)
    data = load_dataset("mnist", str(tmp_path), binarize=binarize, val_size=10, condition_on="labels",
                        num_labelled=20)
    g = torch.Generator().manual_seed(0)
    for split, reference in ((data.train, plain.train), (data.test, plain.test)):
        x = torch.cat([b.x for b in split.batches(16, g)])
        assert set(x.unique().tolist()) == {0.0, 1.0}
        if binarize == "dynamic":
            assert split.binarize == "dynamic"
        else:
            assert torch.equal(split.data, reference.data)  # the draw made once, kept
        assert torch.equal(split.fixed(3).data, reference.fixed(3).data)


def _labelled_split(n, num_labelled):
    present = torch.zeros(n, dtype=torch.bool)
    present[torch.randperm(n, generator=torch.Generator().manual_seed(1))[:num_labelled]] = True
    return Split({"x": torch.rand(n, 3), "y": torch.arange(n) % 10}, present={"y": present})


@pytest.mark.parametrize("num_labelled, per_datum", [(10, {1}), (25, {1}), (3, {3, 4})])
def test_mixed_batches_hold_every_group_in_every_step(num_labelled, per_datum):
    """1000 data, batch 100: 10 steps, each with a part of each group; the unlabelled data once per epoch, a
    labelled group smaller than the number of steps cycled (each datum 3 or 4 times for 3 labels)."""
    split = _labelled_split(1000, num_labelled)
    steps = split.mixed_batch_indices(100, torch.Generator().manual_seed(0))
    assert len(steps) == 10
    unlabelled, labelled = [], []
    for (u_rows, u_weight), (l_rows, l_weight) in steps:
        assert not split.present["y"][u_rows].any() and split.present["y"][l_rows].all() and len(l_rows) >= 1
        assert (u_weight, l_weight) == ((1000 - num_labelled) / 1000, num_labelled / 1000)
        assert split.materialize(l_rows).kwargs["y"] is not None and split.materialize(u_rows).kwargs["y"] is None
        unlabelled += u_rows.tolist()
        labelled += l_rows.tolist()
    assert sorted(unlabelled) == torch.nonzero(~split.present["y"]).squeeze(1).tolist()
    counts = torch.bincount(torch.tensor(labelled), minlength=1000)[split.present["y"]]
    assert set(counts.tolist()) == per_datum


def test_mixed_batches_estimate_the_mean_over_all_data_without_bias():
    """sum_g (N_g / N) * mean over the step's part of group g, averaged over steps of many epochs, meets the
    mean of a per-datum value over all data within 4 standard errors (the estimates' own spread)."""
    split = _labelled_split(200, 7)
    value = torch.linspace(-3.0, 5.0, 200) ** 2 + 10.0 * split.present["y"]  # the labelled data differ
    g = torch.Generator().manual_seed(0)
    estimates = torch.tensor([sum(w * float(value[rows].mean()) for rows, w in step)
                              for _ in range(300) for step in split.mixed_batch_indices(32, g)])
    standard_error = float(estimates.std()) / len(estimates) ** 0.5
    assert abs(float(estimates.mean()) - float(value.mean())) < 4 * standard_error
    assert standard_error < 0.05  # a bias above about 0.1 fails; leaving out the labelled part would be 0.35


def test_mixed_batches_without_optional_fields_are_plain_batches():
    split = Split(torch.rand(250, 2))
    steps = split.mixed_batch_indices(100, torch.Generator().manual_seed(0))
    assert [len(step) for step in steps] == [1, 1] and all(step[0][1] == 1.0 for step in steps)
    assert sorted(torch.cat([step[0][0] for step in steps]).tolist()) == list(range(250))


def _write_amat(path, images, compressed):
    text = "".join(" ".join(str(int(v)) for v in image.reshape(-1)) + "\n" for image in images)
    with (gzip.open if compressed else open)(path, "wb") as f:
        f.write(text.encode())


def _amat_folder(folder, sizes=(12, 4, 6), compressed=True):
    rng = np.random.default_rng(2)
    images = {split: rng.integers(0, 2, size=(n, 28, 28)) for split, n in zip(("train", "valid", "test"), sizes)}
    for split, array in images.items():
        _write_amat(folder / f"binarized_mnist_{split}.amat{'.gz' if compressed else ''}", array, compressed)
    return images


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "plain"])
def test_binarized_mnist_reads_larochelles_files_exactly(tmp_path, compressed):
    images = _amat_folder(tmp_path, compressed=compressed)
    data = load_dataset("binarized-mnist", data_dir=str(tmp_path))
    for split, name in ((data.train, "train"), (data.val, "valid"), (data.test, "test")):
        assert split.data.shape == (len(images[name]), 1, 28, 28) and split.labels is None
        assert split.binarize is None and np.array_equal(split.data[:, 0].numpy(), images[name])
    first = load_dataset("binarized-mnist", data_dir=str(tmp_path), num_train=5, val_size=3, num_test=2)
    assert (len(first.train), len(first.val), len(first.test)) == (5, 3, 2)
    assert torch.equal(first.val.data, data.val.data[:3])
    with pytest.raises(ValueError, match="binary already"):
        load_dataset("binarized-mnist", data_dir=str(tmp_path), binarize="dynamic")
    with pytest.raises(ValueError, match="num_test 7 exceeds the 6 images"):
        load_dataset("binarized-mnist", data_dir=str(tmp_path), num_test=7)


def test_binarized_mnist_names_missing_files_and_bad_lines(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs the folder"):
        load_dataset("binarized-mnist")
    _amat_folder(tmp_path)
    (tmp_path / "binarized_mnist_valid.amat.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"not found in .*: binarized_mnist_valid\.amat\[\.gz\]"):
        load_dataset("binarized-mnist", data_dir=str(tmp_path))
    good = " ".join(["0"] * 784)
    for lines, message in (([good, " ".join(["1"] * 783)], "line 2: 783 values, expected 784"),
                           ([good, good.replace("0", "2", 1)], "line 2: value '2' at position 1 is not 0 or 1"),
                           ([good[:-1] + "0.5"], "line 1: value '0.5' at position 784 is not 0 or 1"),
                           ([good, "", good], "line 2: 0 values")):
        (tmp_path / "binarized_mnist_valid.amat").write_text("\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=message):
            load_dataset("binarized-mnist", data_dir=str(tmp_path))
    (tmp_path / "binarized_mnist_valid.amat").write_text(good + "\n\n\n")  # blank lines at the end are no images
    assert len(load_dataset("binarized-mnist", data_dir=str(tmp_path)).val) == 1
