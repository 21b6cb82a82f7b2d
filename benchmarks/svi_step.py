"""Time per SVI step of pyrovae's default training step against hand-written PyTorch and Pyro's own SVI.

Rows (every method of a row trains its own copy of the same networks, from the
same initial weights, on the same batches, with Adam at lr 1e-3):

- ``vae``: the built-in VAE (784-400-20 MLP encoder and decoder, Bernoulli
  likelihood, one reparameterised draw, closed-form Gaussian KL): pyrovae's
  default step, its eager step, and the same ELBO hand-written in PyTorch;
- ``function``: Pyro's VAE tutorial pair (plain ``model(x)`` / ``guide(x)``
  functions with ``pyro.module``, flat 784 data, 784-400-50 softplus MLPs,
  Bernoulli with probabilities): pyrovae's default step with the matching
  estimator (``ELBO(analytic_kl=False)``) against
  ``pyro.infer.SVI(model, guide, pyro.optim.Adam, Trace_ELBO())``;
- ``m2``: the semi-supervised M2 model (Kingma et al. 2014, arXiv 1406.5298)
  written as Pyro's ss-vae example writes it, on unlabelled batches: y ~
  OneHotCategorical enumerated in the guide (``config_enumerate``, expanded),
  z | x, y Gaussian, 784-500-{10, 50} MLPs; pyrovae's ``ELBO()`` against
  ``SVI(..., TraceEnum_ELBO(max_plate_nesting=1))``;
- ``iwae5``, ``iwae50``: the built-in VAE's networks trained with
  ``IWAE(num_particles=K)``: pyrovae's default step, its eager step, and the
  K-sample bound hand-written in PyTorch.

Every pyrovae row also times the step with ``timed=True`` (the recorded graph
and the eager step timed against each other on the first batch of a key, the
faster kept). The pyrovae methods are ``SVIRun`` s; a step is
``run.step_fn(batch)`` followed by ``run.optimizer.step()``. Before each timed
block the default and the timed step are rechecked, as ``SVIRun`` does at each
epoch (verified against eager and, with ``timed=True``, timed again on one
batch; outside the timed block), and the mode each chose is recorded. Methods
alternate in blocks (the order rotates every repeat); figures are medians over
blocks of the mean wall seconds and mean CPU seconds (``time.process_time``)
per step. Pyro's validation is off for every method.

    OMP_NUM_THREADS=1 python benchmarks/svi_step.py [--steps 200] [--repeats 5] [--rows vae,function,m2,iwae5,iwae50]
"""

import argparse
import contextlib
import datetime
import json
import math
import statistics

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from torch import nn

from pyrovae.data import Batch
from pyrovae.guides import GaussianGuide
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.iwae import IWAE
from pyrovae.infer.svi import SVIRun
from pyrovae.models import VAE
from pyrovae.nn.likelihoods import Bernoulli
from pyrovae.nn.nets import MLPDecoder, MLPEncoder
from pyrovae.nn.priors import StandardNormal

from common import environment, load_average, time_block_cpu

SHAPE = (1, 28, 28)
LR = 1e-3
ROWS = ("vae", "function", "m2", "iwae5", "iwae50")


