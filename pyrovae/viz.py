"""Pictures of a trained pair: sample grids and reconstructions.

Works for any pair whose data are images: samples are the mean of the model's
observed site given z ~ p(z) (the model is run with ``x=None, batch_size=B``),
reconstructions the mean given z ~ q(z|x).
"""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from .pair import observed_sites, run_pair, run_program  # noqa: E402


def _observed_mean(sites):
    site = next(iter(observed_sites(sites).values()), None)
    if site is None:
        site = next(s for s in reversed(list(sites.values())))
    return site.fn.mean


@torch.no_grad()
def sample_means(model, num, obs_site="x"):
    """Means of p(x|z) at the model's data site ``obs_site`` for ``num`` draws z ~ p(z)."""
    with pyro.poutine.block():
        sites = run_program(model, None, batch_size=num)
    # with x=None the data site is sampled, not observed; a model with another name for it ends with it
    site = sites.get(obs_site) or list(sites.values())[-1]
    return site.fn.mean


@torch.no_grad()
def reconstruction_means(model, guide, x):
    """Means of p(x|z) for z ~ q(z|x): same shape as ``x``."""
    with pyro.poutine.block():
        _, model_sites = run_pair(model, guide, x)
    return _observed_mean(model_sites)


def image_grid(images, nrow=None, padding=2):
    """Tile images ``[N, C, H, W]`` (C = 1 or 3) into one ``[H', W']`` or ``[H', W', 3]`` array."""
    images = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + padding) + padding, nrow * (w + padding) + padding)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()


def save_grid(images, path, nrow=None, title=None):
    """Save :func:`image_grid` of ``images`` as a PNG."""
    grid = image_grid(images, nrow)
    fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[0] / grid.shape[1]))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def save_reconstructions(model, guide, x, path):
    """Inputs (odd rows) above their reconstructions (even rows), 8 per row."""
    recon = reconstruction_means(model, guide, x)
    rows = []
    for start in range(0, x.shape[0], 8):
        rows += [x[start:start + 8], recon[start:start + 8]]
    return save_grid(torch.cat(rows), path, nrow=8, title="inputs (odd rows) and reconstructions")
