r"""``rivers``: cartoon aerial views of a river through grass, drawn by a script whose inputs are known.

The dataset of the rivers example of VAE textbooks: a procedural script draws a
river through a meadow from a handful of inputs, and a VAE trained on the pictures
is asked which of them its latent dimensions recover. Each image is 64x64 RGB
(channel-first, 8-bit values k/255), drawn from these inputs, all independent:

==================  =============================================  =================================================
input               distribution                                   meaning
==================  =============================================  =================================================
``grass``           Uniform[0, 1]                                  grass colour on the straight RGB path
                                                                   ``(1 - grass) * GRASS_DRY + grass * GRASS_LUSH``
                                                                   from dry yellow-brown (0) to lush green (1)
``heading``         Uniform[0, 2 pi)                               direction in which the river enters the picture,
                                                                   radians counter-clockwise from east (right) as
                                                                   seen on the image
``half_width``      Uniform[1.5, 4] pixels                         half the river's width; the pond where it ends
                                                                   has radius ``POND_RATIO * half_width``
``num_trees``       Uniform{0, 1, ..., 6}                          trees: discs of radius ``TREE_RADIUS`` = 3 px on
                                                                   the grass, never touching water or each other
``turns``           8 independent Rademacher variables,            at each of its 8 bends the river turns by
                    ``2 * Bernoulli(1/2) - 1``                     ``TURN_ANGLE`` = 20 degrees, left (+1,
                                                                   counter-clockwise) or right (-1)
==================  =============================================  =================================================

and two summaries derived from them: ``net_curvature`` = left turns - right turns
= ``sum(turns)`` in {-8, -6, ..., 8} (``(net_curvature + 8) / 2`` ~ Binomial(8, 1/2)),
and ``final_heading`` = ``heading + TURN_ANGLE * net_curvature`` (mod 2 pi), the
direction of the river's last stretch. Where the trees stand is a nuisance: random,
but not an input (:func:`tree_centres` recomputes it).

Geometry. Pixel (row i, column j) has its centre at x = j + 0.5, y = i + 0.5 (y
down). The river comes in from outside the picture along ``heading`` to its first
bend T_1; from bend T_k it runs ``STEP`` = 5 px in the direction it has after k
turns to T_{k+1}; after the last bend T_8 one more stretch of 5 px ends it at a
pond E. The path T_1 .. E (8 stretches) is placed with its middle, T_5, at the image
centre, so every bend and the pond lie within 20 px of the centre, inside the
picture: every turn is visible, and the river enters at an edge and ends inside,
so its direction of flow (and with it the sign of the curvature) can be read from
the picture. All turns zero (which :func:`render` accepts but the script never
draws) give a straight river through the centre.

Drawing. Every pixel's distance to the river's polyline and to the pond and tree
centres is computed at once as arrays (no loop over pixels); edges are
anti-aliased with coverage ``clip(radius + 1/2 - distance, 0, 1)``; water is
painted over grass and trees over both.

Determinism. The inputs of image ``index`` of ``seed`` come from a counter-based
hash (SplitMix64 over unsigned 64-bit integers), not from a stateful generator,
so any subset of indices can be drawn in any order; sines and cosines are
polynomials in + and x, not the platform's libm; the drawing uses only correctly
rounded IEEE operations. The same (seed, index) therefore gives the same image,
bit for bit, on every machine.

Ground-truth factors. :class:`RiversFactors` discretises the inputs into the
factor grid the disentanglement metrics of :mod:`pyrovae.evaluate.disentangle`
need: ``grass`` (10 equal bins of [0, 1]), ``heading`` (16 equal bins of
[0, 2 pi)), ``half_width`` (5 equal bins of [1.5, 4]), ``num_trees`` (7 levels)
and ``net_curvature`` (9 levels). The metrics need factors that vary
independently, so the turn vector enters through its summary alone: the factor
``net_curvature`` fixes how many turns go left, and which ones do is a nuisance,
drawn uniformly among the arrangements with that count -- exactly the
conditional law of the turns given their sum. The individual turns stay
available in every image's :class:`RiverInputs`, for questions such as whether a
latent dimension follows the net curvature or a single turn
(:mod:`pyrovae.evaluate.factors`).
"""

