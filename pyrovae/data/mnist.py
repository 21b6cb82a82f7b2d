"""MNIST and Fashion-MNIST from the four IDX files in a folder.

Accepted layouts: the four files (``.gz`` or not) directly in ``root``, or
torchvision's ``root/MNIST/raw/`` (``root/FashionMNIST/raw/``). Fashion-MNIST is
also found in Debian's ``/usr/share/datasets/fashion-mnist`` (package
``dataset-fashion-mnist``) when no root is given. With ``download=True``
torchvision fetches the files (for users who are online).
"""

import gzip
import os
import shutil
import tempfile

from torchvision.datasets.mnist import read_image_file, read_label_file

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


def read_idx(path, kind):
    """The tensor of an IDX file of unsigned bytes, gzip-compressed or not, with torchvision's reader.

    ``kind`` is ``"images"`` (``uint8 [N, H, W]``, ``torchvision.datasets.mnist.read_image_file``)
    or ``"labels"`` (``int64 [N]``, ``read_label_file``). torchvision reads plain
    files only, so a ``.gz`` file is decompressed into a temporary folder first.
    ValueError naming the file when it is not such an IDX file (a bad header, another
    dtype, a labels file read as images) or when it is truncated.
    """
    reader = {"images": read_image_file, "labels": read_label_file}[kind]
    try:
        if not path.endswith(".gz"):
            return reader(path)
        with tempfile.TemporaryDirectory() as folder:
            plain = os.path.join(folder, os.path.basename(path)[:-3])
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            return reader(plain)
    except RuntimeError as e:  # the data do not fill the shape in the header
        raise ValueError(f"{path} is truncated (or has bytes past its data): {e}") from e
    except (AssertionError, TypeError, ValueError, EOFError, gzip.BadGzipFile) as e:
        reason = str(e) or "bad header"
        raise ValueError(f"{path} is not an IDX file of {kind} in unsigned bytes ({reason})") from e


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
    images = read_idx(_find(folder, images_stem), "images")
    labels = read_idx(_find(folder, labels_stem), "labels")
    if len(images) != len(labels):
        raise ValueError(f"{_find(folder, images_stem)} holds {len(images)} images but {_find(folder, labels_stem)} "
                         f"{len(labels)} labels: the {split} files do not belong together")
    return images.unsqueeze(1), labels


def _download(name, root):
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}[name]
    for train in (True, False):
        cls(root, train=train, download=True)
    return root
