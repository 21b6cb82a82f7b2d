"""Statically binarized MNIST: Larochelle's three ``.amat`` files in a folder.

Larochelle & Murray (2011, "The Neural Autoregressive Distribution Estimator",
AISTATS) drew one Bernoulli binarization of MNIST's grey images and split it
into 50,000 training, 10,000 validation and 10,000 test images, published as
``binarized_mnist_train.amat``, ``binarized_mnist_valid.amat`` and
``binarized_mnist_test.amat``: text, one image a line, 784 values 0 or 1
separated by spaces, in raster order. The flow (IAF, Kingma et al. 2016, arXiv
1606.04934) and many VAE papers report on these files. Each may be gzip-compressed
(``.amat.gz``); they carry no labels.
"""

import gzip
import os

import numpy as np
import torch

SPLITS = ("train", "valid", "test")
IMAGE_SHAPE = (1, 28, 28)
PIXELS = 784
HOW_TO_GET = ("copy binarized_mnist_train.amat, binarized_mnist_valid.amat and binarized_mnist_test.amat (or "
              "their .gz) there (Larochelle's files, e.g. from "
              "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/)")


def amat_path(root, split):
    """The file of ``split`` (``train``, ``valid`` or ``test``) in ``root``, ``.amat.gz`` or ``.amat``, or None."""
    stem = os.path.join(root, f"binarized_mnist_{split}.amat")
    for path in (stem + ".gz", stem):
        if os.path.exists(path):
            return path
    return None


def find_files(root):
    """``{split: path}`` of the three files in ``root``; FileNotFoundError naming the missing ones."""
    if not root:
        raise FileNotFoundError(f"binarized-mnist needs the folder of its .amat files (--data-dir); {HOW_TO_GET}")
    paths = {split: amat_path(root, split) for split in SPLITS}
    missing = [f"binarized_mnist_{split}.amat[.gz]" for split, path in paths.items() if path is None]
    if missing:
        raise FileNotFoundError(f"binarized-mnist files not found in {root}: {', '.join(missing)}. To get them: "
                                f"{HOW_TO_GET}")
    return paths


def read_amat(path):
    """The images of one ``.amat`` file (gzip-compressed when the name ends in ``.gz``) as float32 ``[N, 1, 28, 28]``.

    Every non-blank line must hold 784 values, each ``0`` or ``1``; a ValueError
    names the file, the line (from 1) and what is wrong. Blank lines at the end are ignored.
    """
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path} cannot be read as {'a gzip file' if path.endswith('.gz') else 'a file'}: {e}") from e
    lines = raw.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{path} holds no images")
    images = np.empty((len(lines), PIXELS), dtype=np.uint8)
    for i, line in enumerate(lines):
        tokens = line.split()
        if len(tokens) != PIXELS:
            raise ValueError(f"{path} line {i + 1}: {len(tokens)} values, expected {PIXELS} (one 28x28 image a line)")
        digits = b"".join(tokens)
        values = np.frombuffer(digits, dtype=np.uint8) - ord("0") if len(digits) == PIXELS else None
        if values is None or (values > 1).any():
            bad = next(t for t in tokens if t not in (b"0", b"1"))
            raise ValueError(f"{path} line {i + 1}: value {bad.decode(errors='replace')!r} at position "
                             f"{tokens.index(bad) + 1} is not 0 or 1")
        images[i] = values
    return torch.from_numpy(images).float().reshape(len(lines), *IMAGE_SHAPE)


def load_amat_splits(root):
    """``{"train": images, "valid": images, "test": images}`` from the three files in ``root`` (:func:`read_amat`)."""
    return {split: read_amat(path) for split, path in find_files(root).items()}
