"""Importance weights of a pair, per particle and per datapoint.

For draws z_k ~ q(z | x) (K particles of :func:`pyrovae.infer.trace.trace_pair`)

    log w_k(x_i) = log p(x_i, z_k) - log q(z_k | x_i),

as a ``[K, B]`` tensor: each site's log-density (Pyro's, masked and scaled) is
summed over every dim but the particle and ``"data"`` dims. A subsampled data
plate scales every site by N / B; that factor is divided out, so the weights
are per datum. Both the IWAE objective (:mod:`pyrovae.infer.iwae`) and the
K=5000 log-likelihood estimate (:mod:`pyrovae.evaluate.likelihood`) use them.

**Enumerated sites** are summed out exactly inside each particle. With y
enumerated in the guide and the other latents z^y drawn from q(z | x, y) for
every value of y,

    w_k = sum_y p(x, y, z_k^y) / q(z_k^y | x, y),

an unbiased estimate of p(x) in which q(y | x) cancels; a site enumerated in
the model alone enters as log sum_y p(x, y, z_k). When every enumerated site
is local to the data plate the sum is one log-sum-exp over the enumeration
dims (plain tensor operations, so a training step that uses it can be
recorded); an enumerated site inside a nested plate goes through Pyro's
plated tensor contraction (``pyro.ops.contract.contract_to_tensor``), which
sums it per plate element, with masks inside the sum and one common
``poutine.scale`` outside it, as in ``TraceEnum_ELBO``.
"""

from collections import OrderedDict

import torch
from pyro.distributions.util import scale_and_mask
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing

from pyrovae.infer.trace import (
    DATA_PLATE,
    PARTICLE_PLATE,
    PairError,
    data_dim,
    datum_scale,
    is_enumerated,
    is_latent,
    is_observed,
    is_sample,
)


def per_datum(t, site, pt, keep_enum=False):
    """``t`` (a tensor over ``site``'s batch dims) summed over every dim but the particle and data dims: ``[K or 1, B or 1]``.

    ``keep_enum=True`` keeps the enumeration dims left of the particle dim: ``[*enum, K or 1, B or 1]``.
    """
    n = -pt.particle_dim if pt.particle_dim is not None else pt.nesting
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.dim() > n and not keep_enum:
        raise PairError(f"site {site['name']!r} has batch shape {list(t.shape)} with more dims than its plates "
                        f"allow: declare the datum's dims as event dims with .to_event(...)")
    total = max(n, t.dim())
    t = t.reshape((1,) * (total - t.dim()) + tuple(t.shape))
    keep = list(range(total - n)) + [total + data_dim(site)]
    if pt.particle_dim is not None:
        keep.append(total - n)
    other = [d for d in range(total) if d not in keep]
    if other:
        t = t.sum(other)
    return t if pt.particle_dim is not None else t.unsqueeze(-2)


def weighted_sites(pt):
    """The terms of log w: ``(site, +1)`` for every scored model site, ``(site, -1)`` for every sampled guide site."""
    terms = [(s, 1.0) for s in pt.model.nodes.values() if is_observed(s) or is_latent(s)]
    terms += [(s, -1.0) for s in pt.guide.nodes.values() if is_latent(s) and not is_enumerated(s)]
    return terms


def log_weights(pt, batch_size):
    """log w ``[K, B]`` of a :class:`~pyrovae.infer.trace.PairTrace` (differentiable); see the module doc."""
    shape = (pt.num_particles, batch_size)
    enumerated = [s for tr in (pt.guide, pt.model) for s in tr.nodes.values() if is_sample(s) and is_enumerated(s)]
    if any(_nested(s) for s in enumerated):
        return _contracted_log_weights(pt).expand(shape)
    total = torch.zeros(())
    for site, sign in weighted_sites(pt):
        total = total + sign * per_datum(site["log_prob"], site, pt, keep_enum=True) / datum_scale(site)
    if total.dim() > 2:  # enumerated sites, all local to the data plate: a log-sum-exp over their dims
        total = total.logsumexp(tuple(range(total.dim() - 2)))
    return total.expand(shape)


def _nested(site):
    """True for a site inside a plate other than the data and particle plates."""
    return any(f.vectorized and f.name not in (DATA_PLATE, PARTICLE_PLATE) for f in site["cond_indep_stack"])


def _contracted_log_weights(pt):
    """log w by Pyro's plated sum-product over the enumerated dims (masks inside, the common scale outside)."""
    pt.pack()
    tree, scales = OrderedDict(), set()
    for site, sign in weighted_sites(pt):
        ordinal = frozenset(pt.model.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)
        lp = packed.scale_and_mask(site["packed"]["unscaled_log_prob"], mask=site["packed"]["mask"])
        tree.setdefault(ordinal, []).append(lp if sign > 0 else packed.neg(lp))
        scales.add(_scalar_scale(site))
    if len(scales) > 1:
        raise PairError(f"enumerated pairs need one common poutine.scale on every site (as TraceEnum_ELBO); "
                        f"found scales {sorted(scales)}")
    sum_dims = {s["infer"]["_enumerate_symbol"] for tr in (pt.guide, pt.model) for s in tr.nodes.values()
                if s["type"] == "sample" and is_enumerated(s)}
    target = {pt.model.plate_to_symbol[DATA_PLATE]}
    if pt.particle_dim is not None:
        target.add(pt.model.plate_to_symbol[PARTICLE_PLATE])
    dim_to_size = {d: n for terms in tree.values() for t in terms for d, n in zip(t._pyro_dims, t.shape)}
    result = contract_to_tensor(tree, sum_dims, target_ordinal=frozenset(target),
                                ring=LogRing(dim_to_size=dim_to_size))
    result = packed.unpack(result, pt.model.symbol_to_dim)
    some_site = next(iter(pt.observed.values()))
    scale = scales.pop() / datum_scale(some_site)
    return per_datum(scale_and_mask(result, scale), some_site, pt)


def _scalar_scale(site):
    scale = site["scale"]
    if isinstance(scale, torch.Tensor):
        if scale.dim():
            raise PairError(f"site {site['name']!r}: enumerated pairs take only a scalar poutine.scale")
        scale = float(scale)
    return float(scale)
