"""The SVI step, eager or captured as one graph.

An eager step runs the pair through Pyro's effect handlers every time; on a
small network that Python work costs as much as the network itself (see
BENCHMARKS.md). A captured step runs the pair once per batch shape under
``make_fx`` to record the forward *and* backward pass (``torch.func.grad``) as
one graph of ATen ops, then replays that graph: Pyro, the distributions and the
autograd engine are no longer on the hot path, and random draws stay random
because the graph holds the sampling ops themselves.

Capturing assumes that the pair's Python control flow does not depend on
tensor values (true of the usual VAE pairs; a model that branches on a sampled
value is not). Every new capture is checked once against an eager step from the
same random state -- same loss, same gradients -- and the step falls back to
eager with a warning when they differ, when capture fails, or when the pair
has parameters outside its ``nn.Module``s (``pyro.param`` / ``pyro.module`` in
plain functions).

Modes: ``"eager"``; ``"graph"`` (the default: the captured graph replayed by
TorchScript's executor, or by the FX interpreter if TorchScript is unavailable);
``"inductor"`` (the captured step compiled by ``torch.compile``: fastest per
step, tens of seconds to compile).
"""

import warnings

import torch
from torch.func import functional_call, grad

MODES = ("eager", "graph", "inductor")


class StepFunction:
    """``step(x) -> stats``: computes the loss and sets ``.grad`` on ``params`` (the caller steps the optimizer).

    ``module`` is ``objective(model, guide)``; ``params`` the list of tensors the
    optimizer updates.
    """

    def __init__(self, module, params, mode="graph"):
        if mode not in MODES:
            raise ValueError(f"unknown step mode {mode!r}; expected one of {MODES}")
        self.module = module
        self.objective = module.objective
        self.params = list(params)
        self.mode = mode
        self._graphs = {}
        self._names = dict(module.named_parameters())
        if mode != "eager" and {id(p) for p in self.params} != {id(p) for p in self._names.values()}:
            self._fall_back("the pair has parameters outside its nn.Modules (pyro.param or pyro.module "
                            "in plain functions)")

    def _fall_back(self, why):
        warnings.warn(f"pyrovae: using eager SVI steps because {why}", stacklevel=3)
        self.mode = "eager"

    def __call__(self, x):
        if self.mode == "eager":
            return self._eager(x)
        key = tuple(x.shape), x.dtype, x.device
        graph = self._graphs.get(key)
        if graph is None:
            captured = self._capture_and_check(x)
            if captured is None:
                return self._eager(x)
            graph, grads, stats = captured
            self._graphs[key] = graph
        else:
            with torch.no_grad():
                grads, stats = graph.run(self._flat_inputs(x))
        for p, g in zip(self._names.values(), grads):
            p.grad = g
        return stats

    def _eager(self, x):
        loss, stats = self.objective.loss(self.module.model, self.module.guide, x)
        for p in self.params:
            p.grad = None
        loss.backward()
        return stats

    def _flat_inputs(self, x):
        """Parameters, buffers, the objective's scheduled scalars and the batch, as one flat tuple."""
        return (*(p.detach() for p in self._names.values()), *(b for _, b in self.module.named_buffers()),
                *self.objective.state.values(), x)

    def _loss_and_grads(self, *flat):
        """The step as a function of flat tensors: returns (*gradients, *stats)."""
        module, objective = self.module, self.objective
        n_p, n_b = len(self._names), len(dict(module.named_buffers()))
        params = dict(zip(self._names, flat[:n_p]))
        buffers = dict(zip(dict(module.named_buffers()), flat[n_p:n_p + n_b]))
        state = dict(zip(objective.state, flat[n_p + n_b:-1]))
        x = flat[-1]

        def loss_fn(p):
            saved = objective.state
            objective.state = state
            try:
                loss, stats = functional_call(module, (p, buffers), (x,), kwargs={"with_stats": True})
            finally:
                objective.state = saved
            return loss, stats

        grads, stats = grad(loss_fn, has_aux=True)(params)
        self._stat_names = list(stats)
        return (*grads.values(), *stats.values())

    def _capture_and_check(self, x):
        from torch.fx.experimental.proxy_tensor import make_fx

        args = self._flat_inputs(x)
        rng = torch.random.get_rng_state()  # capture draws random numbers: it must not shift the stream
        try:
            fn = make_fx(self._loss_and_grads)(*args)
            fn = torch.compile(fn) if self.mode == "inductor" else _script(fn, args)
            graph = _Graph(fn, len(self._names), self._stat_names)
            torch.random.set_rng_state(rng)
            with torch.no_grad():
                grads, stats = graph.run(args)
            after = torch.random.get_rng_state()
        except Exception as e:  # capture is an optimisation: any failure means eager
            torch.random.set_rng_state(rng)
            self._fall_back(f"capturing the step failed ({type(e).__name__}: {e})")
            return None
        torch.random.set_rng_state(rng)
        self._eager(x)
        torch.random.set_rng_state(after)
        for (name, p), g in zip(self._names.items(), grads):
            expected = p.grad if p.grad is not None else torch.zeros_like(p)
            if not (g - expected).norm() <= 1e-4 * expected.norm() + 1e-6:
                self._fall_back(f"the captured step's gradient for {name!r} differs from the eager one "
                                "(the pair's control flow may depend on tensor values)")
                torch.random.set_rng_state(rng)  # the eager step that follows redraws the same numbers
                return None
        return graph, grads, stats


class _Graph:
    """A captured step: flat inputs -> (gradients in parameter order, stats dict)."""

    def __init__(self, fn, n_params, stat_names):
        self.fn, self.n_params, self.stat_names = fn, n_params, stat_names

    def run(self, flat_inputs):
        out = self.fn(*flat_inputs)
        return out[:self.n_params], dict(zip(self.stat_names, out[self.n_params:]))


def _script(graph, args):
    """Replay ``graph`` with TorchScript's executor (lower per-op cost than the FX interpreter)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.trace(graph, args, check_trace=False, strict=False)
    except Exception:  # TorchScript missing or unable to trace: the FX graph runs as it is
        return graph
