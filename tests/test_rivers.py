"""The ``rivers`` dataset: deterministic pictures that show exactly the inputs they were drawn from.

Pixel checks compare the rendered colours with the geometry (:func:`river_path`,
:func:`tree_centres`) and the colour constants: a pixel farther than half a pixel
beyond every edge is not anti-aliased, so its value is the exact 8-bit rounding of
one colour.
"""

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from pyrovae.data import SPLIT_SEED_OFFSETS, RiversFactors, ground_truth, load_dataset
from pyrovae.data import rivers as R
from pyrovae.evaluate import disentangle as D

ROWS, COLS = np.mgrid[0:64, 0:64]
PIXELS = np.stack([COLS + 0.5, ROWS + 0.5], axis=-1).reshape(-1, 2)  # (x, y) of every pixel centre


def distances(inputs, i):
    """Distances ``[64, 64]`` of every pixel of picture i to the polyline, the pond's centre and the nearest tree."""
    vertices = R.river_path(inputs[i])
    river = R._distance_to_polyline(PIXELS[None], vertices)[0].reshape(64, 64)
    pond = np.hypot(*(PIXELS - vertices[0, -1]).T).reshape(64, 64)
    centres = R.tree_centres(inputs[i])[0]
    centres = centres[~np.isnan(centres).any(1)]
    tree = np.full((64, 64), np.inf)
    for c in centres:
        tree = np.minimum(tree, np.hypot(*(PIXELS - c).T).reshape(64, 64))
    return river, pond, tree


def straight(heading, half_width=3.0, grass=0.5, turns=None, num_trees=0):
    turns = np.zeros((1, R.NUM_TURNS)) if turns is None else np.asarray(turns).reshape(1, -1)
    return R.RiverInputs(grass=[grass], heading=[heading], half_width=[half_width], num_trees=[num_trees],
                         turns=turns, tree_key=[7])


def tree_mask(image, grass):
    """Pixels nearer the tree colour than the grass and the water colour (``image`` [3, 64, 64] uint8)."""
    pixel = image.transpose(1, 2, 0) / 255.0
    near = {name: np.linalg.norm(pixel - np.asarray(colour), axis=-1)
            for name, colour in (("tree", R.TREE), ("grass", grass), ("water", R.WATER))}
    return (near["tree"] < near["grass"]) & (near["tree"] < near["water"])


# ---------------------------------------------------------------------------
# determinism


def test_a_picture_depends_on_its_seed_and_index_only():
    everything = R.draw_inputs(3, np.arange(40))
    some = R.draw_inputs(3, np.array([31, 2, 17]))
    for name in ("grass", "heading", "half_width", "num_trees", "turns", "tree_key"):
        assert np.array_equal(getattr(some, name), getattr(everything, name)[[31, 2, 17]]), name
    assert np.array_equal(R.render(some), R.render(everything)[[31, 2, 17]])
    assert not np.array_equal(R.draw_inputs(4, np.arange(40)).grass, everything.grass)


def test_the_same_pictures_on_every_machine():
    # The digest of pictures 0..15 of seed 0, as drawn on the x86-64 machine that wrote this test; the inputs
    # are integer hashing and the drawing correctly rounded IEEE arithmetic, so any machine draws the same bytes.
    images = R.render(R.draw_inputs(0, np.arange(16)))
    assert hashlib.sha256(images.tobytes()).hexdigest() == GOLDEN_DIGEST


GOLDEN_DIGEST = "d0110d4eccca15d56c26f263d0a985180828a134a7148c99bfe8d31352441679"


def test_portable_cos_sin_match_numpy():
    theta = np.random.default_rng(0).uniform(-50, 50, size=100_000)
    cos, sin = R._cos_sin(theta)
    assert np.abs(cos - np.cos(theta)).max() < 5e-16 and np.abs(sin - np.sin(theta)).max() < 5e-16


def test_inputs_follow_their_documented_laws():
    inputs = R.draw_inputs(0, np.arange(20_000))
    n = len(inputs)
    for name, low, high in (("grass", 0, 1), ("heading", 0, 2 * math.pi), ("half_width", 1.5, 4.0)):
        u = (getattr(inputs, name) - low) / (high - low)
        assert 0 <= u.min() and u.max() < 1, name
        assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n), name  # a uniform's mean, 5 standard errors
    counts = np.bincount(inputs.num_trees, minlength=7)
    assert len(counts) == 7 and np.all(np.abs(counts / n - 1 / 7) < 5 * math.sqrt(1 / 7 * 6 / 7 / n))
    assert set(np.unique(inputs.turns)) == {-1, 1}
    assert np.abs((inputs.turns == 1).mean(0) - 0.5).max() < 5 * math.sqrt(0.25 / n)
    assert abs(np.corrcoef(inputs.turns[:, 0], inputs.turns[:, 1])[0, 1]) < 5 / math.sqrt(n)


