"""viz.image_grid: the tiling layout, checked pixel by pixel against its definition."""

import numpy as np
import pytest
import torch

from pyrovae.app.viz import image_grid


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_tiles_row_by_row_with_white_padding(channels):
    # 7 images of 4 x 5 pixels, 3 per row: 3 rows, the last holding one image. Image i is
    # filled with (i + 1) / 10 (and channel c of it shifted by c / 100), so every tile is
    # recognisable; everything outside the tiles is padding, white (1.0).
    n, h, w, nrow, pad = 7, 4, 5, 3, 2
    values = (torch.arange(n) + 1.0) / 10
    images = values[:, None, None, None] + torch.arange(channels)[None, :, None, None] / 100
    images = images.expand(n, channels, h, w)
    grid = image_grid(images, nrow=nrow, padding=pad)
    rows = -(-n // nrow)
    shape = (rows * (h + pad) + pad, nrow * (w + pad) + pad)
    assert grid.shape == (shape if channels == 1 else (*shape, 3))
    expected = np.ones(grid.shape, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        tile = images[i].permute(1, 2, 0).numpy()
        expected[top:top + h, left:left + w] = tile[..., 0] if channels == 1 else tile
    np.testing.assert_array_equal(grid, expected)


def test_image_grid_clamps_and_defaults_to_a_square():
    images = torch.full((9, 1, 2, 2), 3.0)
    images[0] = -1.0
    grid = image_grid(images)  # ceil(sqrt(9)) = 3 per row
    assert grid.shape == (3 * 4 + 2, 3 * 4 + 2)
    assert grid[2:4, 2:4].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert grid.max() == 1.0
