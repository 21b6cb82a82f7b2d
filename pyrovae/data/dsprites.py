"""dSprites (Matthey et al. 2017) from its published ``.npz`` file, with factor-conditioned sampling.

The file ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` holds ``imgs``
(``[N, 64, 64]`` uint8 in {0, 1}), ``latents_values`` and ``latents_classes``
(``[N, 6]``: color, shape, scale, orientation, position x, position y). The full
file is the grid 1 x 3 x 6 x 40 x 32 x 32 = 737,280 images. pyrovae cannot
download it; pass its path (or the folder that holds it).

:class:`DSprites` has the ground-truth interface of
:class:`pyrovae.data.shapes.ShapesFactors` (``factor_sizes``,
``sample_factors``, ``sample_observations_from_factors``, ``sample``,
``sample_with_fixed_factor``), so the disentanglement metrics and
:func:`pyrovae.data.load_dataset` take either. As in disentanglement_lib,
factors with a single value (color) are not factors of variation and are left
out of the factor list.
"""

import math
import os
import zipfile

import numpy as np
import torch

FILE_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
COLUMN_NAMES = ("color", "shape", "scale", "orientation", "pos_x", "pos_y")
KEYS = ("imgs", "latents_values", "latents_classes")
IMAGE_SIZE = 64
_ROWS_PER_READ = 16_384


def find_file(path):
    """The dSprites ``.npz`` at ``path``: the file itself, or ``FILE_NAME`` inside a folder."""
    if path is None:
        raise FileNotFoundError(f"dSprites cannot be downloaded here: pass the path of {FILE_NAME} "
                                "(or of its folder) as data_dir / --data-dir")
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, FILE_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no dSprites file at {path} (expected {FILE_NAME} from "
                                "https://github.com/deepmind/dsprites-dataset)")
    return path


