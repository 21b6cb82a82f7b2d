"""Two small helpers every estimator shares: a seeded random block and chunking of draws."""

import contextlib

import numpy as np
import torch


@contextlib.contextmanager
def seeded(seed, device=None):
    """Run the block with torch's RNG seeded to ``seed``, restoring the global RNG after.

    With ``seed=None`` the block uses (and advances) the global random state.
    The CUDA generator of ``device`` is forked too when it is a CUDA device.
    """
    if seed is None:
        yield
        return
    device = torch.device(device) if device is not None else None
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def positive_int(name, value):
    """``value`` as an int, or a ValueError naming ``name`` unless it is an integer >= 1."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def chunk_sizes(total, chunk_size=None):
    """Split ``total`` draws into chunks of at most ``chunk_size`` (all at once when ``None``)."""
    chunk_size = positive_int("chunk_size", total if chunk_size is None else chunk_size)
    for start in range(0, total, chunk_size):
        yield min(chunk_size, total - start)
