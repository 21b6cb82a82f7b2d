"""The SVI step, eager or recorded as one graph.

An eager step runs the pair through Pyro's effect handlers every time; on a
small network that Python work costs as much as the network itself (see
BENCHMARKS.md). A recorded step runs the pair once per *key* under ``make_fx``
to record the forward *and* backward pass (``torch.autograd.grad``, traced
through the autograd engine) as one graph of ATen ops, then replays that graph:
Pyro, the distributions and the autograd engine leave the hot path, and random
draws stay random because the graph holds the sampling ops themselves. The
backward comes from the autograd engine, not ``torch.func.grad``: functorch's
grad transform decomposes some fused ops before they are recorded
(``binary_cross_entropy_with_logits``, the Bernoulli likelihood, becomes about
a dozen elementwise passes over the decoder's output), where the engine keeps
each op and its own derivative formula, as an eager step runs them.

The graph's inputs are every trained tensor wherever the pair keeps it -- the
parameters of its ``nn.Module`` s, ``PyroModule`` parameters (``PyroParam``),
parameters of modules registered with ``pyro.module`` inside plain functions,
bare ``pyro.param`` s of Pyro's parameter store -- plus the modules' buffers,
the objective's scheduled scalars and the batch. While the step is recorded
each tensor is swapped in for the graph's input at every place that holds it
(the module's parameter slot and the param store's entry), so both ways of
reading a parameter see the same input.

The key of a recorded graph is everything the graph cannot see change: the
batch's shapes, dtypes, devices and which keyword fields are None, and the
``training`` flag of every module (``eval()`` switches dropout off). A new key
is recorded and checked against an eager step from the same random state of
every device (same loss, same gradients); the check runs again at the start of
each epoch (:meth:`StepFunction.recheck`). When recording fails or the check
fails, the step falls back to eager with one warning naming the cause:
value-dependent control flow, a step that updates a buffer in place (batch
norm's running statistics) or writes the param store (a decaying-average
baseline), or the recording error itself. With ``timed=True`` the recorded
and the eager step are also timed on the first batch of a key (and again at
each recheck) and the faster is kept. That is off by default: the choice is
made on wall-clock times of a few steps, so where the two are within ~10% of
each other it is a coin toss on a busy machine, and a run whose epochs switch
between graph and eager loses bitwise reproducibility (the two round
differently), e.g. a resumed run no longer equals an uninterrupted one.

Modes: ``"eager"``; ``"graph"`` (the default: the recorded graph replayed by
TorchScript's executor, or by the FX interpreter if TorchScript is
unavailable); ``"inductor"`` (compiled by ``torch.compile``: fastest per step,
tens of seconds to compile).
"""

import gc
import time
import warnings

import pyro
import torch
from torch import nn

from pyrovae.infer.trace import forked_rng
from pyrovae.util import error_line

MODES = ("eager", "graph", "inductor")


class _Slots:
    """Every place that holds a trained tensor or a buffer: module slots and param-store names, by tensor."""

    def __init__(self, params, modules):
        store = pyro.get_param_store()
        by_id = {id(p): i for i, p in enumerate(params)}
        self.params = list(params)
        self.param_holders = [[] for _ in params]  # (module, attr) per param
        self.store_names = [[] for _ in params]
        for module in modules:
            for attr, p in module._parameters.items():
                if p is not None and id(p) in by_id:
                    self.param_holders[by_id[id(p)]].append((module, attr))
        for name, p in store._params.items():
            if id(p) in by_id:
                self.store_names[by_id[id(p)]].append(name)
        self.buffers, self.buffer_holders = [], []
        seen = {}
        for module in modules:
            for attr, b in module._buffers.items():
                if b is None:
                    continue
                if id(b) not in seen:
                    seen[id(b)] = len(self.buffers)
                    self.buffers.append(b)
                    self.buffer_holders.append([])
                self.buffer_holders[seen[id(b)]].append((module, attr))
        self.modules = modules

    def swap(self, params, buffers):
        """Put ``params`` and ``buffers`` in every holder; returns the undo list."""
        store = pyro.get_param_store()
        undo = []
        for value, holders, names in zip(params, self.param_holders, self.store_names):
            for module, attr in holders:
                undo.append((module._parameters, attr, module._parameters[attr]))
                module._parameters[attr] = value
            for name in names:
                undo.append((store._params, name, store._params[name]))
                store._params[name] = value
        for value, holders in zip(buffers, self.buffer_holders):
            for module, attr in holders:
                undo.append((module._buffers, attr, module._buffers[attr]))
                module._buffers[attr] = value
        return undo

    @staticmethod
    def restore(undo):
        for mapping, key, value in reversed(undo):
            mapping[key] = value


