"""The SVI run: mini-batch training of any (model, guide) pair.

:class:`SVIRun` is stochastic variational inference (Hoffman et al. 2013;
Kingma & Welling 2014) on torch optimizers over the pair's parameters, in
Pyro's ``ELBO(...)(model, guide)`` module style: mini-batches, Adam, optional
gradient clipping, a validation bound each epoch, early stopping, atomic
``best``/``last`` checkpoints with exact resume, a progress bar and a JSONL
metrics log.

**The run owns its parameter store.** Pyro keeps ``pyro.param`` s and the
parameters of modules registered with ``pyro.module`` in one global store; two
function-style pairs trained one after the other in one process would share
(and silently not train) parameters of the same name. A run therefore works in
its own store (``ParamStoreDict.scope``): every call of the pair the run makes
happens inside :meth:`SVIRun.param_scope`, checkpoints carry the store whole,
and a user evaluates a function-style pair with bare ``pyro.param`` s inside
``with run.param_scope():``.

**Divergence.** A step whose loss or gradient is not finite is skipped (no
optimizer update) and counted; after ``max_bad_steps`` of them, or a
validation bound that is not finite, the run stops with a
:class:`DivergenceError` that says what happened and what to try. Nothing
non-finite is ever committed: the last good checkpoint stays as it was.

**Data parallelism.** Under ``torchrun`` (or in an initialized process group)
each rank trains on its share of every global batch of ``batch_size`` and the
gradients are averaged across ranks (:mod:`pyrovae.infer.distributed`): the
global batches do not depend on the number of ranks, the averaged gradient is
the global batch's, and the validation bound, the divergence checks, the
schedules and early stopping are the same on every rank. Rank 0 alone writes
the run folder; a resumed run reads it on rank 0 and hands it to every rank.
Resuming with the same number of ranks gives the uninterrupted run's numbers;
with another number of ranks the data order, the parameters, the optimizer and
the schedules carry over exactly, while the latent draws and dynamic
binarization, which come from per-rank streams, differ (an equally valid
continuation, not the same numbers).
"""

import contextlib
import json
import math
import os
import time
import warnings

import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from pyrovae.data.splits import as_split
from pyrovae.infer import checkpoint as ckpt_io
from pyrovae.infer import distributed
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.regularized import ControlledCapacity, FreeBits
from pyrovae.infer.runfolder import RunFolder, RunFolderError
from pyrovae.infer.step import StepFunction
from pyrovae.infer.trace import PairError, check_pair, evaluation_mode, is_observed, pair_modules, trace_pair
from pyrovae.util import error_line, seeded


@torch.no_grad()
def evaluate_elbo(model, guide, data, batch_size=500, device="cpu", seed=0, obs="x"):
    """The mean ELBO in nats per datapoint over ``data`` (any data :func:`~pyrovae.data.splits.as_split` takes).

    The pair runs in eval mode (restored after). Dynamic binarization and the
    latent draws come from ``seed`` on a forked random state: the result is
    reproducible and the caller's random stream is left untouched. Each batch
    draws from its own seed (:func:`~pyrovae.infer.distributed.unit_seed`), so in a
    process group the batches are divided among the ranks and every rank gets
    the single-process number (up to the order of the sums).
    """
    split = as_split(data, obs).fixed(seed)
    objective = ELBO(analytic_kl=True)
    world = distributed.current()
    batches = split.batch_indices(batch_size)
    total, n = 0.0, 0
    device = torch.device(device)
    with evaluation_mode(model, guide), poutine.block():
        for b in world.units(len(batches)):
            with seeded(distributed.unit_seed(seed, b), device):
                batch = split.materialize(batches[b]).to(device)
                t = objective.terms(model, guide, batch.x, **batch.kwargs)
            total += float(t.elbo) / t.num_data * len(batch)
            n += len(batch)
    total, n = world.all_reduce_sum([total, n])
    return total / n