import dataclasses
import math

import numpy as np
import torch

IMAGE_SIZE = 64
NUM_TURNS = 8
TURN_ANGLE = math.pi / 9  # 20 degrees
STEP = 5.0  # pixels between bends
HALF_WIDTH_RANGE = (1.5, 4.0)
POND_RATIO = 2.0
MAX_TREES = 6
TREE_RADIUS = 3.0
GRASS_DRY = (0.66, 0.58, 0.30)
GRASS_LUSH = (0.24, 0.62, 0.20)
WATER = (0.20, 0.42, 0.80)
TREE = (0.07, 0.31, 0.09)

INPUT_NAMES = ("grass", "heading", "half_width", "num_trees", "net_curvature", "final_heading",
               *(f"turn_{k + 1}" for k in range(NUM_TURNS)))
FACTOR_NAMES = ("grass", "heading", "half_width", "num_trees", "net_curvature")
FACTOR_SIZES = (10, 16, 5, MAX_TREES + 1, NUM_TURNS + 1)
# the continuous inputs' factor bins: (low, high, number of equal-width bins)
_BINS = {"grass": (0.0, 1.0, 10), "heading": (0.0, 2 * math.pi, 16), "half_width": (*HALF_WIDTH_RANGE, 5)}

_TREE_GAP = 2.0  # pixels of grass between a tree and the water, and at least as much between two trees
_TREE_CANDIDATES = 64  # random spots tried per attempt at placing an image's trees
_TREE_ATTEMPTS = 32
_ENTRY_LENGTH = 96.0  # the incoming stretch starts this far before the first bend, outside the picture
_PIXEL_CENTRES = np.arange(IMAGE_SIZE, dtype=np.float32) + np.float32(0.5)
_CHUNK = 16  # images drawn per vectorised pass: its few [16, 64, 64] float32 arrays stay in the L2 cache


