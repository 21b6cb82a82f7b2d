"""Reading a (model, guide) pair through Pyro's effect handlers.

Everything pyrovae computes -- bounds, estimators, diagnostics -- starts from one
run of the pair: the guide is run on ``x`` and its latent draws are replayed into
the model. :func:`run_pair` does this with a single light messenger (no
``poutine.trace`` graph bookkeeping), because it sits on the hot path of every
SVI step. :func:`check_pair` does the careful, slow checks once.

The pair contract (see the README): ``model(x)`` and ``guide(x)`` put the batch
under ``pyro.plate("data", B)``; latent sites are the guide's sample sites and
are local to the data plate; the model's observed sites score the data.
"""

from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

DATA_PLATE = "data"
PARTICLE_PLATE = "particles"


class PairError(ValueError):
    """A model/guide pair that breaks the pair contract."""


@dataclass
class Site:
    """One sample site of a run: its distribution, value and the plates around it."""

    name: str
    fn: object
    value: torch.Tensor
    is_observed: bool
    scale: object
    mask: object
    frames: tuple

    def log_prob(self):
        """log fn(value), masked and scaled as Pyro would score it, over the site's batch shape."""
        lp = self.fn.log_prob(self.value)
        if self.mask is not None and self.mask is not True:
            lp = lp * self.mask if isinstance(self.mask, torch.Tensor) else lp * float(self.mask)
        if not (isinstance(self.scale, (int, float)) and self.scale == 1.0):
            lp = lp * self.scale
        return lp

    def plate_dim(self, name):
        """The (negative) dim of plate ``name`` around this site, or None."""
        for frame in self.frames:
            if frame.name == name:
                return frame.dim
        return None


class _PairRecorder(Messenger):
    """Records every non-subsample sample site; replays latent values given in ``replay``."""

    def __init__(self, replay=None):
        super().__init__()
        self.replay = replay
        self.sites = {}

    def _pyro_sample(self, msg):
        if self.replay is not None and not msg["is_observed"]:
            value = self.replay.get(msg["name"])
            if value is not None:
                msg["value"] = value.value
                msg["done"] = True

    def _pyro_post_sample(self, msg):
        if site_is_subsample(msg):
            return
        name = msg["name"]
        if name in self.sites:
            raise PairError(f"sample site {name!r} is used twice in one run of the program")
        self.sites[name] = Site(name, msg["fn"], msg["value"], msg["is_observed"], msg["scale"],
                                msg["mask"], tuple(msg["cond_indep_stack"]))


def run_program(fn, *args, replay=None, **kwargs):
    """Run a Pyro program once and return its sample sites as ``{name: Site}``."""
    with _PairRecorder(replay) as recorder:
        fn(*args, **kwargs)
    return recorder.sites


def latent_sites(sites):
    return {name: s for name, s in sites.items() if not s.is_observed}


def observed_sites(sites):
    return {name: s for name, s in sites.items() if s.is_observed}


def run_pair(model, guide, x, *args, num_particles=None, particle_dim=None, **kwargs):
    """Run ``guide(x)``, replay its latent draws into ``model(x)``.

    With ``num_particles=K`` both run under an outer ``pyro.plate("particles", K)``
    at ``particle_dim`` (left of every plate of the pair), so each latent site
    carries K independent draws along that dim. Returns ``(guide_sites, model_sites)``.
    """
    if num_particles is None:
        guide_sites = latent_sites(run_program(guide, x, *args, **kwargs))
        return guide_sites, run_program(model, x, *args, replay=guide_sites, **kwargs)
    with pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim):
        guide_sites = latent_sites(run_program(guide, x, *args, **kwargs))
        return guide_sites, run_program(model, x, *args, replay=guide_sites, **kwargs)


def max_plate_nesting(model, guide, x, *args, **kwargs):
    """The number of batch dims the pair's plates use (Pyro's ``max_plate_nesting``).

    With ``guide=None`` the model is run alone (its latents drawn from the prior).
    """
    with torch.no_grad(), poutine.block():
        if guide is None:
            sites = list(run_program(model, x, *args, **kwargs).values())
        else:
            guide_sites, model_sites = run_pair(model, guide, x, *args, **kwargs)
            sites = [*guide_sites.values(), *model_sites.values()]
    dims = [-f.dim for s in sites for f in s.frames if f.dim is not None]
    return max(dims, default=0)


def check_pair(model, guide, x, *args, **kwargs):
    """Check a pair against the contract once, with Pyro's validation on.

    Raises :class:`PairError` naming the problem: latent sites that the model and
    guide do not share, no observed site, latent sites outside the ``data`` plate.
    Returns the names of the latent sites.
    """
    with torch.no_grad(), poutine.block(), pyro.validation_enabled(True):
        guide_sites, model_sites = run_pair(model, guide, x, *args, **kwargs)
    model_latents = set(latent_sites(model_sites))
    guide_latents = set(guide_sites)
    if model_latents != guide_latents:
        only_model = sorted(model_latents - guide_latents)
        only_guide = sorted(guide_latents - model_latents)
        raise PairError(
            "the model's and the guide's latent sample sites differ: "
            f"model only {only_model}, guide only {only_guide}. "
            "Every latent site of the model must be sampled by the guide under the same name.")
    if not observed_sites(model_sites):
        raise PairError("the model has no observed site: it must score the data, e.g. "
                        "pyro.sample('x', likelihood, obs=x)")
    for name, site in observed_sites(model_sites).items():
        if not bool(torch.all(site.fn.support.check(site.value))):
            base = site.fn
            while hasattr(base, "base_dist"):
                base = base.base_dist
            hint = " (it needs binary 0/1 data: binarize the data or use a Gaussian likelihood)" \
                if type(base).__name__ == "Bernoulli" else ""
            raise PairError(f"observed site {name!r}: the data holds values outside the support of the "
                            f"model's {type(base).__name__} likelihood{hint}")
    for name, site in {**guide_sites, **observed_sites(model_sites)}.items():
        if site.plate_dim(DATA_PLATE) is None:
            raise PairError(f"site {name!r} is not inside pyro.plate({DATA_PLATE!r}, batch_size): "
                            "pyrovae needs every latent and observed site to be local to the data plate")
    return sorted(guide_latents)