def importable_reference(fn):
    """``"module:qualname"`` of a program when it can be imported again, else None: a function's own, or the
    class of a module or of a bound method's object (Pyro's ``vae.model`` style: the class is the pair).
    ``pyrovae`` commands rebuild a pair from such references (a class with no required arguments)."""
    owner = getattr(fn, "__self__", None)
    if owner is not None:
        target = type(owner)
    elif isinstance(fn, torch.nn.Module):
        target = type(fn)
    else:
        target = fn
    module, name = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if not module or not name or module == "__main__" or "<" in name:
        return None
    return f"{module}:{name}"


class DivergenceError(RuntimeError):
    """Training stopped because the loss, a gradient or the validation bound stopped being finite."""


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class SVIRun:
    """Train ``(model, guide)`` on ``train`` with ``objective`` (default: :class:`~pyrovae.infer.elbo.ELBO`).

    ``train`` and ``val`` are any data :func:`~pyrovae.data.splits.as_split`
    takes (a tensor ``[N, *event]``, a dict of fields, a :class:`~pyrovae.data.splits.Split`, a torch
    Dataset); fields other than the observed one reach the pair as keyword
    arguments. With ``run_dir`` set, each epoch's checkpoint is committed there
    (:class:`~pyrovae.infer.runfolder.RunFolder`: the ``last`` and ``best``
    checkpoints named by one atomic manifest, under a writer's lock) along with
    ``metrics.jsonl``; ``fit(resume=True)`` continues from the last checkpoint
    and gives the same parameters as a run that was never interrupted.
    ``lr_decay`` and ``lr_decay_after``: Adam's learning rate stays at ``lr``
    for the first ``lr_decay_after`` epochs, then is multiplied by ``lr_decay``
    each epoch (:meth:`learning_rate`; ``lr_decay=1``, the default, keeps it
    constant; ``lr_decay_after=1``, the default, is torch's ``ExponentialLR``).
    ``patience``: stop after that many epochs without a better validation bound
    (epochs before ``ignore_before_epoch`` do not count). ``clip_norm`` (> 0)
    clips the gradient norm; ``max_bad_steps``: see the module doc.
    ``batching`` matters for data whose optional fields are present for part of
    the data only (labels of a few, for semi-supervised training):
    ``"grouped"`` cuts each group into its own batches, interleaved in random
    order (:meth:`~pyrovae.data.splits.Split.batch_indices`); ``"mixed"`` puts a
    part of every group into every step, weighted by the group's share, as
    Kingma et al. 2014 (arXiv 1406.5298) do
    (:meth:`~pyrovae.data.splits.Split.mixed_batch_indices`: the step's gradient
    is the weighted sum of one pair call per part).

    In a process group (an initialized one, or one :func:`~pyrovae.infer.distributed.init`
    makes from torchrun's environment) the run is data-parallel (module doc):
    ``batch_size`` is the global batch, divided among the ranks. A run made
    inside ``with pyrovae.infer.distributed.local():`` trains on its process alone.
    """

    def __init__(self, model, guide, train, val=None, objective=None, *, lr=1e-3, lr_decay=1.0, lr_decay_after=1,
                 batch_size=128, epochs=10, clip_norm=None, patience=None, ignore_before_epoch=0, seed=0, device="cpu",
                 run_dir=None, config=None, step_mode="graph", progress=True, obs="x", max_bad_steps=10,
                 batching="grouped"):
        self.model, self.guide = model, guide
        self.train_split = as_split(train, obs)
        self.val_split = None if val is None else as_split(val, obs)
        self.objective = objective if objective is not None else ELBO()
        self.lr, self.batch_size, self.epochs = lr, batch_size, epochs
        self.lr_decay, self.lr_decay_after = lr_decay, lr_decay_after
        self.clip_norm, self.patience, self.ignore_before_epoch = clip_norm, patience, ignore_before_epoch
        self.world = distributed.init(device)
        self.seed, self.device, self.run_dir = seed, torch.device(device), run_dir
        self.config = dict(config or {})
        self.progress = progress
        if batching not in ("grouped", "mixed"):
            raise ValueError(f"batching must be 'grouped' or 'mixed', got {batching!r}")
        self.batching = batching
        _positive_int("batch_size", batch_size)
        _positive_int("max_bad_steps", max_bad_steps)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a number > 0, got {lr!r}")
        if not (isinstance(lr_decay, (int, float)) and 0 < lr_decay <= 1):
            raise ValueError(f"lr_decay must be a number in (0, 1], got {lr_decay!r}")
        if isinstance(lr_decay_after, bool) or not isinstance(lr_decay_after, int) or lr_decay_after < 0:
            raise ValueError(f"lr_decay_after must be an integer >= 0, got {lr_decay_after!r}")
        if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and math.isfinite(clip_norm)
                                          and clip_norm > 0):
            raise ValueError(f"clip_norm must be a number > 0 (or None for no clipping), got {clip_norm!r}")
        if patience is not None:
            _positive_int("patience", patience)
        if min(batch_size, len(self.train_split)) < self.world.size:
            raise ValueError(f"a global batch of {min(batch_size, len(self.train_split))} data cannot be divided "
                             f"among {self.world.size} ranks: use batch_size >= the number of ranks")
        self.max_bad_steps, self.bad_steps = max_bad_steps, 0
        self.folder = run_dir if isinstance(run_dir, RunFolder) else (RunFolder(run_dir) if run_dir else None)
        for m in pair_modules(model, guide):
            m.to(self.device)
        self.param_state = {"params": {}, "constraints": {}}  # this run's Pyro param store (ParamStoreDict.scope)
        self.module = self.objective(model, guide)
        with self.param_scope():
            self.info = self._check()
            self._check_data()
            self.params, self._store_names = self._collect_params()
            self.step_fn = StepFunction(self.module, self.params, step_mode)
        if self.world.size > 1:
            self._join_world()
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.history, self.epoch, self.global_step = [], 0, 0
        self.best_val, self.bad_epochs = -math.inf, 0

    def _join_world(self):
        """Every rank starts from rank 0's parameters and buffers; batch-level objectives are named once."""
        buffers = [b for m in pair_modules(self.model, self.guide) for b in m.buffers()]
        self.world.broadcast_([*self.params, *buffers])
        if isinstance(self.objective, (ControlledCapacity, FreeBits)) and self.world.is_main:
            warnings.warn(f"pyrovae: {type(self.objective).__name__} applies its batch-level term to each rank's "
                          f"share of the batch: with {self.world.size} ranks its gradient is the average of the "
                          "shares' gradients, not the global batch's", stacklevel=3)

    def param_scope(self):
        """``with run.param_scope():`` Pyro's param store holds this run's parameters (and only them)."""
        return pyro.get_param_store().scope(self.param_state)

    def _first_batch(self, split):
        index = split.batch_indices(self.batch_size)[0]
        return split.materialize(index, torch.Generator().manual_seed(0)).to(self.device)

    def _check(self):
        batch = self._first_batch(self.train_split)
        try:
            return check_pair(self.model, self.guide, batch.x, **batch.kwargs)
        except PairError:
            raise
        except (RuntimeError, ValueError, TypeError) as e:
            fields = f" with keyword fields {sorted(batch.kwargs)}" if batch.kwargs else ""
            raise PairError(f"data of shape {list(batch.x.shape)}{fields} does not fit the pair: running it failed "
                            f"with {error_line(e)}") from None

    def _check_data(self):
        """Every training and validation datum within the support of the observed site that scores the data.

        The first batch was checked with the pair (:func:`~pyrovae.infer.trace.check_pair`); here the site's
        support constraint is applied to each whole split at once, when the site scores the data in their own
        shape (dynamically binarized data are binary by construction). Training runs with Pyro's validation
        off (it cannot be recorded), so this is where data outside the support are caught.
        """
        splits = [(role, split) for role, split in (("training", self.train_split), ("validation", self.val_split))
                  if split is not None and split.binarize != "dynamic"]
        if not splits:
            return
        batch = self._first_batch(self.train_split)
        with torch.no_grad(), poutine.block():
            pt = trace_pair(self.model, self.guide, batch.x, enumerate=False, **batch.kwargs)
        for site in pt.model.nodes.values():
            if not is_observed(site) or site["value"].shape != batch.x.shape or not torch.equal(site["value"],
                                                                                               batch.x):
                continue
            for role, split in splits:
                bad = ~site["fn"].support.check(split.data.to(self.device))
                if bool(bad.any()):
                    index = int(torch.nonzero(bad.reshape(len(split), -1).any(-1))[0])
                    hint = ("binarize it (--binarize dynamic or static) or use a Gaussian likelihood"
                            if "Bernoulli" in repr(site["fn"]) else "check the data and the likelihood")
                    raise PairError(f"{role} datum {index} lies outside the support of the observed site "
                                    f"{site['name']!r} ({type(site['fn']).__name__}): {hint}")

    def _collect_params(self):
        """The pair's parameters: its modules' and every one it registers in the run's param store."""
        params = {id(p): p for m in pair_modules(self.model, self.guide) for p in m.parameters()}
        batch = self._first_batch(self.train_split)
        with poutine.trace(param_only=True) as tr, torch.no_grad():
            self.objective.loss(self.model, self.guide, batch.x, **batch.kwargs)
        store_names = {}
        for name, site in tr.trace.nodes.items():
            unconstrained = site["value"].unconstrained()
            params.setdefault(id(unconstrained), unconstrained)
            store_names[name] = unconstrained
        return list(params.values()), store_names

    # -- checkpoints -------------------------------------------------------
    def _state(self):
        state = {
            "format": ckpt_io.FORMAT,
            "pair": ckpt_io.pair_state(self.model, self.guide),
            "param_store": {k: v.detach().cpu() for k, v in self._store_names.items()},
            "optimizer": self.optimizer.state_dict(),
            "objective": {k: v.detach().cpu() for k, v in self.objective.state.items()},
            "epoch": self.epoch, "global_step": self.global_step,
            "best_val": self.best_val, "bad_epochs": self.bad_epochs, "bad_steps": self.bad_steps,
            "history": self.history, "config": self.config,
            "rng": {"torch": torch.random.get_rng_state()},
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state(self, path):
        """Restore everything :meth:`_state` saved; errors name a corrupt or mismatched checkpoint."""
        return self._apply_state(ckpt_io.load(path), path)

    def _apply_state(self, state, path):
        ckpt_io.load_pair_state(self.model, self.guide, state["pair"], path)
        load_param_store(self._store_names, state.get("param_store", {}), path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise ckpt_io.CheckpointError(f"{path}: optimizer state does not fit this pair: {e}") from None
        for k, v in state.get("objective", {}).items():
            if k in self.objective.state:
                self.objective.state[k].copy_(v)
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best_val, self.bad_epochs = state["best_val"], state["bad_epochs"]
        self.bad_steps = state.get("bad_steps", 0)
        self.history = list(state["history"])
        torch.random.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        return state

    def _write_metrics(self):
        with ckpt_io.atomic_open(self.folder.file("metrics.jsonl"), "w") as f:
            for row in self.history:
                f.write(json.dumps(ckpt_io.strict_json(row), allow_nan=False) + "\n")

    # -- training ----------------------------------------------------------
    def fit(self, resume=False):
        """Train until ``epochs`` or early stopping; returns the history (one dict per epoch).

        With a ``run_dir`` the folder is locked for the whole fit; ``resume``
        continues from its last committed checkpoint (from the start when the run
        was stopped before its first epoch ended).
        """
        if resume and self.folder is None:
            raise ValueError("resume needs the run_dir of the run to continue")
        if self.folder is None:
            self._fit()
            return self.history
        world = self.world  # rank 0 holds the folder; the others get what it reads and its errors
        world.on_main(lambda: self.folder.lock() and None)
        try:
            opened = world.on_main(lambda: self._open_folder(resume))
            if opened is not None:
                self._apply_state(*opened)
                world.on_main(self._write_metrics)  # the committed epochs' log, also when the kill came before it
            world.on_main(self._write_config)
            self._fit()
        finally:
            if world.is_main:
                self.folder.unlock()
        return self.history

    def _open_folder(self, resume):
        """``(state, path)`` of the last checkpoint to resume from, or None to start afresh (rank 0)."""
        if resume:
            self.folder.clean()
            if self.folder.has_checkpoint():  # a run killed before its first epoch starts over
                path = self.folder.checkpoint("last")
                return ckpt_io.load(path), path
            return None
        if self.folder.has_checkpoint():
            raise RunFolderError(f"{self.folder.path} already holds a run; resume it or choose another run_dir")
        return None

    def _write_config(self):
        """``config.json`` for the command line when the run folder has none: what is known of the pair and
        the data -- the configuration given, with importable references to the programs where it names none."""
        path = self.folder.file("config.json")
        if os.path.exists(path):
            return
        cfg = dict(self.config)
        for role, fn in (("model", self.model), ("guide", self.guide)):
            cfg.setdefault(role, importable_reference(fn))
        ckpt_io.write_json(path, cfg)

    def _fit(self):
        alone = distributed.local() if self.world.size == 1 else contextlib.nullcontext()  # as it was made
        with alone, self.param_scope(), pyro.validation_enabled(False):
            while self.epoch < self.epochs and not self._should_stop():
                self._train_epoch()

    def evaluate(self, data, **kwargs):
        """:func:`evaluate_elbo` of this run's pair on ``data``, inside the run's param store."""
        with self.param_scope():
            return evaluate_elbo(self.model, self.guide, data, device=self.device, **kwargs)

    def _should_stop(self):
        return self.patience is not None and self.bad_epochs >= self.patience

    def learning_rate(self, epoch):
        """Adam's learning rate in epoch ``epoch`` (0-based): ``lr * lr_decay ** max(0, epoch + 1 - lr_decay_after)``.

        A function of the epoch alone, so a resumed run steps with the rates of
        the uninterrupted one.
        """
        return self.lr * self.lr_decay ** max(0, epoch + 1 - self.lr_decay_after)

    def _train_epoch(self):
        epoch, world = self.epoch, self.world
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.batching == "mixed":
            batches = self.train_split.mixed_batch_indices(self.batch_size, generator)
        else:
            batches = [[(rows, 1.0)] for rows in self.train_split.batch_indices(self.batch_size, generator,
                                                                                 shuffle=True)]
        draws = generator  # dynamic binarization continues the shuffling stream on one process
        if world.size > 1:  # per-rank streams for the latent draws and the binarization, reseeded each epoch
            torch.manual_seed(distributed.rank_seed(self.seed, epoch, world.rank))
            draws = torch.Generator().manual_seed(distributed.rank_seed(self.seed, epoch, world.rank, stream=1))
        sums, seen, start = {}, 0, time.perf_counter()
        bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                   disable=not (self.progress and world.is_main), dynamic_ncols=True)
        self.step_fn.recheck()
        skipped = 0
        for parts in batches:
            self.objective.set_progress(epoch, self.global_step)
            stats = self._mixed_step(parts, draws)
            if not self._finite_step(stats):
                skipped += 1
                self._diverging(f"epoch {epoch + 1}, step {self.global_step + 1}")
                self.global_step += 1
                bar.update(1)
                continue
            self.optimizer.step()
            self.global_step += 1
            b = sum(len(rows) for rows, _ in parts)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b
            seen += b
            if bar.n % 10 == 0:
                bar.set_postfix(elbo=f"{sums['elbo'] / seen:.2f}" if "elbo" in sums else None,
                                ex_s=f"{seen / (time.perf_counter() - start):.0f}")
            bar.update(1)
        bar.close()
        train_time = time.perf_counter() - start
        row = {"epoch": epoch + 1, "step": self.global_step, "lr": self.learning_rate(epoch),
               **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()},
               "examples_per_s": seen / train_time, "train_seconds": train_time, "skipped_steps": skipped}
        if self.val_split is not None:
            row["val_elbo"] = evaluate_elbo(self.model, self.guide, self.val_split, device=self.device,
                                            seed=self.seed)
            if not math.isfinite(row["val_elbo"]):
                raise DivergenceError(f"the validation ELBO of epoch {epoch + 1} is non-finite ({row['val_elbo']}): "
                                      f"training diverged; the last good checkpoint is kept. {self._advice()}")
        if not all(torch.isfinite(p).all() for p in self.params):
            raise DivergenceError(f"the parameters are not finite after epoch {epoch + 1}; the last good checkpoint "
                                  f"is kept. {self._advice()}")
        improved = self._record(row)
        self.epoch += 1
        self.history.append(row)
        if self.progress and world.is_main:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if self.folder is not None:
            world.on_main(lambda: self._commit(improved))

    def _commit(self, improved):
        """Rank 0: this epoch's checkpoint and the metrics log."""
        self.folder.commit(self._state(), self.epoch, improved, self.best_val)
        self._write_metrics()

    def _mixed_step(self, parts, draws):
        """One SVI step on ``[(rows, weight), ...]``: ``.grad`` and the stats are the weighted sums over the parts."""
        if len(parts) == 1 and parts[0][1] == 1.0:
            return self._step(parts[0][0], draws)
        total, stats = [None] * len(self.params), {}
        for rows, weight in parts:
            part = self._step(rows, draws)
            total = [t if p.grad is None else (weight * p.grad if t is None else t + weight * p.grad)
                     for t, p in zip(total, self.params)]
            for k, v in part.items():
                stats[k] = stats.get(k, 0.0) + weight * v
        for p, g in zip(self.params, total):
            p.grad = g
        return stats

    def _step(self, index, draws):
        """One SVI step on the global batch ``index``: this rank's share, gradients averaged over the ranks.

        A rank left without data (a last batch smaller than the number of ranks)
        runs one datum at weight 0, so that every rank takes part in the same collective.
        """
        world = self.world
        rows = world.shard_rows(index)
        share = len(rows) / len(index)
        batch = self.train_split.materialize(rows if len(rows) else index[:1], draws).to(self.device)
        stats = self.step_fn(batch)
        if world.size == 1:
            return stats
        return world.average_gradients(self.params, stats, share)

    def _finite_step(self, stats):
        """True when the step's loss statistics and its gradient norm (clipped to ``clip_norm``) are finite."""
        if not all(bool(torch.isfinite(v).all()) for v in stats.values()):
            return False
        grads = [p.grad for p in self.params if p.grad is not None]
        if self.clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
        else:
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        return bool(torch.isfinite(norm))

    def _diverging(self, where):
        self.bad_steps += 1
        if self.bad_steps >= self.max_bad_steps:
            raise DivergenceError(f"{self.bad_steps} SVI steps had a non-finite loss or gradient (the last at {where}) "
                                  f"and were skipped; training stopped and the last good checkpoint is kept. "
                                  f"{self._advice()}")

    def _advice(self):
        return (f"Try a smaller learning rate (now {self.lr:g})" + (", or --clip-norm" if self.clip_norm is None
                                                                     else "") + ", and check the data")

    def _record(self, row):
        """Update early-stopping bookkeeping; True when this epoch is the best so far."""
        score = row.get("val_elbo", row.get("train_elbo", -math.inf))
        if score > self.best_val:
            self.best_val, self.bad_epochs = score, 0
            return True
        if row["epoch"] > self.ignore_before_epoch:
            self.bad_epochs += 1
        return False


def load_param_store(store_params, saved, path="checkpoint"):
    """Copy a checkpoint's param-store values into the run's store tensors ``{name: unconstrained tensor}``."""
    unknown = sorted(set(saved) - set(store_params))
    if unknown:
        raise ckpt_io.CheckpointError(f"{path} holds parameters {unknown[:5]} that this pair does not have")
    missing = sorted(set(store_params) - set(saved))
    if missing:
        raise ckpt_io.CheckpointError(f"{path} lacks the pair's parameters {missing[:5]}")
    with torch.no_grad():
        for name, value in saved.items():
            store_params[name].copy_(value)