# ---------------------------------------------------------------------------
# the pictures show their inputs


def test_grass_water_and_trees_have_their_colours():
    inputs = R.draw_inputs(5, np.arange(40))
    images = R.render(inputs)
    grass = R.grass_colour(inputs.grass)
    for i in range(len(inputs)):
        river, pond, tree = distances(inputs, i)
        far = (river > inputs.half_width[i] + 1) & (pond > 2 * inputs.half_width[i] + 1) & (tree > R.TREE_RADIUS + 1)
        pixels = images[i][:, far] / 255.0
        # every grass pixel is the 8-bit rounding of the grass colour, so their mean is within half a level
        assert np.abs(pixels.mean(axis=1) - grass[i]).max() <= 0.5 / 255 + 1e-9
        assert np.ptp(pixels, axis=1).max() == 0
        deep = (river < inputs.half_width[i] - 0.5) & (tree > R.TREE_RADIUS + 1)
        assert deep.any() and np.array_equal(np.unique(images[i][:, deep], axis=1)[:, 0],
                                              np.rint(np.float32(R.WATER) * 255))
        if inputs.num_trees[i]:
            assert np.all(images[i][:, tree < R.TREE_RADIUS - 0.5] == np.rint(np.float32(R.TREE) * 255)[:, None])


def test_dry_and_lush_grass_are_the_two_ends_of_the_path():
    assert np.allclose(R.grass_colour([0.0, 1.0]), [R.GRASS_DRY, R.GRASS_LUSH])
    lush, dry = (R.render(straight(0.3, grass=g))[0, :, 0, 0] for g in (1.0, 0.0))
    assert lush[1] > lush[0] and dry[0] > dry[1] > dry[2]  # green over red; yellow-brown: red > green > blue


def test_the_tree_count_is_the_number_of_tree_blobs():
    inputs = R.draw_inputs(11, np.arange(300))
    images = R.render(inputs)
    grass = R.grass_colour(inputs.grass)
    counts = [ndimage.label(tree_mask(images[i], grass[i]))[1] for i in range(len(inputs))]
    assert np.array_equal(counts, inputs.num_trees)
    assert set(inputs.num_trees) == set(range(R.MAX_TREES + 1))


def test_trees_stand_apart_on_dry_land_inside_the_picture():
    inputs = R.draw_inputs(2, np.arange(500))
    centres = R.tree_centres(inputs)
    vertices = R.river_path(inputs)
    present = ~np.isnan(centres).any(-1)
    assert np.array_equal(present.sum(1), inputs.num_trees)
    assert np.all(present[:, :-1] >= present[:, 1:])  # the trees come first
    filled = np.where(present[..., None], centres, 32.0)
    water = R._distance_to_polyline(filled, vertices)
    pond = np.hypot(*(filled - vertices[:, None, -1]).transpose(2, 0, 1))
    w = inputs.half_width[:, None]
    assert np.all((water >= w + R.TREE_RADIUS + R._TREE_GAP) | ~present)
    assert np.all((pond >= 2 * w + R.TREE_RADIUS + R._TREE_GAP) | ~present)
    assert np.all((filled >= R.TREE_RADIUS + 1) & (filled <= 64 - R.TREE_RADIUS - 1))
    gaps = np.hypot(*(filled[:, :, None] - filled[:, None, :]).transpose(3, 0, 1, 2))
    both = present[:, :, None] & present[:, None, :] & ~np.eye(R.MAX_TREES, dtype=bool)
    assert np.all((gaps >= 2 * R.TREE_RADIUS + R._TREE_GAP) | ~both)


def test_trees_that_do_not_fit_are_placed_again(monkeypatch):
    # With 12 candidate spots, 40% of the attempts fail to seat 6 trees; the later attempts must finish the job.
    monkeypatch.setattr(R, "_TREE_CANDIDATES", 12)
    factors = RiversFactors().sample_factors(200, np.random.default_rng(0))
    factors[:, 2:4] = [4, 6]  # the widest rivers and six trees
    inputs = RiversFactors().inputs_from_factors(factors, np.random.default_rng(1))
    vertices = R.river_path(inputs)
    _, ok = R._place_trees(vertices, inputs.half_width, inputs.num_trees, inputs.tree_key, 0)
    assert (~ok).sum() > 40
    centres = R.tree_centres(inputs, vertices)
    assert np.all(~np.isnan(centres).any(-1).any(-1))
    images = R.render(inputs)
    grass = R.grass_colour(inputs.grass)
    assert all(ndimage.label(tree_mask(images[i], grass[i]))[1] == 6 for i in range(len(inputs)))


