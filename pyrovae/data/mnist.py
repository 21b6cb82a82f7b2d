"""MNIST and Fashion-MNIST from the four IDX files in a folder.

Accepted layouts: the four files (``.gz`` or not) directly in ``root``, or
torchvision's ``root/MNIST/raw/`` (``root/FashionMNIST/raw/``). Fashion-MNIST is
also found in Debian's ``/usr/share/datasets/fashion-mnist`` (package
``dataset-fashion-mnist``) when no root is given. With ``download=True``
torchvision fetches the files (for users who are online).
"""

import gzip
import os
import struct

import numpy as np
import torch

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_DIR = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
DEFAULT_ROOTS = {"mnist": [], "fashion-mnist": ["/usr/share/datasets/fashion-mnist"]}
HOW_TO_GET = {
    "mnist": "copy train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
             "t10k-labels-idx1-ubyte.gz there, or pass --download to fetch them with torchvision",
    "fashion-mnist": "install Debian's package dataset-fashion-mnist, copy the four Fashion-MNIST IDX files "
                     "there, or pass --download to fetch them with torchvision",
}


def read_idx(path):
    """A NumPy array from an IDX file (gzip-compressed or not)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"{path} is not an IDX file of unsigned bytes")
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def _find(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def find_root(name, root=None):
    """The folder holding the IDX files of ``name``; FileNotFoundError says where it looked."""
    candidates = [root] if root else list(DEFAULT_ROOTS[name])
    looked = []
    for base in candidates:
        for folder in (base, os.path.join(base, TORCHVISION_DIR[name], "raw")):
            looked.append(folder)
            if all(_find(folder, stem) for pair in FILES.values() for stem in pair):
                return folder
    where = ", ".join(looked) if looked else "nowhere (no --data-dir given)"
    raise FileNotFoundError(f"{name} IDX files not found; looked in {where}. To get them: {HOW_TO_GET[name]}.")


def load_idx_split(name, split, root=None, download=False):
    """``(images uint8 [N, 1, 28, 28], labels int64 [N])`` of the ``train`` or ``test`` split."""
    if download:
        root = _download(name, root or ".")
    folder = find_root(name, root)
    images_stem, labels_stem = FILES[split]
    images = read_idx(_find(folder, images_stem))
    labels = read_idx(_find(folder, labels_stem))
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _download(name, root):
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}[name]
    for train in (True, False):
        cls(root, train=train, download=True)
    return root
