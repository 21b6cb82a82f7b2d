"""Two small helpers every estimator shares: a seeded random block and chunking of draws."""

import contextlib

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


def chunk_sizes(total, chunk_size=None):
    """Split ``total`` draws into chunks of at most ``chunk_size`` (all at once when ``None``)."""
    chunk_size = total if chunk_size is None else chunk_size
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    for start in range(0, total, chunk_size):
        yield min(chunk_size, total - start)
