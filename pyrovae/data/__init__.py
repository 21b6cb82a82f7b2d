"""Datasets: the built-in procedural ``shapes`` and ``rivers``, dSprites, MNIST, Fashion-MNIST and binarized MNIST.

:func:`load_dataset` returns a :class:`Dataset` of train / validation / test
:class:`~pyrovae.data.splits.Split` s with values in [0, 1].
"""

import numpy as np
import torch

from pyrovae.data.dsprites import DSprites
from pyrovae.data import rivers
from pyrovae.data.binarized_mnist import load_amat_splits
from pyrovae.data.mnist import load_idx_split
from pyrovae.data.rivers import RiversFactors
from pyrovae.data.shapes import ShapesFactors
from pyrovae.data.splits import BINARIZE, Batch, Dataset, Split, as_split, check_data

DATASETS = ("shapes", "rivers", "dsprites", "mnist", "fashion-mnist", "binarized-mnist")
BINARIZE_CHOICES = ("none", "static", "dynamic")
GROUND_TRUTH = ("shapes", "rivers", "dsprites")
SPLIT_SEED_OFFSETS = (0, 10_007, 20_011)  # train, validation and test draws of a ground-truth dataset: seed + offset

__all__ = ["BINARIZE", "BINARIZE_CHOICES", "Batch", "DATASETS", "DSprites", "Dataset", "GROUND_TRUTH", "RiversFactors",
           "SPLIT_SEED_OFFSETS", "ShapesFactors", "Split", "as_split", "balanced_subset", "check_data", "classes",
           "ground_truth", "load_dataset"]


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
                 num_train=None, num_test=None, condition_on=None, num_labelled=None):
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

    ``binarized-mnist``: Larochelle's statically binarized MNIST from its three
    ``.amat`` files in ``data_dir`` (see :mod:`pyrovae.data.binarized_mnist`):
    50,000 training, 10,000 validation (the ``valid`` file) and 10,000 test
    images, already binary, without labels; ``num_train``, ``val_size`` and
    ``num_test`` take the first images of their file. ``binarize`` must be
    ``"none"`` (or None): the binarization was drawn once, by the files' authors.

    ``binarize``: ``"none"`` (or None), ``"static"`` or ``"dynamic"`` (see
    :class:`Split`). ``condition_on="labels"`` passes each datum's class to the
    pair as the keyword field ``y`` (for ``shapes``/``dsprites`` the shape
    factor); ``num_labelled`` then keeps ``y`` for that many training data only,
    the same number from every class (semi-supervised learning: the rest pass
    ``y=None``, see :class:`Split`).
    """
    for arg, value in (("num_train", num_train), ("num_test", num_test), ("val_size", val_size),
                       ("num_labelled", num_labelled)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{arg} must be a positive integer (or None for the default), got {value!r}")
    if binarize not in BINARIZE_CHOICES + (None,):
        raise ValueError(f"binarize must be one of {list(BINARIZE_CHOICES)}, got {binarize!r}")
    if num_labelled is not None and condition_on != "labels":
        raise ValueError("num_labelled keeps labels for part of the data: it needs condition_on='labels'")
    binarize = None if binarize == "none" else binarize
    if name == "rivers":
        data = _river_splits(num_train or 10_000, val_size or 1_000, num_test or 1_000, seed)
    elif name in GROUND_TRUTH:
        data = _factor_splits(name, ground_truth(name, data_dir), num_train or 10_000, val_size or 1_000,
                              num_test or 1_000, seed)
    elif name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    elif name == "binarized-mnist":
        data = _amat_splits(data_dir, binarize, val_size, num_train, num_test)
    else:
        data = _idx_splits(name, data_dir, binarize, val_size, seed, download, num_train, num_test)
    if condition_on is not None:
        data = _conditioned(data, condition_on, num_labelled, seed)
    return data


def _idx_splits(name, data_dir, binarize, val_size, seed, download, num_train, num_test):
    images, labels = load_idx_split(name, "train", data_dir, download)
    test_images, test_labels = load_idx_split(name, "test", data_dir)
    n_val = val_size or 10_000
    if n_val >= len(images):
        raise ValueError(f"val_size {n_val} leaves no training images: {name} has {len(images)}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(12345))
    train_idx, val_idx = order[:-n_val], order[-n_val:]
    if num_train:
        train_idx = train_idx[:num_train]
    if num_test:
        test_images, test_labels = test_images[:num_test], test_labels[:num_test]
    return Dataset(
        name,
        Split(images[train_idx], labels[train_idx], binarize, seed),
        Split(images[val_idx], labels[val_idx], binarize, seed + 1),
        Split(test_images, test_labels, binarize, seed + 2),
    )


def _amat_splits(data_dir, binarize, val_size, num_train, num_test):
    if binarize is not None:
        raise ValueError(f"binarized-mnist is binary already (one static binarization, in its files): binarize must "
                         f"be 'none', got {binarize!r}")
    images = load_amat_splits(data_dir)
    for split, size, arg in (("valid", val_size, "val_size"), ("train", num_train, "num_train"),
                             ("test", num_test, "num_test")):
        if size is not None and size > len(images[split]):
            raise ValueError(f"{arg} {size} exceeds the {len(images[split])} images of the binarized-mnist "
                             f"{split} file")
    return Dataset("binarized-mnist", Split(images["train"][:num_train]), Split(images["valid"][:val_size]),
                   Split(images["test"][:num_test]))


def _factor_splits(name, grid, num_train, num_val, num_test, seed):
    def split(n, s):
        factors, images = grid.sample(n, np.random.default_rng(s))
        return Split(images, torch.from_numpy(factors))

    sizes = (num_train, num_val, num_test)
    return Dataset(name, *(split(n, seed + offset) for n, offset in zip(sizes, SPLIT_SEED_OFFSETS)))


def _river_splits(num_train, num_val, num_test, seed):
    def split(n, s):
        images, factors, _ = rivers.load_split(n, s)
        return Split(torch.from_numpy(images), torch.from_numpy(factors))

    sizes = (num_train, num_val, num_test)
    return Dataset("rivers", *(split(n, seed + offset) for n, offset in zip(sizes, SPLIT_SEED_OFFSETS)))


def classes(split):
    """The class of every datum of a split: its labels, or the first factor (the shape) of factor labels."""
    if split.labels is None:
        raise ValueError("the data have no labels to condition on")
    return split.labels if split.labels.dim() == 1 else split.labels[:, 0]


def _conditioned(data, condition_on, num_labelled, seed):
    if condition_on != "labels":
        raise ValueError(f"condition_on must be 'labels' or None, got {condition_on!r}")

    def with_labels(split, present=None):  # keeps a dynamic binarization (a static one is drawn already)
        y = classes(split).long()
        return Split({"x": split.data, "y": y}, split.labels, "dynamic" if split.binarize == "dynamic" else None,
                     present=None if present is None else {"y": present})

    present = None
    if num_labelled is not None:
        present = balanced_subset(classes(data.train), num_labelled, seed)
    return Dataset(data.name, with_labels(data.train, present), with_labels(data.val), with_labels(data.test))


def balanced_subset(labels, num, seed=0):
    """A boolean mask choosing ``num`` data, as many from every class as there are (seeded)."""
    values = torch.unique(labels)
    if num > len(labels):
        raise ValueError(f"num_labelled {num} exceeds the {len(labels)} training data")
    if num < len(values):
        raise ValueError(f"num_labelled {num} is fewer than the {len(values)} classes: every class needs a label")
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    per_class, extra = divmod(num, len(values))
    for i, c in enumerate(values.tolist()):
        rows = torch.nonzero(labels == c).squeeze(1)
        rows = rows[torch.randperm(len(rows), generator=g)]
        mask[rows[:per_class + (1 if i < extra else 0)]] = True
    return mask