# -- pyrovae's step and Pyro's SVI as methods --------------------------------------------------------------------
class PyrovaeMethod:
    """One ``SVIRun``'s step: ``run.step_fn(batch)`` then the optimizer."""

    def __init__(self, model, guide, objective, data, batch_size, mode="graph", timed=None):
        self.run = SVIRun(model, guide, data, objective=objective, lr=LR, batch_size=batch_size, step_mode=mode,
                          progress=False)
        if timed is not None:  # None: StepFunction's default
            self.run.step_fn.timed = timed
        self.decisions = []

    def scope(self):
        return self.run.param_scope()

    def __call__(self, batch):
        self.run.step_fn(batch)
        self.run.optimizer.step()

    def decide(self, batch):
        """Recheck (verify, and with ``timed`` time graph against eager, on ``batch``), step once, record the mode."""
        step_fn = self.run.step_fn
        step_fn.recheck()
        with self.scope():
            self(batch)
        self.decisions.append(self.mode())

    def mode(self):
        """``"graph"`` or ``"eager"`` (the mode the step replays), and why."""
        step_fn = self.run.step_fn
        if step_fn.mode == "eager":
            return {"mode": "eager", "why": step_fn.reason or "eager asked for"}
        entries = list(step_fn._graphs.values())
        if entries and all(e.use_eager for e in entries):
            return {"mode": "eager", "why": "recorded, checked, and slower than eager on the key's first batch"}
        if not step_fn.timed:
            return {"mode": "graph", "why": "recorded and checked against eager (timed=False: not timed)"}
        return {"mode": "graph", "why": "recorded, checked, and faster than eager on the key's first batch"}


class PyroSVIMethod:
    """``pyro.infer.SVI(model, guide, pyro.optim.Adam, loss).step(x)`` in a param store of its own."""

    def __init__(self, model, guide, loss):
        self.state = {"params": {}, "constraints": {}}
        self.svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), loss)

    def scope(self):
        return pyro.get_param_store().scope(self.state)

    def __call__(self, batch):
        self.svi.step(batch.x, **batch.kwargs)


class Handwritten:
    def __init__(self, step, modules):
        self.step = step
        self.optimizer = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=LR)

    def scope(self):
        return contextlib.nullcontext()

    def __call__(self, batch):
        loss = self.step(batch.x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


# -- row (a) and (d): the built-in VAE, ELBO and IWAE ---------------------------------------------------------------
def vae_nets(seed=1, latent_dim=20):
    torch.manual_seed(seed)
    return MLPEncoder(SHAPE, latent_dim, (400,)), MLPDecoder(SHAPE, latent_dim, (400,))


def builtin_pair():
    enc, dec = vae_nets()
    return VAE(dec, StandardNormal(20), Bernoulli()), GaussianGuide(enc)


def handwritten_elbo(encoder, decoder):
    """The ELBO of the built-in VAE written directly in PyTorch: one draw, closed-form KL, per datapoint."""

    def loss(x):
        loc, log_scale = encoder(x)
        scale = log_scale.exp()
        z = loc + scale * torch.randn_like(loc)
        rec = -F.binary_cross_entropy_with_logits(decoder(z), x, reduction="sum")
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum() - log_scale.sum()
        return -(rec - kl) / x.shape[0]

    return loss


def handwritten_iwae(encoder, decoder, k):
    """The K-sample bound of the built-in VAE (Burda et al. 2015, eq. 8) in PyTorch, K draws vectorized."""
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def loss(x):
        loc, log_scale = encoder(x)
        eps = torch.randn(k, *loc.shape)
        z = loc + log_scale.exp() * eps  # [K, B, D]
        log_px = -F.binary_cross_entropy_with_logits(decoder(z), x.expand(k, *x.shape), reduction="none").sum(
            (-3, -2, -1))
        log_pz = (-0.5 * z.pow(2) - half_log_2pi).sum(-1)
        log_qz = (-0.5 * eps.pow(2) - log_scale - half_log_2pi).sum(-1)
        log_w = log_px + log_pz - log_qz
        return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()

    return loss


def vae_row(data, batch_size):
    enc_ref, dec_ref = vae_nets()
    return {
        "default": PyrovaeMethod(*builtin_pair(), ELBO(), data, batch_size),
        "timed": PyrovaeMethod(*builtin_pair(), ELBO(), data, batch_size, timed=True),
        "eager": PyrovaeMethod(*builtin_pair(), ELBO(), data, batch_size, mode="eager"),
        "handwritten": Handwritten(handwritten_elbo(enc_ref, dec_ref), [enc_ref, dec_ref]),
    }


def iwae_row(k):
    def row(data, batch_size):
        enc_ref, dec_ref = vae_nets()
        return {
            "default": PyrovaeMethod(*builtin_pair(), IWAE(num_particles=k), data, batch_size),
            "timed": PyrovaeMethod(*builtin_pair(), IWAE(num_particles=k), data, batch_size, timed=True),
            "eager": PyrovaeMethod(*builtin_pair(), IWAE(num_particles=k), data, batch_size, mode="eager"),
            "handwritten": Handwritten(handwritten_iwae(enc_ref, dec_ref, k), [enc_ref, dec_ref]),
        }

    return row


# -- row (b): Pyro's VAE tutorial, functions with pyro.module ---------------------------------------------------------
class TutorialEncoder(nn.Module):
    def __init__(self, z_dim=50, hidden_dim=400):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)

    def forward(self, x):
        hidden = F.softplus(self.fc1(x.reshape(-1, 784)))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class TutorialDecoder(nn.Module):
    def __init__(self, z_dim=50, hidden_dim=400):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, 784)

    def forward(self, z):
        return torch.sigmoid(self.fc21(F.softplus(self.fc1(z))))


