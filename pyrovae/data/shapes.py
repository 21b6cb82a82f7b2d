"""``shapes``: a procedural dSprites-style dataset with known generative factors.

Each 64x64 binary image shows one shape drawn from five factors on dSprites'
grid (Matthey et al. 2017): shape (square, ellipse, heart) x scale (6 values
in [0.5, 1]) x orientation (40 angles in [0, 2pi)) x position x (32) x
position y (32) = 737,280 images. Images are rendered on demand from factor
indices, so the full grid is never held in memory, and the same factors give
the same image on every machine.
"""

import math

import numpy as np
import torch

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")
IMAGE_SIZE = 64
_BASE_HALF_WIDTH = 9.0  # pixels, at scale 1
_MARGIN = 14.0  # the largest shape's reach from its centre


def factor_values():
    """The value of every factor level: a list of 1-D arrays, one per factor."""
    return [
        np.arange(3, dtype=np.float64),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2 * math.pi, 40, endpoint=False),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    ]


def render(factors):
    """Images ``[N, 1, 64, 64]`` (uint8 in {0, 1}) for integer factor indices ``[N, 5]``."""
    factors = np.asarray(factors, dtype=np.int64)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"factors must have shape [N, {len(FACTOR_SIZES)}], got {list(factors.shape)}")
    if (factors < 0).any() or (factors >= np.array(FACTOR_SIZES)).any():
        raise ValueError(f"factor indices out of range; sizes are {dict(zip(FACTOR_NAMES, FACTOR_SIZES))}")
    out = np.empty((len(factors), 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, len(factors), 1024):
        out[start:start + 1024, 0] = _render_chunk(factors[start:start + 1024])
    return out


def _render_chunk(f):
    values = factor_values()
    values = [v.astype(np.float32) for v in values]
    half = (_BASE_HALF_WIDTH * values[1][f[:, 1]])[:, None, None]
    theta = values[2][f[:, 2]][:, None, None]
    span = IMAGE_SIZE - 2 * _MARGIN
    cx = (_MARGIN + span * values[3][f[:, 3]])[:, None, None]
    cy = (_MARGIN + span * values[4][f[:, 4]])[:, None, None]
    grid = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    dx = grid[None, None, :] - cx
    dy = grid[None, :, None] - cy
    c, s = np.cos(theta), np.sin(theta)
    u = (c * dx + s * dy) / half
    v = (-s * dx + c * dy) / half
    out = np.empty(u.shape, dtype=np.uint8)
    for k, inside in enumerate((_square, _ellipse, _heart)):
        rows = f[:, 0] == k
        out[rows] = inside(u[rows], v[rows])
    return out


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def _ellipse(u, v):
    return u * u + (v / 0.55) ** 2 <= 1.0


def _heart(u, v):
    """The heart curve (a^2 + b^2 - 1)^3 <= a^2 b^3, point down."""
    a, b = 1.1 * u, -1.1 * v + 0.3
    r = a * a + b * b - 1
    return r * r * r - a * a * b * b * b <= 0


class ShapesFactors:
    """The full factor grid of ``shapes``, rendered lazily.

    A ground-truth dataset for the disentanglement metrics: ``sample_factors``
    draws factor indices, ``sample_observations_from_factors`` renders them,
    and ``sample_with_fixed_factor`` draws a batch in which one factor is held
    at one value while the others vary.
    """

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    image_shape = (1, IMAGE_SIZE, IMAGE_SIZE)

    def __len__(self):
        return math.prod(FACTOR_SIZES)

    def __getitem__(self, index):
        factors = np.array(np.unravel_index(index, FACTOR_SIZES)).reshape(1, -1)
        return torch.from_numpy(render(factors)[0]).float()

    @property
    def num_factors(self):
        return len(FACTOR_SIZES)

    def sample_factors(self, num, rng):
        """``num`` factor index vectors drawn uniformly from the grid: ``[num, 5]`` int64."""
        return np.stack([rng.integers(0, n, size=num) for n in FACTOR_SIZES], axis=1)

    def sample_observations_from_factors(self, factors, rng=None):
        """Images ``[N, 1, 64, 64]`` float32 in {0, 1} for factor indices ``[N, 5]``."""
        return torch.from_numpy(render(factors)).float()

    def sample(self, num, rng):
        """``(factors, images)`` for ``num`` uniform draws from the grid."""
        factors = self.sample_factors(num, rng)
        return factors, self.sample_observations_from_factors(factors)

    def sample_with_fixed_factor(self, num, factor, rng, value=None):
        """``num`` draws sharing factor ``factor`` (index) at ``value`` (random when None)."""
        factors = self.sample_factors(num, rng)
        factors[:, factor] = rng.integers(0, FACTOR_SIZES[factor]) if value is None else value
        return factors, self.sample_observations_from_factors(factors)