@pytest.mark.parametrize("heading", [0.0, 0.4, 1.9, 3.5, 5.6])
def test_no_turns_draw_a_straight_river_along_the_heading(heading):
    inputs = straight(heading)
    image = R.render(inputs)[0] / 255.0
    pond = np.hypot(*(PIXELS - R.river_path(inputs)[0, -1]).T).reshape(64, 64)
    water = (np.linalg.norm(image.transpose(1, 2, 0) - R.WATER, axis=-1) < 0.1) & (pond > 2 * 3.0 + 1)
    points = PIXELS[water.reshape(-1)]
    centred = points - points.mean(0)
    _, spread, axes = np.linalg.svd(centred, full_matrices=False)
    direction = axes[0]
    along = np.array([math.cos(heading), -math.sin(heading)])
    assert abs(abs(direction @ along) - 1) < 1e-4  # the river's axis is the heading (up to sign)
    across = centred @ np.array([-along[1], along[0]])
    offset = (points.mean(0) - 32) @ np.array([-along[1], along[0]])
    assert np.abs(across + offset).max() <= 3.0 + 0.5  # every water pixel within a half-width of the centre line


def test_summaries_follow_the_turns():
    inputs = R.draw_inputs(8, np.arange(500))
    left, right = (inputs.turns == 1).sum(1), (inputs.turns == -1).sum(1)
    assert np.array_equal(inputs.net_curvature, left - right)
    expected = np.mod(inputs.heading + math.radians(20) * (left - right), 2 * math.pi)
    assert np.allclose(inputs.final_heading, expected)
    vertices = R.river_path(inputs)
    steps = np.diff(vertices, axis=1)
    assert np.allclose(np.hypot(*steps[:, 1:].transpose(2, 0, 1)), R.STEP)
    last = steps[:, -1] / R.STEP
    assert np.allclose(last, np.stack([np.cos(inputs.final_heading), -np.sin(inputs.final_heading)], 1))
    assert np.allclose(vertices[:, 1 + R.NUM_TURNS // 2], 32.0)
    # each bend turns the direction by 20 degrees: counter-clockwise on screen (y down) for a left turn
    cross = steps[:, :-1, 0] * -steps[:, 1:, 1] - -steps[:, :-1, 1] * steps[:, 1:, 0]
    norms = np.hypot(*steps[:, :-1].transpose(2, 0, 1)) * R.STEP
    assert np.allclose(cross / norms, np.sin(math.radians(20)) * inputs.turns)


def test_left_and_right_bends_are_mirror_images():
    # Reflecting the picture top to bottom maps heading h to -h and every left turn to a right turn.
    turns = np.array([1, 1, -1, 1, 1, 1, -1, 1])
    for heading in (0.0, 0.7, 2.0):
        upper = R.render(straight(heading, turns=turns))[0].astype(int)
        lower = R.render(straight(2 * math.pi - heading, turns=-turns))[0].astype(int)
        difference = np.abs(upper - lower[:, ::-1, :])
        assert difference.max() <= 1 and difference.mean() < 0.01
        assert not np.array_equal(upper, lower)


def test_all_left_turns_bend_the_river_left():
    # Entering eastwards and turning left 8 times (160 degrees) the river ends up heading back west, above its entry.
    inputs = straight(0.0, turns=np.ones(8))
    image = R.render(inputs)[0] / 255.0
    water = np.linalg.norm(image.transpose(1, 2, 0) - R.WATER, axis=-1) < 0.1
    rows = np.flatnonzero(water.any(axis=1))
    entry_rows = np.flatnonzero(water[:, 0])  # where the river crosses the left edge
    assert entry_rows.size and rows.min() < entry_rows.min() - 15


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="grass must be in"):
        straight(0.0, grass=1.5)
    with pytest.raises(ValueError, match="turns must have shape"):
        straight(0.0, turns=np.ones(3))
    with pytest.raises(ValueError, match="seed must be an integer"):
        R.draw_inputs(-1, np.arange(3))
    with pytest.raises(ValueError, match="index must be a 1-D array"):
        R.draw_inputs(0, np.array([0.5]))
    with pytest.raises(ValueError, match="factors must have shape"):
        RiversFactors().sample_observations_from_factors(np.zeros((2, 4), dtype=int))
    with pytest.raises(ValueError, match="out of range"):
        RiversFactors().sample_observations_from_factors([[0, 0, 0, 7, 0]])


# ---------------------------------------------------------------------------
# the factor grid and the dataset


def test_factor_cells_and_inputs_agree():
    grid = RiversFactors()
    rng = np.random.default_rng(0)
    factors = grid.sample_factors(2000, rng)
    for draw in (None, rng):
        inputs = grid.inputs_from_factors(factors, draw)
        assert np.array_equal(R.factor_indices(inputs), factors)
        assert np.array_equal((inputs.net_curvature + 8) // 2, factors[:, 4])
    centres = grid.inputs_from_factors(factors)
    values = grid.factor_values()
    assert np.allclose(centres.grass, values[0][factors[:, 0]])
    assert np.allclose(centres.heading, values[1][factors[:, 1]])
    assert [len(v) for v in values] == list(grid.factor_sizes) and len(grid) == math.prod(grid.factor_sizes)
    assert torch.equal(grid[int(np.ravel_multi_index(factors[0], grid.factor_sizes))],
                       grid.sample_observations_from_factors(factors[:1])[0])


def test_grid_draws_follow_the_data():
    factors = RiversFactors().sample_factors(20_000, np.random.default_rng(1))
    left = factors[:, 4]  # Binomial(8, 1/2): mean 4, variance 2
    assert abs(left.mean() - 4) < 5 * math.sqrt(2 / 20_000)
    assert abs(left.var() - 2) < 0.15  # the variance's standard error is about sqrt(2 * 2^2 / N) = 0.02
    # the turns given their sum: each bend equally likely to be one of the left ones
    inputs = RiversFactors().inputs_from_factors(factors, np.random.default_rng(2))
    share = ((inputs.turns == 1) / np.maximum(left, 1)[:, None])[left > 0].mean(0)
    assert np.abs(share - 1 / 8).max() < 0.01


def test_fixed_factor_sampling_fixes_what_the_picture_shows():
    grid = RiversFactors()
    rng = np.random.default_rng(3)
    for k in range(grid.num_factors):
        factors, images = grid.sample_with_fixed_factor(12, k, rng, value=2)
        assert (factors[:, k] == 2).all() and images.shape == (12, 3, 64, 64)
        assert all(len(np.unique(factors[:, j])) > 1 for j in (0, 1) if j != k)
    dry, lush = np.array(R.GRASS_DRY), np.array(R.GRASS_LUSH)
    factors, images = grid.sample_with_fixed_factor(30, 0, rng, value=2)  # grass in [0.2, 0.3)
    for picture in (images * 255).round().byte().numpy():
        colours, counts = np.unique(picture.reshape(3, -1), axis=1, return_counts=True)
        grass = (colours[:, counts.argmax()] / 255 - dry) @ (lush - dry) / ((lush - dry) @ (lush - dry))
        assert 0.2 - 0.01 < grass < 0.3 + 0.01  # the commonest colour is the grass, up to 8-bit rounding
    factors, images = grid.sample_with_fixed_factor(30, 3, rng, value=4)  # four trees
    for cell, picture in zip(factors, (images * 255).round().byte().numpy()):
        grass = R.grass_colour([(cell[0] + 0.5) / 10])[0]
        assert ndimage.label(tree_mask(picture, grass))[1] == 4
    factors, _ = grid.sample_with_fixed_factor(50, 4, rng)
    assert len(np.unique(factors[:, 4])) == 1


def test_every_metric_runs_on_rivers():
    weights = torch.randn(3 * 64 * 64, 6, generator=torch.Generator().manual_seed(0))
    representation = lambda x: torch.tanh(x.reshape(len(x), -1) @ weights / 64)  # noqa: E731
    results = D.compute_all(representation, RiversFactors(), 0, num_train=60, num_eval=40,
                            num_variance_estimate=64, batch_size=8, n_estimators=2)
    assert list(results) == list(D.METRICS)
    for scores in results.values():
        assert all(np.isfinite(v).all() for v in scores.values())


def test_load_dataset_rivers():
    data = load_dataset("rivers", num_train=40, val_size=8, num_test=8, seed=5)
    assert data.image_shape == (3, 64, 64) and data.train.data.dtype == torch.float32
    assert (len(data.train), len(data.val), len(data.test)) == (40, 8, 8)
    for split, offset in zip((data.train, data.val, data.test), SPLIT_SEED_OFFSETS):
        inputs = R.draw_inputs(5 + offset, np.arange(len(split)))
        assert torch.equal(split.data, torch.from_numpy(R.render(inputs)).float() / 255)
        assert torch.equal(split.labels, torch.from_numpy(R.factor_indices(inputs)))
    assert not torch.equal(data.train.data[:8], data.val.data)
    again = load_dataset("rivers", num_train=40, val_size=8, num_test=8, seed=5)
    assert torch.equal(again.train.data, data.train.data)
    assert isinstance(ground_truth("rivers"), RiversFactors)