def tutorial_pair(z_dim=50):
    """Pyro's VAE tutorial pair: two plain functions that register their networks with ``pyro.module``."""
    torch.manual_seed(2)
    encoder, decoder = TutorialEncoder(z_dim), TutorialDecoder(z_dim)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = x.new_zeros(x.shape[0], z_dim), x.new_ones(x.shape[0], z_dim)
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1), obs=x.reshape(-1, 784))

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    return model, guide


def function_row(data, batch_size):
    return {
        "default": PyrovaeMethod(*tutorial_pair(), ELBO(analytic_kl=False), data, batch_size),
        "timed": PyrovaeMethod(*tutorial_pair(), ELBO(analytic_kl=False), data, batch_size, timed=True),
        "eager": PyrovaeMethod(*tutorial_pair(), ELBO(analytic_kl=False), data, batch_size, mode="eager"),
        "pyro_svi": PyroSVIMethod(*tutorial_pair(), Trace_ELBO()),
    }


# -- row (c): M2 in Pyro's ss-vae style, y enumerated in the guide ----------------------------------------------------
class MLP(nn.Module):
    """Inputs broadcast against each other and concatenated, then ``sizes[0] -> ... -> sizes[-1]`` (softplus)."""

    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, *inputs):
        shape = torch.broadcast_shapes(*(t.shape[:-1] for t in inputs))
        h = torch.cat([t.expand(*shape, t.shape[-1]) for t in inputs], -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = F.softplus(h)
        return h


class SSVAE(nn.Module):
    """M2 (Kingma, Rezende, Mohamed & Welling 2014, arXiv 1406.5298) as Pyro's ss-vae example writes it.

    p(y) = Cat(1/10), p(z) = N(0, I), p(x | y, z) = Bernoulli(decoder(z, y));
    q(y | x) = Cat(encoder_y(x)), q(z | x, y) = N(encoder_z(x, y)).
    """

    def __init__(self, classes=10, z_dim=50, hidden=500):
        super().__init__()
        self.classes, self.z_dim = classes, z_dim
        self.encoder_y = MLP([784, hidden, classes])
        self.encoder_z = MLP([784 + classes, hidden, 2 * z_dim])
        self.decoder = MLP([z_dim + classes, hidden, 784])

    def model(self, xs, ys=None):
        pyro.module("ss_vae", self)
        batch = xs.shape[0]
        with pyro.plate("data", batch):
            zs = pyro.sample("z", dist.Normal(xs.new_zeros(batch, self.z_dim), 1.0).to_event(1))
            ys = pyro.sample("y", dist.OneHotCategorical(logits=xs.new_zeros(batch, self.classes)), obs=ys)
            logits = self.decoder(zs, ys)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=xs)

    def guide(self, xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                ys = pyro.sample("y", dist.OneHotCategorical(logits=self.encoder_y(xs)))
            loc, log_scale = self.encoder_z(xs, ys).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def m2_pair():
    torch.manual_seed(3)
    ssvae = SSVAE()
    return ssvae.model, config_enumerate(ssvae.guide, "parallel", expand=True)


def m2_row(data, batch_size):
    return {
        "default": PyrovaeMethod(*m2_pair(), ELBO(), data, batch_size),
        "timed": PyrovaeMethod(*m2_pair(), ELBO(), data, batch_size, timed=True),
        "eager": PyrovaeMethod(*m2_pair(), ELBO(), data, batch_size, mode="eager"),
        "pyro_svi": PyroSVIMethod(*m2_pair(), TraceEnum_ELBO(max_plate_nesting=1)),
    }


ROW_BUILDERS = {"vae": (vae_row, SHAPE), "function": (function_row, (784,)), "m2": (m2_row, (784,)),
                "iwae5": (iwae_row(5), SHAPE), "iwae50": (iwae_row(50), SHAPE)}
REFERENCE = {"vae": "handwritten", "function": "pyro_svi", "m2": "pyro_svi", "iwae5": "handwritten",
             "iwae50": "handwritten"}


# -- timing ------------------------------------------------------------------------------------------------------------
def time_row(name, steps, repeats, batch_size, warmup):
    builder, shape = ROW_BUILDERS[name]
    gen = torch.Generator().manual_seed(0)
    batches = [Batch((torch.rand(batch_size, *shape, generator=gen) < 0.13).float()) for _ in range(steps)]
    data = torch.cat([b.x for b in batches])
    torch.manual_seed(0)
    methods = builder(data, batch_size)
    for method in methods.values():  # warm-up: the graph's recording, check and first timing happen here
        with method.scope():
            time_block_cpu(method, batches[:warmup])
    names = list(methods)
    wall, cpu = {m: [] for m in names}, {m: [] for m in names}
    for r in range(repeats):
        for m in names[r % len(names):] + names[:r % len(names)]:
            method = methods[m]
            if m in ("default", "timed"):
                method.decide(batches[0])  # as SVIRun at each epoch: verify and time again, outside the block
            with method.scope():
                w, c = time_block_cpu(method, batches)
            wall[m].append(w)
            cpu[m].append(c)
    median_wall = {m: statistics.median(v) for m, v in wall.items()}
    median_cpu = {m: statistics.median(v) for m, v in cpu.items()}
    ref = REFERENCE[name]
    ratios = {}
    for m in names:
        for other in (ref, "eager"):
            if m != other and m in ("default", "timed"):
                ratios[f"{m}/{other}"] = {"wall": median_wall[m] / median_wall[other],
                                          "cpu": median_cpu[m] / median_cpu[other],
                                          "wall_per_block": [a / b for a, b in zip(wall[m], wall[other])],
                                          "cpu_per_block": [a / b for a, b in zip(cpu[m], cpu[other])]}
    return {
        "s_per_step_wall": median_wall,
        "s_per_step_cpu": median_cpu,
        "ratios": ratios,
        "blocks_wall": wall,
        "blocks_cpu": cpu,
        "default_mode_per_block": [d["mode"] for d in methods["default"].decisions],
        "default_mode": methods["default"].mode(),
        "timed_mode_per_block": [d["mode"] for d in methods["timed"].decisions],
        "timed_mode": methods["timed"].mode(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per method")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per method before the blocks")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {','.join(ROWS)}")
    parser.add_argument("--steps-iwae50", type=int, default=None,
                        help="steps per timed block of the iwae50 row (default: --steps)")
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; expected some of {list(ROWS)}")
    pyro.enable_validation(False)
    load_before = load_average()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    results = {}
    for name in rows:
        steps = args.steps_iwae50 if name == "iwae50" and args.steps_iwae50 else args.steps
        results[name] = {"steps_per_block": steps,
                         **time_row(name, steps, args.repeats, args.batch_size, args.warmup)}
    print(json.dumps({
        "benchmark": "svi_step",
        "started": started,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "reference": REFERENCE,
        "rows": results,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        **environment(),
    }, indent=2))


if __name__ == "__main__":
    main()
