"""In-memory image splits with static or dynamic binarization, and their batches."""

from dataclasses import dataclass

import torch

BINARIZE = (None, "static", "dynamic")


class ImageSplit:
    """Images ``[N, C, H, W]`` with values in [0, 1], plus optional labels or factors.

    ``binarize``: ``None`` (use the values as they are), ``"static"`` (one
    Bernoulli draw per pixel made here, from ``seed``, as in Larochelle's binarized
    MNIST) or ``"dynamic"`` (a fresh Bernoulli draw per pixel each time a batch is
    made, as in the IWAE paper's protocol).
    """

    def __init__(self, images, labels=None, binarize=None, seed=0):
        if binarize not in BINARIZE:
            raise ValueError(f"binarize must be one of {BINARIZE}, got {binarize!r}")
        images = torch.as_tensor(images)
        if images.dtype == torch.uint8 and images.max() > 1:
            images = images.float() / 255.0
        images = images.float()
        check_images(images)
        if binarize == "static":
            images = torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))
        self.images = images
        self.labels = None if labels is None else torch.as_tensor(labels)
        self.binarize = binarize

    def __len__(self):
        return len(self.images)

    @property
    def image_shape(self):
        return tuple(self.images.shape[1:])

    def batches(self, batch_size, generator=None, shuffle=False, device="cpu"):
        """Yield float batches; ``generator`` drives shuffling and dynamic binarization."""
        n = len(self.images)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.materialize(order[start:start + batch_size], generator).to(device)

    def materialize(self, index, generator=None):
        x = self.images[index]
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        return x

    def fixed(self, seed=0):
        """This split with any dynamic binarization drawn once (for validation and test bounds)."""
        if self.binarize != "dynamic":
            return self
        return ImageSplit(self.images, self.labels, "static", seed)


def check_images(images, name="data"):
    """Raise a ValueError naming the problem if ``images`` is not ``[N, C, H, W]`` of finite values in [0, 1]."""
    if images.dim() != 4:
        raise ValueError(f"{name} must be images of shape [N, C, H, W], got shape {list(images.shape)}")
    if not torch.isfinite(images).all():
        bad = (~torch.isfinite(images)).sum().item()
        raise ValueError(f"{name} holds {bad} NaN or infinite values")
    lo, hi = images.min().item(), images.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} values must lie in [0, 1] (images as floats), found range [{lo}, {hi}]")


@dataclass
class Dataset:
    """A dataset's train, validation and test splits."""

    name: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit

    @property
    def image_shape(self):
        return self.train.image_shape


def data_tensor(data, seed=0):
    """``data`` as one tensor ``[N, *event]``: a tensor as it is, an :class:`ImageSplit`'s images with any
    dynamic binarization drawn once from ``seed`` (0 when ``None``). Estimators and diagnostics take either."""
    if isinstance(data, ImageSplit):
        return data.fixed(0 if seed is None else seed).images
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"data must be a tensor [N, *event] or an ImageSplit, got {type(data).__name__}")
    if data.dim() < 1 or data.shape[0] == 0:
        raise ValueError(f"data must hold at least one datapoint along dim 0, got shape {list(data.shape)}")
    return data


def batches_of(x, batch_size, device=None):
    """Consecutive slices of ``x`` along dim 0, moved to ``device`` when given."""
    for start in range(0, x.shape[0], batch_size):
        batch = x[start:start + batch_size]
        yield batch if device is None else batch.to(device)
