"""Reading a (model, guide) pair through Pyro's own traces.

Everything pyrovae computes -- bounds, gradients, estimators, diagnostics,
posterior predictive draws -- starts from one run of the pair made the way
Pyro's estimators make it (``pyro.infer.enum.get_importance_trace``): the
guide is traced, the model is traced with the guide's draws replayed into it
(``poutine.trace`` / ``poutine.replay``), subsample sites are pruned, and each
site's log-density is computed by ``Trace.compute_log_prob`` /
``Trace.compute_score_parts``, i.e. with Pyro's ``scale_and_mask``: a masked
entry is replaced by zero (``torch.where``), so an invalid value under a mask
costs nothing, and ``poutine.scale`` and subsampled plates scale as in Pyro.

Two features of Pyro change what one run is:

- **particles**: with ``num_particles=K`` both programs run under an outer
  ``pyro.plate("particles", K)`` left of every plate of the pair (Pyro's
  ``vectorize_particles``), so each latent carries K independent draws;
- **enumeration**: sites marked ``infer={"enumerate": "parallel"}`` (e.g. by
  ``pyro.infer.config_enumerate``) are enumerated as ``TraceEnum_ELBO`` does:
  the guide under ``EnumMessenger(first_available_dim)`` left of the particle
  dim, the model under a second ``EnumMessenger`` continuing the allocation, so
  a discrete site the guide does not sample can be enumerated in the model.

The pair contract: ``model(x, **kw)`` and ``guide(x, **kw)`` put every datum
under ``pyro.plate("data", ...)``; the model scores the data at one or more
observed sites inside that plate; every latent site of the model is sampled by
the guide under the same name or enumerated in the model. :func:`check_pair`
names what breaks it.
"""

from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.infer.tracegraph_elbo import TrackNonReparam
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.util import prune_subsample_sites, site_is_factor, site_is_subsample
from pyro.util import check_site_shape

DATA_PLATE = "data"
PARTICLE_PLATE = "particles"


class PairError(ValueError):
    """A model/guide pair that breaks the pair contract, or asks for something pyrovae cannot do with it."""


# -- reading one site ---------------------------------------------------------
def is_sample(site):
    """A sample site other than a plate's subsample site."""
    return site["type"] == "sample" and not site_is_subsample(site)


def is_deterministic(site):
    """A ``pyro.deterministic`` site: it records a value and scores nothing."""
    return bool(site["infer"].get("_deterministic"))


def is_observed(site):
    """An observed sample site that scores data (``obs=``, or ``pyro.factor``), not a deterministic record."""
    return is_sample(site) and site["is_observed"] and not is_deterministic(site)


def is_latent(site):
    return is_sample(site) and not site["is_observed"]


def is_enumerated(site):
    """Enumerated in this run (``infer={"enumerate": "parallel"}`` under an ``EnumMessenger``)."""
    return site["infer"].get("_enumerate_dim") is not None


def is_reparameterized(site):
    """Drawn by ``rsample``: its gradient flows through the value (pathwise), no score-function term."""
    return bool(getattr(site["fn"], "has_rsample", False)) and not is_enumerated(site)


def frame(site, name):
    """The plate frame ``name`` around ``site``, or None."""
    for f in site["cond_indep_stack"]:
        if f.name == name:
            return f
    return None


def data_dim(site):
    """The (negative) dim of the ``"data"`` plate at ``site``; PairError naming the site when it is outside."""
    f = frame(site, DATA_PLATE)
    if f is None or f.dim is None:
        raise PairError(f"site {site['name']!r} is not inside pyro.plate({DATA_PLATE!r}, ...): pyrovae needs "
                        "every latent and observed site to be local to the data plate (one value per datum)")
    return f.dim


def datum_scale(site):
    """The factor a subsampled data plate puts on ``site``'s log-density: full size / subsample size (else 1)."""
    f = frame(site, DATA_PLATE)
    if f is None or not f.full_size or f.full_size == f.size:
        return 1.0
    return f.full_size / f.size


def latent_sites(trace):
    return {name: s for name, s in trace.nodes.items() if is_latent(s)}


def observed_sites(trace):
    return {name: s for name, s in trace.nodes.items() if is_observed(s)}


# -- running a pair -------------------------------------------------------------
def trace_program(fn, *args, **kwargs):
    """One run of a Pyro program as a Pyro ``Trace`` without subsample sites (no log-densities computed)."""
    return prune_subsample_sites(poutine.trace(fn).get_trace(*args, **kwargs))


def max_plate_nesting(model, guide, *args, **kwargs):
    """The number of batch dims the pair's plates use, found as Pyro's ``ELBO`` guesses it.

    The pair is run once without enumeration, blocked, without gradients and on
    a forked random state (so the draws of the run that follows do not shift);
    with ``guide=None`` the model runs alone (its latents drawn from the prior).
    """
    return pair_structure(model, guide, *args, **kwargs).nesting


@dataclass(frozen=True)
class PairStructure:
    """What one unenumerated run tells about a pair: its plate nesting, whether it marks sites for
    enumeration, and whether its guide draws non-reparameterized sites it does not enumerate."""

    nesting: int
    enumerated: bool
    score_function: bool