# ---------------------------------------------------------------------------
# counter-based randomness and portable trigonometry

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z):
    """SplitMix64's finaliser, a bijection of uint64 (Steele, Lea & Flood 2014); arrays wrap modulo 2^64."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniforms(keys, start, count):
    """``[N, count]`` uniforms in [0, 1): SplitMix64 outputs ``start .. start+count-1`` of each key's stream."""
    counters = (np.arange(start, start + count, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
    bits = _mix(np.asarray(keys, dtype=np.uint64)[:, None] + counters[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _image_keys(seed, index):
    """The stream key of image ``index`` of ``seed``: distinct indices of one seed get distinct keys."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed!r}")
    index = np.asarray(index)
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer) or (index < 0).any():
        raise ValueError("index must be a 1-D array of non-negative integers, got "
                         f"{index.dtype} of shape {list(index.shape)}")
    return _mix(_mix(np.full(1, seed, dtype=np.uint64)) ^ index.astype(np.uint64))


_HALF_PI_HI = 1.5707963267341256  # pi/2 split into a part with trailing zero bits and the rest (Cody & Waite)
_HALF_PI_LO = 6.077100506506192e-11


def _cos_sin(theta):
    """cos and sin of float64 angles, from + and x alone so every machine rounds them alike.

    The angle is reduced to r in [-pi/4, pi/4] around the nearest multiple q of pi/2,
    and cos r, sin r are their Taylor polynomials to degree 18 and 17 (truncation
    below 1e-16 on that interval); the quadrant q mod 4 swaps and negates them.
    """
    theta = np.asarray(theta, dtype=np.float64)
    q = np.rint(theta / (_HALF_PI_HI + _HALF_PI_LO))
    r = (theta - q * _HALF_PI_HI) - q * _HALF_PI_LO
    r2 = r * r
    cos_r, sin_r = np.ones_like(r), np.ones_like(r)
    for k in range(9, 0, -1):  # Horner: 1 - r^2/(2k-1)(2k) (1 - ...), and the same with (2k)(2k+1)
        cos_r = 1.0 - r2 / ((2 * k - 1) * (2 * k)) * cos_r
        sin_r = 1.0 - r2 / ((2 * k) * (2 * k + 1)) * sin_r
    sin_r = r * sin_r
    quadrant = np.mod(q, 4).astype(np.int64)
    cos = np.choose(quadrant, [cos_r, -sin_r, -cos_r, sin_r])
    sin = np.choose(quadrant, [sin_r, cos_r, -sin_r, -cos_r])
    return cos, sin


# ---------------------------------------------------------------------------
# the script's inputs


@dataclasses.dataclass(frozen=True)
class RiverInputs:
    """The inputs of N pictures (see the module docstring for their laws), as arrays.

    ``grass`` [N] in [0, 1], ``heading`` [N] radians, ``half_width`` [N] pixels,
    ``num_trees`` [N] int in 0..6, ``turns`` [N, 8] int in {-1, +1} (0, no turn, is
    accepted for drawing tests), and ``tree_key`` [N] uint64, the nuisance seed of
    where the trees stand. Indexing (``inputs[rows]``) selects pictures.
    """

    grass: np.ndarray
    heading: np.ndarray
    half_width: np.ndarray
    num_trees: np.ndarray
    turns: np.ndarray
    tree_key: np.ndarray

    def __post_init__(self):
        cast = {"grass": np.float64, "heading": np.float64, "half_width": np.float64, "num_trees": np.int64,
                "turns": np.int64, "tree_key": np.uint64}
        for name, dtype in cast.items():
            object.__setattr__(self, name, np.asarray(getattr(self, name)).astype(dtype, copy=False))
        n = len(self.grass)
        for name in cast:
            value = getattr(self, name)
            shape = (n, NUM_TURNS) if name == "turns" else (n,)
            if value.shape != shape:
                raise ValueError(f"RiverInputs.{name} must have shape {list(shape)} (N = {n} from grass), "
                                 f"got {list(value.shape)}")
        checks = [("grass", (self.grass >= 0) & (self.grass <= 1), "in [0, 1]"),
                  ("heading", np.isfinite(self.heading), "finite"),
                  ("half_width", (self.half_width > 0) & (self.half_width <= 8), "in (0, 8] pixels"),
                  ("num_trees", (self.num_trees >= 0) & (self.num_trees <= MAX_TREES), f"in 0..{MAX_TREES}"),
                  ("turns", np.isin(self.turns, (-1, 0, 1)), "in {-1, 0, +1}")]
        for name, ok, what in checks:
            if not np.all(ok):
                bad = np.asarray(getattr(self, name))[~ok][:3].tolist()
                raise ValueError(f"RiverInputs.{name} must be {what}, got values like {bad}")

    def __len__(self):
        return len(self.grass)

    def __getitem__(self, rows):
        rows = np.atleast_1d(np.arange(len(self))[rows])
        return RiverInputs(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

    @property
    def net_curvature(self):
        """Left turns minus right turns, ``[N]`` int."""
        return self.turns.sum(axis=1)

    @property
    def final_heading(self):
        """The direction of the last stretch, ``heading + TURN_ANGLE * net_curvature`` in [0, 2 pi)."""
        return np.mod(self.heading + TURN_ANGLE * self.net_curvature, 2 * math.pi)

    def table(self):
        """``(values [N, 14] float64, INPUT_NAMES)``: the inputs and summaries, one column each."""
        columns = [self.grass, self.heading, self.half_width, self.num_trees, self.net_curvature,
                   self.final_heading, *self.turns.T]
        return np.stack(columns, axis=1).astype(np.float64), INPUT_NAMES


def draw_inputs(seed, index):
    """The inputs of pictures ``index`` (1-D integer array) of ``seed``: one hash stream per picture."""
    u = _uniforms(_image_keys(seed, index), 0, 4 + NUM_TURNS + 1)
    low, high = HALF_WIDTH_RANGE
    return RiverInputs(
        grass=u[:, 0],
        heading=2 * math.pi * u[:, 1],
        half_width=low + (high - low) * u[:, 2],
        num_trees=np.floor((MAX_TREES + 1) * u[:, 3]),
        turns=np.where(u[:, 4:4 + NUM_TURNS] < 0.5, 1, -1),
        tree_key=_mix(np.floor(u[:, -1] * 2.0**53).astype(np.uint64)),
    )


def grass_colour(grass):
    """RGB ``[N, 3]`` of grass values ``[N]``: the straight path from ``GRASS_DRY`` (0) to ``GRASS_LUSH`` (1)."""
    grass = np.asarray(grass, dtype=np.float64)[:, None]
    return (1 - grass) * np.array(GRASS_DRY) + grass * np.array(GRASS_LUSH)


# ---------------------------------------------------------------------------
# geometry


def river_path(inputs):
    """The river's polyline, ``[N, NUM_TURNS + 2, 2]`` (x, y) pixel coordinates.

    Vertex 0 lies outside the picture on the incoming line, vertices 1..8 are the
    bends T_1..T_8 and the last is the pond's centre E; T_5 sits at the centre.
    """
    turned = np.concatenate([np.zeros((len(inputs), 1), np.int64), np.cumsum(inputs.turns, axis=1)], axis=1)
    cos, sin = _cos_sin(inputs.heading[:, None] + TURN_ANGLE * turned)  # [N, 9]: after 0..8 turns
    direction = np.stack([cos, -sin], axis=-1)  # y points down: counter-clockwise on screen
    bends = np.concatenate([np.zeros((len(inputs), 1, 2)), np.cumsum(STEP * direction[:, 1:], axis=1)], axis=1)
    bends += IMAGE_SIZE / 2 - bends[:, NUM_TURNS // 2:NUM_TURNS // 2 + 1]
    entry = bends[:, :1] - _ENTRY_LENGTH * direction[:, :1]
    return np.concatenate([entry, bends], axis=1)


def _distance_to_polyline(points, vertices):
    """``[N, M]`` distances of ``points`` ``[N, M, 2]`` to the polylines ``vertices`` ``[N, V, 2]`` (float64)."""
    a = vertices[:, None, :-1]
    e = vertices[:, None, 1:] - a
    rel = points[:, :, None] - a  # [N, M, V-1, 2]
    s = np.clip((rel * e).sum(-1) / (e * e).sum(-1), 0.0, 1.0)
    gap = rel - s[..., None] * e
    return np.sqrt((gap * gap).sum(-1)).min(axis=2)


def tree_centres(inputs, vertices=None):
    """Where the trees stand: ``[N, MAX_TREES, 2]`` (x, y), NaN rows after the first ``num_trees``.

    Each attempt draws 64 spots uniformly on the part of the picture where a whole
    tree fits, keeps those at least ``_TREE_GAP`` px of grass away from the river
    and the pond, and takes trees one at a time: the first free spot, after which
    spots closer than one tree width plus the gap to it are no longer free. A
    picture whose trees do not all fit tries again with the next 64 spots of its
    ``tree_key`` stream (rarely needed: the river covers well under half the picture).
    """
    vertices = river_path(inputs) if vertices is None else vertices
    centres = np.full((len(inputs), MAX_TREES, 2), np.nan)
    pending = np.flatnonzero(inputs.num_trees > 0)
    for attempt in range(_TREE_ATTEMPTS):
        if len(pending) == 0:
            return centres
        placed, ok = _place_trees(vertices[pending], inputs.half_width[pending], inputs.num_trees[pending],
                                  inputs.tree_key[pending], attempt)
        centres[pending[ok]] = placed[ok]
        pending = pending[~ok]
    if len(pending):
        raise RuntimeError(f"could not place the trees of {len(pending)} picture(s) in {_TREE_ATTEMPTS} attempts")
    return centres


def _place_trees(vertices, half_width, num_trees, keys, attempt):
    n, m = len(keys), _TREE_CANDIDATES
    low, high = TREE_RADIUS + 1, IMAGE_SIZE - TREE_RADIUS - 1
    spots = low + (high - low) * _uniforms(keys, 2 * m * attempt, 2 * m).reshape(n, m, 2)
    pond = np.sqrt(((spots - vertices[:, None, -1]) ** 2).sum(-1))
    free = ((_distance_to_polyline(spots, vertices) >= half_width[:, None] + TREE_RADIUS + _TREE_GAP)
            & (pond >= POND_RATIO * half_width[:, None] + TREE_RADIUS + _TREE_GAP))
    placed = np.full((n, MAX_TREES, 2), np.nan)
    ok = np.ones(n, dtype=bool)
    rows = np.arange(n)
    for t in range(MAX_TREES):
        needed = t < num_trees
        first = free.argmax(axis=1)
        found = free[rows, first]
        ok &= found | ~needed
        take = needed & found
        placed[take, t] = spots[rows[take], first[take]]
        apart = np.sqrt(((spots - spots[rows, first][:, None]) ** 2).sum(-1)) >= 2 * TREE_RADIUS + _TREE_GAP
        free &= apart | ~take[:, None]
    return placed, ok


# ---------------------------------------------------------------------------
# drawing


def render(inputs):
    """Pictures ``[N, 3, 64, 64]`` uint8 (the value k stands for k/255) of :class:`RiverInputs`."""
    if not isinstance(inputs, RiverInputs):
        raise TypeError(f"render takes RiverInputs, got {type(inputs).__name__}")
    vertices = river_path(inputs)
    trees = tree_centres(inputs, vertices)
    colours = grass_colour(inputs.grass)
    out = np.empty((len(inputs), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, len(inputs), _CHUNK):
        rows = slice(start, start + _CHUNK)
        out[rows] = _draw(vertices[rows], inputs.half_width[rows], trees[rows], colours[rows])
    return out


def _squared_distance_to_points(centres):
    """``[N, 64, 64]`` squared distance of every pixel centre to the nearest of ``centres`` ``[N, P, 2]``."""
    best = None
    for p in range(centres.shape[1]):
        dx = ((_PIXEL_CENTRES[None, :] - centres[:, p, :1]) ** 2).astype(np.float32)
        dy = ((_PIXEL_CENTRES[None, :] - centres[:, p, 1:]) ** 2).astype(np.float32)
        d2 = dy[:, :, None] + dx[:, None, :]
        best = d2 if best is None else np.minimum(best, d2, out=best)
    return best


def _squared_distance_to_polyline(vertices):
    r"""``[N, 64, 64]`` squared distance of every pixel centre p to the polyline, segment by segment.

    For the segment a -> a + e the nearest point is a + s e with s = clip(t, 0, 1)
    and t = (p - a).e / |e|^2, an outer sum of a term per column and a term per row.
    """
    n = len(vertices)
    best = np.full((n, IMAGE_SIZE, IMAGE_SIZE), np.inf, dtype=np.float32)
    s, gx, gy = (np.empty_like(best) for _ in range(3))
    for k in range(vertices.shape[1] - 1):
        a, e = vertices[:, k], vertices[:, k + 1] - vertices[:, k]
        length2 = (e * e).sum(-1, keepdims=True)
        rel_x = _PIXEL_CENTRES[None, :] - a[:, :1]  # [N, 64] float64
        rel_y = _PIXEL_CENTRES[None, :] - a[:, 1:]
        t_x = (rel_x * (e[:, :1] / length2)).astype(np.float32)
        t_y = (rel_y * (e[:, 1:] / length2)).astype(np.float32)
        np.add(t_y[:, :, None], t_x[:, None, :], out=s)
        np.clip(s, 0, 1, out=s)
        ex, ey = (c.astype(np.float32)[:, :, None] for c in (e[:, :1], e[:, 1:]))
        np.multiply(s, ex, out=gx)
        np.subtract(rel_x.astype(np.float32)[:, None, :], gx, out=gx)
        np.multiply(s, ey, out=gy)
        np.subtract(rel_y.astype(np.float32)[:, :, None], gy, out=gy)
        np.multiply(gx, gx, out=gx)
        np.multiply(gy, gy, out=gy)
        np.add(gx, gy, out=gx)
        np.minimum(best, gx, out=best)
    return best


def _coverage(squared_distance, radius):
    """Anti-aliased coverage ``clip(radius + 1/2 - distance, 0, 1)``; ``radius`` ``[N]``."""
    d = np.sqrt(squared_distance, out=squared_distance)
    r = (np.asarray(radius, dtype=np.float64) + 0.5).astype(np.float32)[:, None, None]
    np.subtract(r, d, out=d)
    return np.clip(d, 0, 1, out=d)


def _draw(vertices, half_width, trees, grass):
    water = np.maximum(_coverage(_squared_distance_to_polyline(vertices), half_width),
                       _coverage(_squared_distance_to_points(vertices[:, -1:]), POND_RATIO * half_width))
    absent = np.isnan(trees).any(-1, keepdims=True)
    trees = np.where(absent, -4.0 * IMAGE_SIZE, trees)  # far away: no coverage
    tree = _coverage(_squared_distance_to_points(trees), np.full(len(trees), TREE_RADIUS))
    # colour = (grass (1 - water) + WATER water) (1 - tree) + TREE tree: a full coverage gives the exact colour
    dry, bare = 1 - water, 1 - tree
    out = np.empty((len(vertices), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for c in range(3):
        colour = dry * grass[:, c].astype(np.float32)[:, None, None]
        colour += water * np.float32(WATER[c])
        colour *= bare
        colour += tree * np.float32(TREE[c])
        colour *= np.float32(255)
        out[:, c] = np.rint(colour)
    return out


# ---------------------------------------------------------------------------
# the dataset and its factor grid


def factor_indices(inputs):
    """The factor-grid cell ``[N, 5]`` int64 of each picture's inputs (bins in the module docstring)."""
    if np.any(inputs.turns == 0):
        raise ValueError("factor_indices needs turns in {-1, +1}: net curvature levels count left turns")
    value = {"grass": inputs.grass, "heading": np.mod(inputs.heading, 2 * math.pi), "half_width": inputs.half_width}
    columns = [np.clip(np.floor((value[name] - low) / (high - low) * bins), 0, bins - 1)
               for name, (low, high, bins) in _BINS.items()]
    columns += [inputs.num_trees, (inputs.net_curvature + NUM_TURNS) // 2]
    return np.stack(columns, axis=1).astype(np.int64)


def load_split(num, seed):
    """Pictures 0 .. num-1 of ``seed``: ``(images [num, 3, 64, 64] uint8, factor indices [num, 5], inputs)``."""
    inputs = draw_inputs(seed, np.arange(num))
    return render(inputs), factor_indices(inputs), inputs


def factor_values():
    """The value of every factor level: bin centres for the continuous inputs, then trees and net curvature."""
    centres = [low + (high - low) * (np.arange(bins) + 0.5) / bins for low, high, bins in _BINS.values()]
    return [*centres, np.arange(MAX_TREES + 1, dtype=np.float64),
            np.arange(-NUM_TURNS, NUM_TURNS + 1, 2, dtype=np.float64)]


_GRID_SALT = np.uint64(0x5249564552535F47)  # keys of the grid pictures, apart from any (seed, index) key


class RiversFactors:
    """The factor grid of ``rivers`` (10 x 16 x 5 x 7 x 9 cells), rendered on demand.

    The ground-truth interface of :class:`pyrovae.data.shapes.ShapesFactors`.
    ``sample_factors`` draws cells with the dataset's own frequencies: uniform
    over the bins of grass, heading, width and tree count, and Binomial(8, 1/2)
    left turns for ``net_curvature`` (the extreme bends are rare, as in the data).

    ``sample_observations_from_factors(factors)`` without ``rng`` -- the way the
    metrics call it -- draws one fixed picture per cell: the continuous inputs at
    their bin centres, the turns and trees from a hash of the cell. With ``rng``
    it draws the script's inputs given the cell: continuous inputs uniform in
    their bins, the left turns' positions uniform, the trees anywhere, so
    ``sample(num, rng)`` draws from the dataset's own distribution.
    """

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    image_shape = (3, IMAGE_SIZE, IMAGE_SIZE)

    @property
    def num_factors(self):
        return len(FACTOR_SIZES)

    def __len__(self):
        return math.prod(FACTOR_SIZES)

    def __getitem__(self, index):
        """The fixed picture of grid cell ``index`` (row-major over the factors), ``[3, 64, 64]`` float32."""
        factors = np.array(np.unravel_index(index, FACTOR_SIZES)).reshape(1, -1)
        return self.sample_observations_from_factors(factors)[0]

    def factor_values(self):
        """The value of every factor level (see :func:`factor_values`)."""
        return factor_values()

    def sample_factors(self, num, rng):
        """``num`` grid cells ``[num, 5]`` int64, drawn as the dataset draws its inputs."""
        return np.stack([self._draw_factor(k, num, rng) for k in range(self.num_factors)], axis=1)

    def _draw_factor(self, k, num, rng):
        if FACTOR_NAMES[k] == "net_curvature":
            return rng.binomial(NUM_TURNS, 0.5, size=num).astype(np.int64)
        return rng.integers(0, FACTOR_SIZES[k], size=num)

    def inputs_from_factors(self, factors, rng=None):
        """:class:`RiverInputs` for grid cells ``[N, 5]``: fixed per cell when ``rng`` is None, else drawn."""
        factors = np.asarray(factors, dtype=np.int64)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(f"factors must have shape [N, {self.num_factors}], got {list(factors.shape)}")
        if (factors < 0).any() or (factors >= np.array(FACTOR_SIZES)).any():
            raise ValueError(f"factor indices out of range; sizes are {dict(zip(FACTOR_NAMES, FACTOR_SIZES))}")
        n = len(factors)
        if rng is None:
            keys = _mix(np.ravel_multi_index(factors.T, FACTOR_SIZES).astype(np.uint64) ^ _GRID_SALT)
            within = np.full((n, 3), 0.5)
            order = _uniforms(keys, 0, NUM_TURNS)
            tree_key = _mix(keys)
        else:
            within = rng.random((n, 3))
            order = rng.random((n, NUM_TURNS))
            tree_key = rng.integers(0, 2**64, size=n, dtype=np.uint64)
        value = {name: low + (high - low) * (factors[:, k] + within[:, k]) / bins
                 for k, (name, (low, high, bins)) in enumerate(_BINS.items())}
        rank = order.argsort(axis=1).argsort(axis=1)  # a uniform random order of the bends
        turns = np.where(rank < factors[:, 4:5], 1, -1)  # the first `left` bends of that order turn left
        return RiverInputs(grass=value["grass"], heading=value["heading"], half_width=value["half_width"],
                           num_trees=factors[:, 3], turns=turns, tree_key=tree_key)

    def sample_observations_from_factors(self, factors, rng=None):
        """Pictures ``[N, 3, 64, 64]`` float32 in [0, 1] (values k/255) of grid cells ``[N, 5]``."""
        images = render(self.inputs_from_factors(factors, rng))
        return torch.from_numpy(images).float().div_(255.0)

    def sample(self, num, rng):
        """``(factors, images)``: ``num`` pictures from the dataset's distribution, with their cells."""
        factors = self.sample_factors(num, rng)
        return factors, self.sample_observations_from_factors(factors, rng)

    def sample_with_fixed_factor(self, num, factor, rng, value=None):
        """``num`` pictures sharing factor ``factor`` (index) at level ``value`` (drawn like the data when None)."""
        if not 0 <= factor < self.num_factors:
            raise ValueError(f"factor must be an index in 0..{self.num_factors - 1}, got {factor}")
        factors = self.sample_factors(num, rng)
        factors[:, factor] = self._draw_factor(factor, 1, rng)[0] if value is None else value
        return factors, self.sample_observations_from_factors(factors, rng)
