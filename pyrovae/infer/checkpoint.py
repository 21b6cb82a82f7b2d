"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)``.

A checkpoint holds tensors and plain data only: the pair's state dicts, the
optimizer state, the epoch, RNG states, the configuration and the history.
It is written to a temporary file in the same folder, flushed to disk, then
renamed over the old one, so an interrupted write leaves the previous
checkpoint intact.
"""

import contextlib
import json
import math
import os
import tempfile

import torch

from pyrovae.infer.trace import named_pair_modules

FORMAT = "pyrovae-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the pair."""


class SimulatedKill(BaseException):
    """Raised by the fault-injection hook: the process "dies" inside an atomic write (see :func:`atomic_open`)."""


_WRITES = [0]


def _fault_hook(path):
    """``PYROVAE_KILL_AT_WRITE=N`` (tests): die inside the N-th atomic write of this process, after the temporary
    file is written and before it replaces ``path``, leaving the temporary file behind as a real kill would."""
    target = os.environ.get("PYROVAE_KILL_AT_WRITE")
    if target is None:
        return
    _WRITES[0] += 1
    if _WRITES[0] == int(target):
        raise SimulatedKill(f"killed inside write number {target} ({os.path.basename(path)})")


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """A file to write ``path`` through: a temporary file in the same folder, synced, then renamed over it.

    ``path`` is always either the old or the new file, also when the writer is killed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.chmod(tmp, 0o666 & ~_UMASK)  # as an ordinary open() would create it (mkstemp makes 0600)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _fault_hook(path)
        os.replace(tmp, path)
    except SimulatedKill:
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def save_atomic(obj, path):
    """``torch.save(obj, path)`` so that ``path`` is always either the old or the new file."""
    with atomic_open(path) as f:
        torch.save(obj, f)


def write_json(path, obj):
    """``obj`` as indented, strict JSON at ``path`` (NaN and infinities written as null), atomically."""
    with atomic_open(path, "w") as f:
        json.dump(strict_json(obj), f, indent=2, allow_nan=False)


def strict_json(obj):
    """``obj`` with every non-finite float replaced by None, so that strict JSON parsers read it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def load(path):
    """Load a checkpoint, raising :class:`CheckpointError` naming the file if it is unreadable."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is unreadable (corrupted or truncated?): "
                              f"{type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyrovae checkpoint (expected format {FORMAT!r})")
    return ckpt


def pair_state(model, guide):
    """The state dicts of the pair's modules by role (:func:`~pyrovae.infer.trace.named_pair_modules`)."""
    return {role: m.state_dict() for role, m in named_pair_modules(model, guide)}


def load_pair_state(model, guide, state, path="checkpoint"):
    """Load :func:`pair_state` into a pair, with an error naming any mismatch of architecture."""
    for role, m in named_pair_modules(model, guide):
        if role not in state:
            raise CheckpointError(f"{path} holds no state for the pair's {role} ({type(m).__name__})")
        own = m.state_dict()
        saved = state[role]
        missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
        wrong = [f"{k}: saved {list(saved[k].shape)} vs pair {list(own[k].shape)}"
                 for k in own if k in saved and saved[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"{path} was written for a different {role} architecture: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {wrong[:5]}")
        m.load_state_dict(saved)
