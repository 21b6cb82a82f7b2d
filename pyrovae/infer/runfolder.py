"""A run folder as one unit that no kill, second writer or full disk can lose or tear.

- **One writer.** :meth:`RunFolder.lock` takes an exclusive ``flock`` on
  ``RUN/.lock`` for the whole run; a second writer gets a :class:`RunFolderError`
  naming the holder's pid at once. The lock goes with the process, so a
  killed run leaves no stale lock.
- **One commit point.** Each epoch's state is written to a new file
  ``epoch-NNNN.pt`` (atomically: a temporary file, synced, renamed), then the
  small manifest ``checkpoints.json`` naming the ``last`` and the ``best``
  checkpoint is replaced atomically. A kill before the manifest leaves the
  previous pair intact (the new file is an orphan, removed on resume); after
  it, both names are new. ``last`` and ``best`` can never disagree with each
  other or with the best score the manifest records.
- **Clear failures.** An unwritable folder is found before any data or model
  is loaded; a full disk or any other write error names the file and says
  that the last good checkpoint is intact.
"""

import errno
import fcntl
import json
import os
import re

from pyrovae.infer import checkpoint as ckpt_io

MANIFEST = "checkpoints.json"
LOCK = ".lock"
_CHECKPOINT = re.compile(r"^epoch-\d{4,}\.pt$")


class RunFolderError(RuntimeError):
    """A run folder that cannot be written, is held by another writer, or lacks what is asked of it."""


class RunFolder:
    """``RunFolder(path)``: the checkpoints of one run (see the module doc)."""

    def __init__(self, path):
        if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
            raise RunFolderError(f"a run folder needs a path, got {path!r}")
        self.path = os.path.abspath(path)
        self._lock_file, self._depth = None, 0

    def file(self, name):
        return os.path.join(self.path, name)

    # -- the writer's lock ---------------------------------------------------
    def lock(self):
        """Take the writer's lock (creating the folder); RunFolderError if it is unwritable or held elsewhere.

        Re-entrant: a holder may take it again (each ``lock`` needs its ``unlock``).
        """
        if self._lock_file is not None:
            self._depth += 1
            return self
        try:
            os.makedirs(self.path, exist_ok=True)
            handle = open(self.file(LOCK), "a+")
        except OSError as e:
            raise RunFolderError(f"cannot write the run folder {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderError(f"{self.path} is being written by another pyrovae process (pid {holder}); wait for "
                                 "it to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file, self._depth = handle, 1
        self._check_writable()
        return self

    def unlock(self):
        self._depth -= 1
        if self._depth <= 0 and self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self):
        return self.lock()

    def __exit__(self, *exc):
        self.unlock()
        return False

    def _check_writable(self):
        probe = self.file(".tmp-probe")
        try:
            with open(probe, "w") as f:
                f.write("probe")
            os.remove(probe)
        except OSError as e:
            raise RunFolderError(f"cannot write the run folder {self.path}: {e.strerror or e}") from None

    # -- checkpoints ---------------------------------------------------------
    def manifest(self):
        """The manifest ``{"last": file, "best": file, "epoch": n, "best_val": score}``, or None before the first epoch."""
        path = self.file(MANIFEST)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                manifest = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ckpt_io.CheckpointError(f"{path} is unreadable: {e}") from None
        if not isinstance(manifest, dict) or not {"last", "best"} <= set(manifest):
            raise ckpt_io.CheckpointError(f"{path} is not a pyrovae checkpoint manifest")
        return manifest

    def has_checkpoint(self):
        return self.manifest() is not None

    def checkpoint(self, which="last"):
        """The path of the ``last`` or ``best`` checkpoint; CheckpointError when the run has none."""
        if which not in ("last", "best"):
            raise ValueError(f"which must be 'last' or 'best', got {which!r}")
        manifest = self.manifest()
        if manifest is None:
            raise ckpt_io.CheckpointError(f"{self.path} holds no checkpoint yet (no {MANIFEST}): the run has not "
                                          "finished an epoch")
        return self.file(manifest[which])

    def commit(self, state, epoch, improved, best_val):
        """Write ``state`` as epoch ``epoch``'s checkpoint and publish it as ``last`` (and ``best`` if ``improved``)."""
        name = f"epoch-{epoch:04d}.pt"
        previous = self.manifest()
        best = name if improved or previous is None else previous["best"]
        self._write(lambda: ckpt_io.save_atomic(state, self.file(name)), name, previous)
        manifest = {"format": ckpt_io.FORMAT, "last": name, "best": best, "epoch": epoch, "best_val": best_val}
        self._write(lambda: ckpt_io.write_json(self.file(MANIFEST), manifest), MANIFEST, previous)
        self.clean()

    def _write(self, write, name, previous):
        try:
            write()
        except OSError as e:
            intact = (f"the last good checkpoint ({previous['last']}) is intact" if previous
                      else "no checkpoint had been written yet")
            why = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise RunFolderError(f"writing {self.file(name)} failed: {why}; {intact}") from None

    def clean(self):
        """Remove temporary files and checkpoints the manifest does not name (left by a killed run)."""
        manifest = self.manifest()
        keep = set() if manifest is None else {manifest["last"], manifest["best"]}
        for name in os.listdir(self.path):
            if name.startswith(".tmp-") or (_CHECKPOINT.match(name) and name not in keep):
                try:
                    os.remove(self.file(name))
                except FileNotFoundError:
                    pass
