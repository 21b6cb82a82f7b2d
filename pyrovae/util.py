"""Small helpers every estimator shares: a seeded random block, chunking of draws, a memory meter, error lines."""

import contextlib

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode


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


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created under this mode and still alive: a CPU memory meter.

    Every operator's outputs are recorded with a weak reference to their
    storage; ``peak`` is the largest total of live storages seen after any
    operator (tensors made before entering are not counted).
    """

    def __init__(self):
        super().__init__()
        self.live, self.peak = {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.live = {ptr: (ref, n) for ptr, (ref, n) in self.live.items() if not ref.expired()}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.live:
                storage = t.untyped_storage()
                self.live[storage.data_ptr()] = (StorageWeakRef(storage), storage.nbytes())
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def peak_tensor_bytes(fn):
    """``fn()``'s peak bytes of live tensors it created (:class:`LiveTensorBytes`) and its result."""
    with LiveTensorBytes() as meter:
        result = fn()
    return meter.peak, result


def error_line(e):
    """``"TypeName: message"`` on one line for an exception ``e``: the message's first line, or for an error Pyro
    wraps ("Error while computing log_prob at site 'x':" followed by the cause and the trace shapes) that line
    and the cause."""
    lines = str(e).strip().splitlines()
    first = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines[0] if lines else "")
    return f"{type(e).__name__}: {first}"