class DSprites:
    """The dSprites factor grid from its ``.npz`` file, images held as packed bits.

    Loading streams ``imgs`` out of the archive in chunks and keeps each binary
    image as 512 bytes (``np.packbits``), 377 MB for the full file instead of
    3 GB; images are unpacked only when drawn. ``latents_classes`` gives every
    image its grid position; the file must hold every combination of the
    factors' levels exactly once (the published file does, and so does any
    sub-grid in the same format). Raises ``FileNotFoundError`` for a missing
    file and ``ValueError`` naming a missing key or a malformed array.
    """

    image_shape = (1, IMAGE_SIZE, IMAGE_SIZE)

    def __init__(self, path):
        self.path = find_file(path)
        try:
            archive = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{self.path} is not a readable .npz file: {e}") from None
        with archive:
            missing = [k for k in KEYS if k not in archive.files]
            if missing:
                raise ValueError(f"{self.path} has no key(s) {missing}; a dSprites .npz holds {list(KEYS)} "
                                 f"(found {sorted(archive.files)})")
            classes = self._table(archive, "latents_classes")
            values = self._table(archive, "latents_values")
            if values.shape != classes.shape:
                raise ValueError(f"{self.path}: latents_values has shape {list(values.shape)} but latents_classes "
                                 f"has {list(classes.shape)}")
            self._packed = self._read_images(archive, len(classes))
        self._index_grid(classes, values)

    def _table(self, archive, key):
        table = archive[key]
        if table.ndim != 2 or table.shape[1] != len(COLUMN_NAMES):
            raise ValueError(f"{self.path}: {key} must have shape [N, {len(COLUMN_NAMES)}] "
                             f"({', '.join(COLUMN_NAMES)}), got {list(table.shape)}")
        return table

    def _read_images(self, archive, num):
        """``imgs`` as packed bits ``[num, 512]``, read from the archive member in chunks."""
        with archive.zip.open("imgs.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(f)
            if tuple(shape) != (num, IMAGE_SIZE, IMAGE_SIZE) or dtype != np.uint8 or fortran_order:
                raise ValueError(f"{self.path}: imgs must be uint8 [N, {IMAGE_SIZE}, {IMAGE_SIZE}] (C order) with N = "
                                 f"{num} rows as in latents_classes, got {dtype} {list(shape)}")
            packed = np.empty((num, IMAGE_SIZE * IMAGE_SIZE // 8), dtype=np.uint8)
            pixels = IMAGE_SIZE * IMAGE_SIZE
            for start in range(0, num, _ROWS_PER_READ):
                rows = min(_ROWS_PER_READ, num - start)
                chunk = np.frombuffer(f.read(rows * pixels), dtype=np.uint8)
                if chunk.size != rows * pixels:
                    raise ValueError(f"{self.path}: imgs is truncated")
                if chunk.max(initial=0) > 1:
                    raise ValueError(f"{self.path}: imgs must be binary (0/1) as in the published dSprites")
                packed[start:start + rows] = np.packbits(chunk.reshape(rows, pixels), axis=1)
        return packed

    def _index_grid(self, classes, values):
        levels, codes = [], []
        for k in range(classes.shape[1]):
            level, code = np.unique(classes[:, k], return_inverse=True)
            levels.append(level)
            codes.append(code)
        varying = [k for k, level in enumerate(levels) if len(level) > 1]
        if not varying:
            raise ValueError(f"{self.path}: no factor takes more than one value in latents_classes")
        self.factor_names = tuple(COLUMN_NAMES[k] for k in varying)
        self.factor_sizes = tuple(len(levels[k]) for k in varying)
        first_row = [np.unique(codes[k], return_index=True)[1] for k in varying]
        self._values = [values[rows, k] for rows, k in zip(first_row, varying)]
        grid = math.prod(self.factor_sizes)
        if len(classes) != grid:
            raise ValueError(f"{self.path}: {len(classes)} images for a grid of {grid} factor combinations "
                             f"({dict(zip(self.factor_names, self.factor_sizes))}); factor-conditioned sampling "
                             "needs each combination exactly once")
        flat = np.ravel_multi_index([codes[k] for k in varying], self.factor_sizes)
        row_of = np.full(grid, -1, dtype=np.int64)
        row_of[flat] = np.arange(len(classes))
        if (row_of < 0).any():
            raise ValueError(f"{self.path}: latents_classes repeats some factor combinations and misses others")
        self._row_of = row_of

    # -- the ground-truth interface ------------------------------------------
    @property
    def num_factors(self):
        return len(self.factor_sizes)

    def __len__(self):
        return len(self._packed)

    def __getitem__(self, index):
        """Image ``index`` of the file, ``[1, 64, 64]`` float32 in {0, 1}."""
        return self._images(np.array([index]))[0]

    def factor_values(self):
        """The value (``latents_values``) of every level of every factor: a list of 1-D arrays."""
        return [v.copy() for v in self._values]

    def sample_factors(self, num, rng):
        """``num`` factor index vectors drawn uniformly from the grid: ``[num, K]`` int64."""
        return np.stack([rng.integers(0, n, size=num) for n in self.factor_sizes], axis=1)

    def sample_observations_from_factors(self, factors, rng=None):
        """Images ``[N, 1, 64, 64]`` float32 in {0, 1} for factor indices ``[N, K]`` (0-based level indices)."""
        factors = np.asarray(factors, dtype=np.int64)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(f"factors must have shape [N, {self.num_factors}], got {list(factors.shape)}")
        if (factors < 0).any() or (factors >= np.array(self.factor_sizes)).any():
            raise ValueError(f"factor indices out of range; sizes are {dict(zip(self.factor_names, self.factor_sizes))}")
        return self._images(self._row_of[np.ravel_multi_index(factors.T, self.factor_sizes)])

    def sample(self, num, rng):
        """``(factors, images)`` for ``num`` uniform draws from the grid."""
        factors = self.sample_factors(num, rng)
        return factors, self.sample_observations_from_factors(factors)

    def sample_with_fixed_factor(self, num, factor, rng, value=None):
        """``num`` draws sharing factor ``factor`` (index) at ``value`` (random when None)."""
        factors = self.sample_factors(num, rng)
        factors[:, factor] = rng.integers(0, self.factor_sizes[factor]) if value is None else value
        return factors, self.sample_observations_from_factors(factors)

    def _images(self, rows):
        bits = np.unpackbits(self._packed[rows], axis=1, count=IMAGE_SIZE * IMAGE_SIZE)
        return torch.from_numpy(bits.reshape(len(rows), *self.image_shape)).float()
