"""Datasets: the built-in procedural ``shapes`` and ``rivers``, dSprites, MNIST and Fashion-MNIST.

:func:`load_dataset` returns a :class:`Dataset` of train / validation / test
:class:`ImageSplit` s with values in [0, 1].
"""

import numpy as np
import torch

from pyrovae.data.dsprites import DSprites
from pyrovae.data import rivers
from pyrovae.data.mnist import load_idx_split
from pyrovae.data.rivers import RiversFactors
from pyrovae.data.shapes import ShapesFactors
from pyrovae.data.splits import BINARIZE, Dataset, ImageSplit, check_images

DATASETS = ("shapes", "rivers", "dsprites", "mnist", "fashion-mnist")
GROUND_TRUTH = ("shapes", "rivers", "dsprites")
SPLIT_SEED_OFFSETS = (0, 10_007, 20_011)  # train, validation and test draws of a ground-truth dataset: seed + offset

__all__ = ["BINARIZE", "DATASETS", "DSprites", "Dataset", "GROUND_TRUTH", "ImageSplit", "RiversFactors",
           "SPLIT_SEED_OFFSETS", "ShapesFactors", "check_images", "ground_truth", "load_dataset"]


def ground_truth(name, data_dir=None):
    """The factor grid of a dataset with ground-truth factors: ``shapes``, ``rivers`` (built in) or ``dsprites``
    (its .npz)."""
    if name == "shapes":
        return ShapesFactors()
    if name == "rivers":
        return RiversFactors()
    if name == "dsprites":
        return DSprites(data_dir)
    raise ValueError(f"dataset {name!r} has no ground-truth factors; expected one of {list(GROUND_TRUTH)}")


def load_dataset(name, data_dir=None, binarize=None, val_size=None, seed=0, download=False,
                 num_train=None, num_test=None):
    """Load a dataset by name into train / validation / test splits.

    ``shapes``: ``num_train`` (default 10,000) training images drawn uniformly
    from the factor grid with ``seed``, a validation split of ``val_size``
    (default 1,000) and a test split of ``num_test`` (default 1,000), each from
    its own seed; labels are the factor indices. Already binary.

    ``rivers``: RGB pictures ``[3, 64, 64]`` with values k/255 (see
    :mod:`pyrovae.data.rivers`), the same split sizes; picture i of the training,
    validation and test split is picture i of ``seed``, ``seed + 10_007`` and
    ``seed + 20_011`` (``SPLIT_SEED_OFFSETS``), so
    ``rivers.draw_inputs(seed + offset, range(n))`` gives every picture's inputs,
    turns included. Labels are the cells of :class:`RiversFactors`. The splits hold
    float32 images: 49 KB a picture, 491 MB for 10,000.

    ``dsprites``: the same draws from the dSprites grid, read from the published
    ``.npz`` file at ``data_dir`` (the file or its folder; see :class:`DSprites`).

    ``mnist`` / ``fashion-mnist``: from the IDX files in ``data_dir`` (see
    :mod:`pyrovae.data.mnist`); the last ``val_size`` (default 10,000) of the 60,000
    training images, after a fixed shuffle, form the validation split.
    ``num_train``/``num_test`` take the first images only, for quick runs.
    """
    if name == "rivers":
        return _river_splits(num_train or 10_000, val_size or 1_000, num_test or 1_000, seed)
    if name in GROUND_TRUTH:
        return _factor_splits(name, ground_truth(name, data_dir), num_train or 10_000, val_size or 1_000,
                              num_test or 1_000, seed)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    images, labels = load_idx_split(name, "train", data_dir, download)
    test_images, test_labels = load_idx_split(name, "test", data_dir)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(12345))
    n_val = val_size or 10_000
    train_idx, val_idx = order[:-n_val], order[-n_val:]
    if num_train:
        train_idx = train_idx[:num_train]
    if num_test:
        test_images, test_labels = test_images[:num_test], test_labels[:num_test]
    return Dataset(
        name,
        ImageSplit(images[train_idx], labels[train_idx], binarize, seed),
        ImageSplit(images[val_idx], labels[val_idx], binarize, seed + 1),
        ImageSplit(test_images, test_labels, binarize, seed + 2),
    )


def _factor_splits(name, grid, num_train, num_val, num_test, seed):
    def split(n, s):
        factors, images = grid.sample(n, np.random.default_rng(s))
        return ImageSplit(images, torch.from_numpy(factors))

    sizes = (num_train, num_val, num_test)
    return Dataset(name, *(split(n, seed + offset) for n, offset in zip(sizes, SPLIT_SEED_OFFSETS)))


def _river_splits(num_train, num_val, num_test, seed):
    def split(n, s):
        images, factors, _ = rivers.load_split(n, s)
        return ImageSplit(torch.from_numpy(images), torch.from_numpy(factors))

    sizes = (num_train, num_val, num_test)
    return Dataset("rivers", *(split(n, seed + offset) for n, offset in zip(sizes, SPLIT_SEED_OFFSETS)))