def pair_structure(model, guide, *args, **kwargs):
    """:class:`PairStructure` from one run of the pair (as :func:`max_plate_nesting` runs it)."""
    with torch.no_grad(), poutine.block(), forked_rng():
        traces = []
        if guide is not None:
            traces.append(trace_program(guide, *args, **kwargs))
            traces.append(trace_program(poutine.replay(model, trace=traces[0]), *args, **kwargs))
        else:
            traces.append(trace_program(model, *args, **kwargs))
    sites = [s for tr in traces for s in tr.nodes.values() if is_sample(s)]
    dims = [-f.dim for s in sites for f in s["cond_indep_stack"] if f.vectorized]
    marked = [s for s in sites if is_latent(s) and s["infer"].get("enumerate") == "parallel"]
    score = guide is not None and any(
        not getattr(s["fn"], "has_rsample", False) and s["infer"].get("enumerate") != "parallel"
        for s in latent_sites(traces[0]).values())
    return PairStructure(max(dims, default=0), bool(marked), score)


@dataclass
class PairTrace:
    """One run of a pair: Pyro's guide and model traces with log-densities and score parts computed.

    ``particle_dim`` is the dim of the outer particle plate (None without one);
    ``num_particles`` its size (1 without one); ``nesting`` the pair's own
    plate nesting.
    """

    guide: object
    model: object
    nesting: int
    num_particles: int = 1
    particle_dim: int = None
    _packed: bool = field(default=False, repr=False)

    @property
    def latents(self):
        """The guide's latent sites, in the guide's order."""
        return latent_sites(self.guide)

    @property
    def observed(self):
        """The model's observed sites (deterministic records left out)."""
        return observed_sites(self.model)

    @property
    def enumerated(self):
        """Names of the enumerated sites, of the guide and of the model."""
        return [name for tr in (self.guide, self.model) for name, s in tr.nodes.items()
                if is_sample(s) and is_enumerated(s)]

    @property
    def model_enumerated(self):
        """Names of the sites enumerated in the model and absent from the guide."""
        return [name for name, s in self.model.nodes.items()
                if is_latent(s) and is_enumerated(s) and name not in self.guide.nodes]

    def pack(self):
        """Packed tensors (``Trace.pack_tensors``) for Pyro's tensor contractions; idempotent."""
        if not self._packed:
            self.guide.pack_tensors()
            self.model.pack_tensors(self.guide.plate_to_symbol)
            self._packed = True
        return self


def trace_pair(model, guide, *args, num_particles=None, nesting=None, track_provenance=False, enumerate=True,
               **kwargs):
    """Trace ``guide``, replay its draws into ``model``, compute every site's log-density and score parts.

    With ``num_particles=K`` both programs run under ``pyro.plate("particles",
    K)`` at dim ``-nesting - 1``; enumerated sites get dims left of it.
    ``nesting`` is the pair's plate nesting (:func:`max_plate_nesting`, run
    once when not given). ``track_provenance`` tags the draws of
    non-reparameterized sites (Pyro's ``TrackNonReparam``) so that each cost
    term knows which of them it depends on (``TraceGraph_ELBO``'s dependency
    tracking). ``enumerate=False`` draws every site, marked for enumeration
    or not (the diagnostics read the guide's draws). Returns a :class:`PairTrace`.
    """
    if nesting is None:
        nesting = max_plate_nesting(model, guide, *args, **kwargs)
    particle_dim = -nesting - 1 if num_particles else None
    first_enum_dim = -nesting - (2 if num_particles else 1)
    enum_guide, enum_model = guide, model
    if enumerate:
        enum_guide = EnumMessenger(first_available_dim=first_enum_dim)(guide)
        enum_model = EnumMessenger()(model)  # continues the guide's allocation of enumeration dims
    if num_particles:
        particles = pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim)
        enum_guide, enum_model = particles(enum_guide), particles(enum_model)
    with TrackNonReparam() if track_provenance else _nothing():
        guide_trace = poutine.trace(enum_guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(enum_model, trace=guide_trace)).get_trace(*args, **kwargs)
    guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_score_parts()
    return PairTrace(guide_trace, model_trace, nesting, num_particles or 1, particle_dim)


