"""Looking inside a site's distribution: its factorised base, its mean, its KL against another.

Pyro wraps a site's distribution in ``Independent`` (``.to_event``), masks and
expansions (plates); none of them changes the values, so the mean and the
per-coordinate distribution can be read from the wrapped one.
"""

from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from torch.distributions import Independent, kl_divergence

VALUE_PRESERVING = (Independent, MaskedDistribution, ExpandedDistribution)


def base_distribution(fn):
    """``fn`` without its value-preserving wrappers (Independent, masks, expansion)."""
    while isinstance(fn, VALUE_PRESERVING):
        fn = fn.base_dist
    return fn


def factorised(fn):
    """The distribution of ``fn``'s independent scalar coordinates, or None if ``fn`` does not factorise."""
    base = base_distribution(fn)
    return base if base.event_shape == () else None


def distribution_mean(fn):
    """The mean of ``fn``, looking through value-preserving wrappers; None when it has none."""
    while True:
        try:
            return fn.mean
        except NotImplementedError:
            if not isinstance(fn, VALUE_PRESERVING):
                return None
            fn = fn.base_dist


def kl_or_log_ratio(q, p, value, closed_form=True):
    """KL(q || p) in closed form where torch knows it (and ``closed_form``), else log q(value) - log p(value).

    The second is the one-draw Monte Carlo estimate of the KL when ``value`` ~ q.
    Whether the closed form is unbiased for a site of a pair is the caller's
    question (:func:`pyrovae.infer.elbo.closed_form_kl_sites`).
    """
    if closed_form:
        try:
            return kl_divergence(q, p)
        except NotImplementedError:
            pass
    return q.log_prob(value) - p.log_prob(value)


def site_mean(site):
    """E[z] of a trace site's distribution, shaped like its value; ValueError if it has none."""
    mean = distribution_mean(site["fn"])
    if mean is None:
        raise ValueError(f"latent site {site['name']!r}: its distribution "
                         f"{type(base_distribution(site['fn'])).__name__} has no mean")
    return mean.expand_as(site["value"])
