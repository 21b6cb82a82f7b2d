"""Data parallelism on ``torch.distributed``: this process's rank, how work is divided, and the few collectives.

pyrovae has no launcher and no transport of its own. Processes are started by
``torchrun`` (one node or many, c10d rendezvous) and talk through
``torch.distributed`` (gloo on the CPU, NCCL on GPUs). :func:`init` joins the
process group the launcher describes (or the one already initialized);
everything else asks :func:`current` for a :class:`World` -- ``World(0, 1)``
on a single process, where every method is the identity, so single-process
code paths stay exactly as they were.

**Work units and seeds.** Evaluation divides its work into *units* whose
boundaries do not depend on the number of ranks (batches of data, whole
metrics); rank r takes units r, r + N, r + 2N, ... and the results are gathered
back in unit order. Each unit draws its random numbers from its own seed,
:func:`unit_seed` (``seed`` itself for unit 0), so a datum's draws are the same
whichever rank evaluates it: a sharded evaluation equals the single-process one
up to the order of floating-point sums.

**Training** (:class:`pyrovae.infer.svi.SVIRun`): every rank draws the same
global batches (one generator, seeded by the run's seed and the epoch) and
takes a contiguous share of each (:meth:`World.shard_rows`); the step's
gradients are averaged by :meth:`World.average_gradients`, each rank weighted
by its share of the global batch, which equals the gradient of the global
batch's per-datum mean loss. Latent draws and dynamic binarization come from
per-rank streams (:func:`rank_seed`), reseeded every epoch.

**Rank 0 writes.** :meth:`World.on_main` runs a function on rank 0 alone and
gives every rank its result -- or its exception, so that a full disk or a
second writer stops every rank with the same error instead of leaving the
others waiting; the broadcast is the barrier. Inside ``with local():`` a
process behaves as if alone (rank 0 drawing pictures calls no collective).
"""

import contextlib
import os
import pickle

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["World", "current", "init", "launched", "local", "rank_seed", "shutdown", "unit_seed"]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

_local_depth = [0]
_joined_here = [False]  # init() made the process group (shutdown() leaves a caller's group alone)