def forked_rng():
    """``torch.random.fork_rng`` over the CPU and every CUDA device in use: a block whose draws leave no trace."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- the contract ------------------------------------------------------------
@dataclass
class PairInfo:
    """What :func:`check_pair` learnt about a pair: its sites and how pyrovae will differentiate it."""

    latents: list
    observed: list
    enumerated: list
    score_function: list
    nesting: int
    subsampled: bool


def check_pair(model, guide, x, *args, **kwargs):
    """Check a pair against the contract on one batch, with Pyro's validation on.

    Raises :class:`PairError` naming the site and the fix: a model latent that
    the guide does not sample (and that is not enumerated), a guide site the
    model does not have, no observed site (a ``pyro.deterministic`` site does not
    score data), sites outside the ``data`` plate, data outside the support of a
    likelihood, a batch shape that disagrees with the plates, sequential
    enumeration. Returns a :class:`PairInfo`.
    """
    with torch.no_grad(), poutine.block(), pyro.validation_enabled(True):
        nesting = max_plate_nesting(model, guide, x, *args, **kwargs)
        pt = trace_pair(model, guide, x, *args, nesting=nesting, **kwargs)
    _check_enumeration(pt)
    _check_names(pt)
    observed = _check_observed(pt)
    for tr in (pt.guide, pt.model):
        for name, site in tr.nodes.items():
            if is_sample(site) and not is_deterministic(site) and not site_is_factor(site):
                try:
                    check_site_shape(site, nesting)
                except ValueError as e:
                    raise PairError(f"site {name!r}: {e}") from None
            if is_sample(site) and (is_latent(site) or is_observed(site)):
                data_dim(site)
    return PairInfo(latents=list(pt.latents), observed=observed,
                    enumerated=pt.enumerated,
                    score_function=[n for n, s in pt.latents.items() if not is_reparameterized(s)
                                    and not is_enumerated(s)],
                    nesting=nesting,
                    subsampled=any(datum_scale(s) != 1.0 for s in pt.observed.values()))


def _check_enumeration(pt):
    for tr in (pt.guide, pt.model):
        for name, site in tr.nodes.items():
            how = site["infer"].get("enumerate") if is_latent(site) else None
            if how == "sequential":
                raise PairError(f"site {name!r} asks for sequential enumeration; pyrovae enumerates in parallel "
                                "only: mark it infer={'enumerate': 'parallel'}")
            if how == "parallel" and site["infer"].get("num_samples") is not None:
                raise PairError(f"site {name!r} asks for local parallel sampling (num_samples); pyrovae draws "
                                "several samples through its particles instead: remove num_samples")


def _check_names(pt):
    guide_latents = set(pt.latents)
    model_latents = {n for n, s in latent_sites(pt.model).items() if not is_enumerated(s)}
    only_model = sorted(model_latents - guide_latents)
    only_guide = sorted(guide_latents - set(latent_sites(pt.model)) - set(observed_sites(pt.model)))
    if only_model or only_guide:
        raise PairError(
            f"the model's and the guide's latent sample sites differ: model only {only_model}, guide only "
            f"{only_guide}. Every latent site of the model must be sampled by the guide under the same name, "
            "observed (obs=...; was its observed value passed to the model?), or enumerated in the model "
            "(infer={'enumerate': 'parallel'}); the guide samples latent sites of the model only")
    observed_in_guide = sorted(guide_latents & set(observed_sites(pt.model)))
    if observed_in_guide:
        raise PairError(f"the guide samples {observed_in_guide}, which the model observes: a guide samples "
                        "latent sites only")


def _check_observed(pt):
    observed = pt.observed
    if not observed:
        records = sorted(n for n, s in pt.model.nodes.items() if is_sample(s) and is_deterministic(s))
        hint = (f" (pyro.deterministic sites {records} record values, they score nothing; a likelihood needs "
                "obs=data)") if records else ""
        raise PairError("the model has no observed site: it must score the data, e.g. "
                        f"pyro.sample('x', likelihood, obs=x){hint}")
    for name, site in observed.items():
        if site_is_factor(site):
            continue
        support = site["fn"].support
        ok = support.check(site["value"])
        mask = site["mask"]
        if isinstance(mask, torch.Tensor):
            ok = ok | ~mask  # masked entries are never scored
        if mask is not False and not bool(torch.all(ok)):
            raise PairError(_support_message(name, site))
    return list(observed)


def _support_message(name, site):
    from pyrovae.infer.distributions import base_distribution

    base = type(base_distribution(site["fn"])).__name__
    hint = (" (it needs binary 0/1 data: binarize the data or use a Gaussian likelihood)"
            if base == "Bernoulli" else "")
    return (f"observed site {name!r}: the data holds values outside the support of the model's {base} "
            f"likelihood{hint}")


# -- the modules of a pair -----------------------------------------------------
def pair_modules(model, guide):
    """The ``nn.Module`` s a pair is made of: the programs themselves, or the objects of bound methods
    (Pyro's example style ``vae.model`` / ``vae.guide``), without repeats."""
    return [m for _, m in named_pair_modules(model, guide)]


def named_pair_modules(model, guide):
    """``[(role, module)]``: ``"model"`` and ``"guide"``, or ``"pair"`` for one module holding both programs."""
    owners = [fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None) for fn in (model, guide)]
    owners = [o if isinstance(o, torch.nn.Module) else None for o in owners]
    if owners[0] is not None and owners[0] is owners[1]:
        return [("pair", owners[0])]
    return [(role, m) for role, m in zip(("model", "guide"), owners) if m is not None]


class evaluation_mode:
    """``with evaluation_mode(model, guide):`` the pair's modules in eval mode (dropout off), restored after."""

    def __init__(self, model, guide):
        self.modules = [m for root in pair_modules(model, guide) for m in root.modules()]

    def __enter__(self):
        self.saved = [m.training for m in self.modules]
        for m in self.modules:
            m.training = False
        return self

    def __exit__(self, *exc):
        for m, flag in zip(self.modules, self.saved):
            m.training = flag
        return False