def owning_modules(params, roots=()):
    """Every ``nn.Module`` that holds one of ``params`` in its own parameter slots.

    The modules below ``roots`` are searched first; modules a plain function
    registers with ``pyro.module`` are found among all live modules.
    """
    wanted = {id(p) for p in params}
    found, seen = [], set()

    def take(module):
        if id(module) not in seen and any(id(p) in wanted for p in module._parameters.values() if p is not None):
            found.append(module)
        seen.add(id(module))

    for root in roots:
        for module in root.modules():
            take(module)
    covered = {id(p) for m in found for p in m._parameters.values() if p is not None}
    if wanted - covered:
        with warnings.catch_warnings():  # isinstance() wakes deprecated module attributes of some libraries
            warnings.simplefilter("ignore")
            live = [obj for obj in gc.get_objects() if isinstance(obj, nn.Module)]
        for obj in live:
            if id(obj) not in seen:
                take(obj)
    return found


class StepFunction:
    """``step(batch) -> stats``: computes the loss and sets ``.grad`` on ``params`` (the caller steps the optimizer).

    ``module`` is ``objective(model, guide)``; ``params`` the tensors the
    optimizer updates (module parameters and param-store parameters).
    ``timed=True`` times the recorded graph against the eager step on the
    first batch of each key and keeps the faster (see the module doc for why
    it is off by default).
    """

    def __init__(self, module, params, mode="graph", timed=False):
        if mode not in MODES:
            raise ValueError(f"unknown step mode {mode!r}; expected one of {MODES}")
        self.module = module
        self.objective = module.objective
        self.params = list(params)
        self.mode = mode
        self.reason = None  # why the step runs eagerly, when it fell back
        self.timed = timed  # keep the faster of the recorded and the eager step (not reproducible run to run)
        self._graphs = {}
        self._verify = set()
        roots = [m for m in (module.model, module.guide) if isinstance(m, nn.Module)]
        self._slots = _Slots(self.params, owning_modules(self.params, roots) + _buffer_modules(roots))

    def _fall_back(self, why):
        warnings.warn(f"pyrovae: SVI steps run eagerly because {why}", stacklevel=3)
        self.mode, self.reason = "eager", why

    def recheck(self):
        """Check every recorded graph against an eager step again on its next use (the SVI run calls this each epoch)."""
        self._verify = set(self._graphs)

    def key(self, batch):
        """What a recorded graph cannot see change: the batch's layout and every module's training flag."""
        fields = [("x", tuple(batch.x.shape), batch.x.dtype, batch.x.device)]
        fields += [(k, None) if v is None else (k, tuple(v.shape), v.dtype, v.device)
                   for k, v in sorted(batch.kwargs.items())]
        return tuple(fields), tuple(m.training for m in self._slots.modules)

    def __call__(self, batch):
        if self.mode == "eager":
            return self._eager(batch)
        key = self.key(batch)
        entry = self._graphs.get(key)
        if entry is None or key in self._verify:
            self._verify.discard(key)
            entry, stats = self._record_and_check(batch, entry)  # this step's gradients are the eager step's
            if entry is not None:
                self._graphs[key] = entry
            return stats
        if entry.use_eager:
            return self._eager(batch)
        with torch.no_grad():
            grads, stats = entry.graph.run(self._flat_inputs(batch))
        for p, g in zip(self.params, grads):
            p.grad = g
        return stats

    def _eager(self, batch):
        loss, stats = self.objective.loss(self.module.model, self.module.guide, batch.x, **batch.kwargs)
        for p in self.params:
            p.grad = None
        loss.backward()
        return {k: v.detach() for k, v in stats.items()}

    def _flat_inputs(self, batch):
        """Parameters, buffers, the objective's scheduled scalars and the batch, as one flat tuple."""
        names = sorted(k for k, v in batch.kwargs.items() if v is not None)
        return (*(p.detach() for p in self.params), *self._slots.buffers, *self.objective.state.values(), batch.x,
                *(batch.kwargs[k] for k in names))

    def _loss_and_grads(self, batch_layout, *flat):
        """The step as a function of flat tensors: returns (*gradients, *stats)."""
        n_p, n_b, n_s = len(self.params), len(self._slots.buffers), len(self.objective.state)
        buffers = flat[n_p:n_p + n_b]
        state = dict(zip(self.objective.state, flat[n_p + n_b:n_p + n_b + n_s]))
        data = flat[n_p + n_b + n_s:]
        x, kwargs = data[0], {**batch_layout, **dict(zip(sorted(k for k, v in batch_layout.items() if v is not None),
                                                          data[1:]))}
        objective = self.objective
        params = tuple(p.detach().requires_grad_() for p in flat[:n_p])
        undo = self._slots.swap(params, buffers)
        saved = objective.state
        objective.state = state
        try:
            with torch.enable_grad():
                loss, stats = objective.loss(self.module.model, self.module.guide, x, **kwargs)
        finally:
            objective.state = saved
            self._slots.restore(undo)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        self._stat_names = list(stats)
        return (*grads, *(v.detach() for v in stats.values()))

    def _record_and_check(self, batch, entry):
        """Record (unless ``entry`` holds a graph to verify), check against an eager step, time both.

        Returns ``(entry, stats)`` with the eager step's gradients set on the parameters; ``entry`` is None
        when the step falls back to eager.
        """
        from torch.fx.experimental.proxy_tensor import make_fx

        # the pair's structure is found by a run of its own (on a forked random state): never inside the graph
        self.objective.structure(self.module.model, self.module.guide, batch.x, **batch.kwargs)
        args = self._flat_inputs(batch)
        layout = {k: (None if v is None else True) for k, v in batch.kwargs.items()}
        store = pyro.get_param_store()
        try:
            with forked_rng(), pyro.validation_enabled(False):  # value checks cannot be recorded
                if entry is None:
                    fn = make_fx(lambda *flat: self._loss_and_grads(layout, *flat))(*args)
                    fn = torch.compile(fn) if self.mode == "inductor" else _script(fn, args)
                    entry = _Entry(_Graph(fn, len(self.params), self._stat_names))
        except Exception as e:  # recording is an optimisation: any failure means eager
            self._fall_back(_cause(e))
            return None, self._eager(batch)
        rng = _rng_state()
        with torch.no_grad():
            grads, stats = entry.graph.run(args)
        after = _rng_state()
        _set_rng_state(rng)
        buffers_before = [b.clone() for b in self._slots.buffers]
        store_before = dict(store._params)
        eager_stats = self._eager(batch)
        _set_rng_state(after)
        changed = [name for name, old, new in zip(self._buffer_names(), buffers_before, self._slots.buffers)
                   if not torch.equal(old, new)]
        if changed:
            self._fall_back(f"the step updates buffers in place ({', '.join(changed[:3])}; e.g. batch norm's running "
                            "statistics), which a recorded graph cannot carry")
            return None, eager_stats
        if {k: id(v) for k, v in store._params.items()} != {k: id(v) for k, v in store_before.items()}:
            self._fall_back("the step writes Pyro's param store (e.g. a decaying-average baseline), which a recorded "
                            "graph cannot carry")
            return None, eager_stats
        expected = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        for name, g, e in zip(self._param_names(), grads, expected):
            if not (g - e).norm() <= _gradient_tolerance(e, expected):
                self._fall_back(f"the recorded step's gradient for {name} differs from the eager step's (the pair's "
                                "Python control flow depends on tensor values, or on state outside the step's inputs)")
                return None, eager_stats
        entry.use_eager = self.timed and self._eager_is_faster(batch, entry, args)
        return entry, eager_stats

    def _eager_is_faster(self, batch, entry, args, repeats=3):
        """Time both steps on this batch (random state restored, gradients discarded); True if eager wins."""
        saved = [p.grad for p in self.params]
        with forked_rng():
            graph_t = min(_timed(lambda: entry.graph.run(args)) for _ in range(repeats))
            eager_t = min(_timed(lambda: self._eager(batch)) for _ in range(repeats))
        for p, g in zip(self.params, saved):
            p.grad = g
        return eager_t < graph_t

    def _param_names(self):
        names = []
        for i, (holders, store_names) in enumerate(zip(self._slots.param_holders, self._slots.store_names)):
            if store_names:
                names.append(repr(store_names[0]))
            elif holders:
                module, attr = holders[0]
                names.append(f"{type(module).__name__}.{attr}")
            else:
                names.append(f"parameter {i}")
        return names

    def _buffer_names(self):
        return [f"{type(h[0][0]).__name__}.{h[0][1]}" for h in self._slots.buffer_holders]