class World:
    """``World(rank, size)``: this process's place among ``size`` data-parallel processes."""

    def __init__(self, rank=0, size=1):
        self.rank, self.size = rank, size

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size})"

    @property
    def is_main(self):
        """True on rank 0, the one process that writes files and prints."""
        return self.rank == 0

    # -- dividing work ---------------------------------------------------------
    def units(self, num_units):
        """The indices of the units of work this rank takes among ``num_units``: r, r + N, r + 2N, ..."""
        return range(self.rank, num_units, self.size)

    def shard_rows(self, index):
        """This rank's contiguous share of a global batch's row indices (sizes differ by at most one)."""
        if self.size == 1:
            return index
        return torch.tensor_split(index, self.size)[self.rank]

    # -- collectives -------------------------------------------------------------
    def all_reduce_sum(self, values):
        """The sum over ranks of a list of numbers (float64), as a list."""
        if self.size == 1:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return t.cpu().tolist()

    def all_reduce_tensors(self, tensors):
        """Sum each tensor over ranks, in place (one collective per dtype)."""
        return self._flat_collective(tensors, dist.all_reduce)

    def _flat_collective(self, tensors, collective):
        """Apply ``collective`` to ``tensors`` flattened into one buffer per dtype, and copy the result back."""
        if self.size == 1 or not tensors:
            return tensors
        by_dtype = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        device = _collective_device()
        with torch.no_grad():
            for group in by_dtype.values():
                flat = torch.cat([t.detach().reshape(-1).to(device) for t in group])
                collective(flat)
                for t, part in zip(group, flat.split([t.numel() for t in group])):
                    t.detach().copy_(part.view_as(t))
        return tensors

    def gather_in_order(self, parts):
        """Every rank's ``{unit index: result}`` merged into the list of results in unit order (on every rank)."""
        if self.size == 1:
            return [parts[k] for k in sorted(parts)]
        gathered = [None] * self.size
        dist.all_gather_object(gathered, {k: _to_cpu(v) for k, v in parts.items()})
        merged = {k: v for part in gathered for k, v in part.items()}
        return [merged[k] for k in sorted(merged)]

    def broadcast_(self, tensors):
        """Overwrite ``tensors`` on every rank with rank 0's values."""
        self._flat_collective(list(tensors), lambda flat: dist.broadcast(flat, 0))

    def on_main(self, fn):
        """``fn()`` run on rank 0 alone; every rank returns its result or raises its exception."""
        if self.size == 1:
            return fn()
        box = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as e:  # noqa: BLE001 -- handed to every rank, then raised on rank 0 too
                box[0] = ("error", _picklable(e))
                dist.broadcast_object_list(box, 0)
                raise
        dist.broadcast_object_list(box, 0)
        status, value = box[0]
        if status == "error":
            value.raised_on_rank_0 = True  # the CLI prints it once, on rank 0
            raise value
        return value

    def average_gradients(self, params, stats, share):
        """Average the step's ``.grad`` s and ``stats`` over ranks, rank r weighted by ``share`` = n_r / B.

        With per-datum mean losses on every shard, sum_r (n_r / B) grad_r is the
        gradient of the global batch's mean loss (Goyal et al. 2017, arXiv
        1706.02677, section 3). A rank with ``share`` 0 adds exact zeros. A
        parameter keeps ``grad=None`` when no rank gave it a gradient (as
        ``backward`` leaves an unused parameter). The gradients are reduced in
        one flat buffer per dtype and become views of it. Returns the averaged
        stats as 0-dim float64 tensors; everything is identical on every rank.
        """
        used = [p.grad is not None and share > 0 for p in params]
        device, by_dtype, grads = _collective_device(), {}, [None] * len(params)
        for i, p in enumerate(params):
            by_dtype.setdefault(p.dtype, []).append(i)
        for indices in by_dtype.values():
            flat = torch.cat([(params[i].grad if used[i] else torch.zeros_like(params[i])).reshape(-1)
                              for i in indices]).to(device)
            dist.all_reduce(flat.mul_(share))
            for i, part in zip(indices, flat.split([params[i].numel() for i in indices])):
                grads[i] = part.view_as(params[i]).to(params[i].device)
        small = torch.tensor([*map(float, used), *(float(v) * share if share else 0.0 for v in stats.values())],
                             dtype=torch.float64)
        self.all_reduce_tensors([small])
        for p, g, any_rank in zip(params, grads, small[:len(params)].tolist()):
            p.grad = g if any_rank else None
        return dict(zip(stats, small[len(params):].unbind()))


def _collective_device():
    """Where collectives' tensors live: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _picklable(error):
    """``error`` itself when it survives pickling, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 -- any exception that cannot travel is replaced by its message
        return RuntimeError(f"{type(error).__name__}: {error}")


def current():
    """The :class:`World` of this process: the initialized process group's, or ``World(0, 1)``."""
    if _local_depth[0] or not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size())


def launched():
    """True when torchrun (or a launcher setting its variables) started this process as one of several."""
    return all(k in os.environ for k in TORCHRUN_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def init(device="cpu"):
    """Join the data-parallel process group and return this process's :class:`World`.

    An initialized process group is used as it is; otherwise, under torchrun
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set, more than one
    process), one is initialized from that environment: NCCL when ``device`` is a
    GPU, gloo otherwise; each process takes GPU ``LOCAL_RANK`` as its ``cuda``
    device when there are GPUs. A single process gets ``World(0, 1)``.
    """
    if not _local_depth[0] and dist.is_available() and not dist.is_initialized() and launched():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
        _joined_here[0] = True
    return current()


def shutdown():
    """Leave the process group that :func:`init` made, if it made one (at the end of a command)."""
    if _joined_here[0] and dist.is_initialized():
        dist.destroy_process_group()
    _joined_here[0] = False


@contextlib.contextmanager
def local():
    """Inside this block the process behaves as if alone: ``current()`` is ``World(0, 1)``, no collective runs."""
    _local_depth[0] += 1
    try:
        yield
    finally:
        _local_depth[0] -= 1


def unit_seed(seed, unit):
    """The seed of work unit ``unit``: ``seed + 1_000_003 * unit`` (``seed`` for unit 0; None stays None)."""
    return None if seed is None else seed + 1_000_003 * unit


def rank_seed(seed, epoch, rank, stream=0):
    """A seed for rank ``rank``'s ``stream`` (0: latent draws, 1: dynamic binarization) in ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(1, np.uint64)[0] >> 1)
