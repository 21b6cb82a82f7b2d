"""Predictive draws of any pair, with no ``batch_size`` argument asked of anyone.

A posterior predictive draw replays the guide's latent draws into the model
and lets the model *sample* its observed sites instead of scoring the data
(:class:`ResampleObserved`, a ``poutine.uncondition`` limited to the named
sites, so conditioning labels the model observes stay observed). A prior
predictive draw runs the model alone the same way. In both the data ``x``
only give the batch its shape, so a model written as ``model(x)`` -- Pyro's
usual style -- needs nothing more, and the observed site may have another
shape than ``x`` (a model that flattens images). :class:`AtMean` runs a
program at the means of its latent sites (deterministic codes and pictures).
"""

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from pyrovae.infer.distributions import base_distribution, distribution_mean
from pyrovae.infer.trace import PARTICLE_PLATE, data_dim, is_latent, is_observed, trace_program


class ResampleObserved(Messenger):
    """Sample the observed sites ``names`` (every observed site when None) from their distributions."""

    def __init__(self, names=None):
        super().__init__()
        self.names = None if names is None else set(names)

    def _pyro_sample(self, msg):
        if msg["is_observed"] and not msg["infer"].get("_deterministic") and (
                self.names is None or msg["name"] in self.names):
            msg["is_observed"] = False
            msg["infer"]["was_observed"] = True
            msg["infer"]["obs"] = msg["value"]
            msg["value"] = None
            msg["done"] = False


def predictive_trace(model, guide, *args, num_samples, nesting, obs_sites=None, guide_trace=None, **kwargs):
    """The model's trace with ``num_samples`` draws per datum and its observed sites ``obs_sites`` resampled.

    ``guide`` given: the posterior predictive (the guide's draws, or those of
    ``guide_trace`` when given, replayed into the model); ``guide=None``: the
    prior predictive. Draws lie along an outer ``pyro.plate("particles", S)`` at
    dim ``-nesting - 1``.
    """
    resampled = ResampleObserved(obs_sites)(model)
    with pyro.plate(PARTICLE_PLATE, num_samples, dim=-nesting - 1):
        if guide is not None and guide_trace is None:
            guide_trace = trace_program(guide, *args, **kwargs)
        program = resampled if guide is None else poutine.replay(resampled, trace=guide_trace)
        return trace_program(program, *args, **kwargs)


def draws_per_datum(site, nesting):
    """A site's value laid out as ``[S, B, *rest]``: the particle dim first, the data dim second."""
    value = site["value"]
    n_batch = max(value.dim() - len(site["fn"].event_shape), nesting + 1)
    value = value.reshape((1,) * (n_batch + len(site["fn"].event_shape) - value.dim()) + tuple(value.shape))
    particle, datum = n_batch - nesting - 1, n_batch + data_dim(site)
    return value.movedim((particle, datum), (0, 1))


def observed_names(trace):
    """The names of the observed sites of a model trace (deterministic records left out)."""
    return [name for name, site in trace.nodes.items() if is_observed(site)]


class AtMean(Messenger):
    """Sets every latent sample site to the mean of its distribution as the program draws it.

    Sites drawn later condition on these values, so a hierarchical guide's
    q(z1 | x, z2) sees z2 = E[z2 | x]: a run under this handler is deterministic.
    Observed sites and plate subsample sites are left alone. A discrete site is
    refused: its mean (e.g. a Bernoulli's probabilities, or NaN for a
    ``Categorical``) is not a value it can take, so later sites would condition on
    an impossible value. A site without a finite mean is refused too.
    """

    def _pyro_sample(self, msg):
        if not is_latent(msg):
            return
        fn, name = msg["fn"], msg["name"]
        kind = type(base_distribution(fn)).__name__
        if _is_discrete(fn):
            raise ValueError(f"latent site {name!r} is discrete ({kind}): its mean is not a value the site can "
                             "take, so mean_representation cannot run the guide at it; score continuous sites, "
                             "or write a representation_fn of your own")
        mean = distribution_mean(fn)
        if mean is None:
            raise ValueError(f"latent site {name!r}: its distribution {kind} has no mean")
        if not bool(torch.isfinite(mean).all()):
            raise ValueError(f"latent site {name!r}: its distribution {kind} has a mean that is not finite")
        msg["value"] = mean.expand(fn.batch_shape + fn.event_shape)
        msg["done"] = True


def _is_discrete(fn):
    try:
        return bool(fn.support.is_discrete)
    except NotImplementedError:  # a support that depends on parameters and does not say
        return False