class _Entry:
    def __init__(self, graph):
        self.graph, self.use_eager = graph, False


class _Graph:
    """A recorded step: flat inputs -> (gradients in parameter order, stats dict)."""

    def __init__(self, fn, n_params, stat_names):
        self.fn, self.n_params, self.stat_names = fn, n_params, stat_names

    def run(self, flat_inputs):
        out = self.fn(*flat_inputs)
        return out[:self.n_params], dict(zip(self.stat_names, out[self.n_params:]))


def _buffer_modules(roots):
    return [m for root in roots for m in root.modules() if any(b is not None for b in m._buffers.values())]


def _gradient_tolerance(e, expected, rtol=1e-3):
    """How far a recorded gradient may lie from the eager one ``e`` (one of ``expected``, all the step's gradients).

    Graph and eager step sum in different orders, so a gradient's float32
    rounding error scales with the terms that flow through the backward pass,
    not with its own norm: a gradient that is a small difference of large terms
    (q(y|x) of an enumerated pair under DiCE, whose cost per value of y is
    hundreds of nats) differs from rounding alone by a growing fraction of its
    own norm as training shrinks it (M2 of benchmarks/svi_step.py: 1.5e-5 after
    50 steps, 9e-5 after 750, spikes of 2.4e-4). The tolerance is ``rtol``
    times the larger of its own norm and its share of the whole gradient's
    norm, sqrt(numel / total numel) * ||all gradients||; a recorded gradient
    wrong by a fraction f of its own norm (value-dependent control flow, a
    stale constant: f of order 1) is caught unless f * ||e|| < rtol * share.
    """
    total = torch.sqrt(sum(t.pow(2).sum() for t in expected))
    share = total * (e.numel() / sum(t.numel() for t in expected)) ** 0.5
    return rtol * torch.maximum(e.norm(), share) + 1e-6


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _rng_state():
    state = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


_KNOWN_CAUSES = (
    ("_local_scalar_dense", "the step reads tensor values in Python (value-dependent control flow: .item(), "
                            "one_hot, a tensor used as a bool, a value-checking distribution)"),
    ("setup_context", "the step calls a custom autograd.Function that torch.func cannot record (Pyro's contraction "
                      "of sites enumerated in the model is one)"),
)


def _cause(e):
    """One line naming why recording failed, without torch's internals."""
    text = str(e)
    for marker, cause in _KNOWN_CAUSES:
        if marker in text:
            return cause
    return error_line(e)[:200]


def _script(graph, args):
    """Replay ``graph`` with TorchScript's executor (lower per-op cost than the FX interpreter)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.trace(graph, args, check_trace=False, strict=False)
    except Exception:  # TorchScript missing or unable to trace: the FX graph runs as it is
        return graph
