"""The evidence lower bound for any (model, guide) pair, with every gradient estimator Pyro has.

An objective maps one run of the pair on a batch to a scalar loss to minimise
(per datapoint, so the learning rate does not depend on the batch size) and a
dict of statistics. Objectives follow Pyro's module style:
``ELBO()(model, guide)`` is an ``nn.Module`` whose ``parameters()`` are the
pair's and whose ``forward(*args, **kwargs)`` is the loss, so a plain torch
optimizer (or DDP) can drive it.

The ELBO splits into a reconstruction term and a KL term,

    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z)),

and every objective here is a weighting of the two (KL warm-up, beta-VAE,
controlled capacity), so :func:`elbo_terms` returns both values and a
*surrogate* whose gradient is that of E_q[rec - w KL] for a weight w:

- **reparameterized** latents: the pathwise gradient, with the guide's entropy
  term as Pyro's ``ScoreParts`` give it;
- **non-reparameterized** latents (a Bernoulli or Categorical guide site):
  the score-function (REINFORCE) term sum_s grad log q(z_s) * C_s, where C_s
  holds only the cost terms that depend on z_s (``TraceGraph_ELBO``'s
  dependency tracking through Pyro's provenance, summed to z_s's plates) minus
  an optional baseline given as in Pyro (``infer={"baseline": {...}}`` on the
  guide site; Schulman et al. 2015, arXiv 1506.05254; Mnih & Gregor 2014,
  arXiv 1402.0030);
- **enumerated** latents (``infer={"enumerate": "parallel"}``): summed out
  exactly, the bound being Pyro's own ``TraceEnum_ELBO`` computation
  (DiCE, Foerster et al. 2018, arXiv 1802.05098) and the KL part its DiCE
  expectation over the latent terms.

With ``analytic_kl=True`` a site's KL is taken in closed form (scaled and
masked as ``TraceMeanField_ELBO`` does) where torch knows it, the guide site is
reparameterized and not enumerated, and its place in the guide keeps the
closed form unbiased (:func:`closed_form_kl_sites`).
"""

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.infer.tracegraph_elbo import _construct_baseline
from pyro.infer.util import Dice, MultiFrameTensor
from pyro.ops import packed
from pyro.ops.provenance import detach_provenance, get_provenance
from torch import nn
from torch.distributions import kl_divergence

from pyrovae.infer.trace import (
    DATA_PLATE,
    PairError,
    frame,
    is_enumerated,
    is_reparameterized,
    latent_sites,
    pair_structure,
    trace_pair,
)


class Objective:
    """Base class: subclasses define :meth:`loss` ``(model, guide, *args, **kwargs) -> (loss, stats)``.

    ``state`` holds the objective's scheduled scalars (KL weight, capacity) as
    0-dim tensors; the recorded SVI step (:mod:`pyrovae.infer.step`) passes
    them as inputs, so a schedule must change them in place in
    :meth:`set_progress`, never replace them by Python numbers read inside
    :meth:`loss`.
    """

    def __init__(self):
        self.state = {}
        self._structure = {}

    def loss(self, model, guide, *args, **kwargs):
        raise NotImplementedError

    def set_progress(self, epoch, step):
        """Called by the SVI run before each step; schedules (warm-up, capacity) override it."""

    def structure(self, model, guide, *args, **kwargs):
        """The pair's :class:`~pyrovae.infer.trace.PairStructure`, found once per pair (on a forked random state)."""
        key = (_identity(model), _identity(guide))
        if key not in self._structure:
            self._structure[key] = pair_structure(model, guide, *args, **kwargs)
        return self._structure[key]

    def nesting(self, model, guide, *args, **kwargs):
        """The pair's plate nesting (:func:`~pyrovae.infer.trace.max_plate_nesting`), found once per pair."""
        return self.structure(model, guide, *args, **kwargs).nesting

    def __call__(self, model, guide):
        return ObjectiveModule(self, model, guide)


def _identity(fn):
    """A key for a program that is the same for every access to a bound method (``pair.model``)."""
    return (id(fn.__self__), id(fn.__func__)) if hasattr(fn, "__self__") and hasattr(fn, "__func__") else id(fn)


class ObjectiveModule(nn.Module):
    """``objective(model, guide)``: the pair's parameters and the loss as one module."""

    def __init__(self, objective, model, guide):
        super().__init__()
        self.objective = objective
        self.model = model
        self.guide = guide

    def forward(self, *args, with_stats=False, **kwargs):
        loss, stats = self.objective.loss(self.model, self.guide, *args, **kwargs)
        return (loss, stats) if with_stats else loss


def closed_form_kl_sites(guide_sites, model_sites):
    """Latent sites whose KL(q || p) may be taken in closed form given the draws before them.

    Replacing E_q[log p(z_s | pa) - log q(z_s | ...)] by -KL(q(z_s | ...) || p(z_s | pa))
    integrates z_s out with everything the guide drew *before* z_s held fixed
    (the tower rule), so it is unbiased only if the model's distribution at z_s
    depends on nothing drawn *after* z_s in the guide. A site qualifies when
    every latent the model samples before it the guide also samples before it:
    true for every site of a mean-field or top-down guide (the VampPrior
    paper's HVAE: q(z2|x) q(z1|x, z2)), false for z1 of a bottom-up guide with a
    top-down model (the IWAE paper's q(z1|x) q(z2|z1) with p(z2) p(z1|z2)),
    whose KL then stays a Monte Carlo estimate. Both arguments are ordered
    ``{name: site}`` dicts (a trace's sites in the order they ran).
    """
    guide_order = list(guide_sites)
    allowed = set()
    model_before = set()
    for name in model_sites:
        if name not in guide_sites:
            continue
        if model_before <= set(guide_order[:guide_order.index(name)]):
            allowed.add(name)
        model_before.add(name)
    return allowed


def closed_form_kl(q, p):
    """KL(q || p) of two trace sites in closed form, scaled and masked as the guide site; None where torch has none."""
    try:
        kl = kl_divergence(q["fn"], p["fn"])
    except NotImplementedError:
        return None
    return scale_and_mask(kl, q["scale"], q["mask"])


@dataclass
class ELBOTerms:
    """The ELBO's two parts on one batch and a surrogate for their gradients.

    ``reconstruction`` = E_q[log p(x | z)] and ``kl`` = KL(q || p) are batch sums
    averaged over particles (Pyro's scaling included: a subsampled data plate
    makes them estimates of the sums over all ``num_data`` data).
    ``kl_sites`` splits ``kl`` by latent site where the estimator allows it.
    ``num_data`` is the per-datapoint normaliser: the batch size B, or the data
    plate's full size N when the plate is subsampled (``normalizer`` says which).
    """

    reconstruction: torch.Tensor
    kl: torch.Tensor
    num_data: int
    normalizer: str
    kl_sites: dict = field(default_factory=dict)
    _rec_surrogate: torch.Tensor = None
    _kl_surrogate: torch.Tensor = None
    _score_terms: list = field(default_factory=list)

    separable = True  # reconstruction and KL known apart

    @property
    def elbo(self):
        return self.reconstruction - self.kl

    def surrogate(self, kl_weight=1.0):
        """A scalar whose gradient is that of E_q[reconstruction - kl_weight * KL] (w held fixed).

        Its value is not the bound; objectives add it as ``value + (s - s.detach())``.
        """
        total = self._rec_surrogate - kl_weight * self._kl_surrogate
        for score_function, rec_cost, kl_cost, site in self._score_terms:
            cost = rec_cost - kl_weight * kl_cost
            use_baseline, baseline_loss, baseline = _construct_baseline(site["name"], site, cost)
            if use_baseline:
                cost = cost - baseline
                total = total - baseline_loss
            total = total + (score_function * cost.detach()).sum()
        return total


def elbo_terms(pt, analytic_kl=True):
    """:class:`ELBOTerms` of a :class:`~pyrovae.infer.trace.PairTrace` (see the module doc).

    The trace must have been made with ``track_provenance=True`` when the guide
    has non-reparameterized, non-enumerated sites.
    """
    num_data, normalizer = _normaliser(pt)
    if pt.enumerated:
        return _enumerated_terms(pt, num_data, normalizer)
    k = pt.num_particles
    closed = closed_form_kl_sites(pt.latents, latent_sites(pt.model)) if analytic_kl else set()
    costs = []  # (kind, frames, value, surrogate)
    for site in pt.observed.values():
        costs.append(("rec", site["cond_indep_stack"], site["log_prob"], site["log_prob"]))
    kl_sites = {}
    for name, q in pt.latents.items():
        p = pt.model.nodes[name]
        kl = closed_form_kl(q, p) if name in closed and is_reparameterized(q) else None
        if kl is not None:
            costs.append(("kl", q["cond_indep_stack"], kl, kl))
            kl_sites[name] = kl.sum() / k
        else:
            costs.append(("kl", p["cond_indep_stack"], -p["log_prob"], -p["log_prob"]))
            costs.append(("kl", q["cond_indep_stack"], q["log_prob"], _as_tensor(q["score_parts"].entropy_term)))
            kl_sites[name] = (q["log_prob_sum"] - p["log_prob_sum"]) / k
    sums = {kind: sum((c[3].sum() for c in costs if c[0] == kind), torch.zeros(())) for kind in ("rec", "kl")}
    rec = sum((c[2].sum() for c in costs if c[0] == "rec"), torch.zeros(())) / k
    score_terms = _score_terms(pt, costs, k)
    return ELBOTerms(detach_provenance(rec), detach_provenance(sum(kl_sites.values(), torch.zeros(()))),
                     num_data, normalizer, {n: detach_provenance(v) for n, v in kl_sites.items()},
                     detach_provenance(sums["rec"]) / k, detach_provenance(sums["kl"]) / k, score_terms)


def _score_terms(pt, costs, k):
    """(score function, downstream rec cost, downstream KL cost, site) for every non-reparameterized guide site."""
    sites = {n: q for n, q in pt.latents.items() if not is_identically_zero(q["score_parts"].score_function)}
    if not sites:
        return []
    downstream = {n: {"rec": MultiFrameTensor(), "kl": MultiFrameTensor()} for n in sites}
    for kind, frames, value, _ in costs:
        for name in get_provenance(value):
            if name in downstream:
                downstream[name][kind].add((frames, value))
    out = []
    for name, q in sites.items():
        stack = q["cond_indep_stack"]
        rec = _as_tensor(downstream[name]["rec"].sum_to(stack))
        kl = _as_tensor(downstream[name]["kl"].sum_to(stack))
        out.append((detach_provenance(q["score_parts"].score_function) / k, detach_provenance(rec),
                    detach_provenance(kl), q))
    return out


def _as_tensor(value):
    return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))


def _enumerated_terms(pt, num_data, normalizer):
    """Enumerated pairs: each cost's expectation over the guide's enumerated (and sampled) sites, as DiCE.

    Sites enumerated in the guide only: every cost term c at plate ordinal t is
    weighted by the DiCE factors of the guide sites at ordinals within t --
    q(y) for an enumerated site, exp(log q - log q.detach()) for a sampled
    non-reparameterized one -- and summed over every dim (Foerster et al. 2018;
    Pyro's ``Dice``, written with plain tensor operations so that the SVI step
    can be recorded). Sites enumerated in the model: Pyro's own TraceEnum_ELBO
    computation (``_compute_dice_elbo``), its KL part by Pyro's ``Dice``.
    """
    if pt.model_enumerated:
        return _model_enumerated_terms(pt, num_data, normalizer)
    factors = []
    for q in pt.latents.values():
        sf = q["score_parts"].score_function
        if is_enumerated(q):
            factors.append((_ordinal(q), sf))
        elif not is_identically_zero(sf):
            factors.append((_ordinal(q), sf - sf.detach()))
    rec = [(_ordinal(s), _over_plates(s["log_prob"], s)) for s in pt.observed.values()]
    kl = [(_ordinal(q), _over_plates(q["log_prob"], q)) for q in pt.latents.values()]
    kl += [(_ordinal(pt.model.nodes[n]), -_over_plates(pt.model.nodes[n]["log_prob"], pt.model.nodes[n]))
           for n in pt.latents]
    k = pt.num_particles
    rec, kl = _expectation(rec, factors) / k, _expectation(kl, factors) / k
    return ELBOTerms(rec.detach(), kl.detach(), num_data, normalizer, {}, rec, kl, [])


def _ordinal(site):
    return frozenset(f.name for f in site["cond_indep_stack"] if f.vectorized)


def _over_plates(t, site):
    """``t`` expanded to the full size of every plate around ``site`` (an enumerated site's log-density need
    not vary along a plate, yet it counts once per element of it)."""
    frames = [f for f in site["cond_indep_stack"] if f.vectorized]
    n = max([-f.dim for f in frames] + [t.dim()])
    t = t.reshape((1,) * (n - t.dim()) + tuple(t.shape))
    shape = list(t.shape)
    for f in frames:
        shape[f.dim] = f.size
    return t.expand(shape)


def _expectation(costs, factors):
    """sum over costs (ordinal, tensor) of sum_dims [exp(sum of the DiCE factors at ordinals within) * cost]."""
    total = torch.zeros(())
    for ordinal, cost in costs:
        upstream = [f for o, f in factors if o <= ordinal]
        if not upstream:
            total = total + cost.sum()
            continue
        prob = sum(upstream).exp()
        total = total + torch.where(prob > 0, prob * cost, prob.new_zeros(())).sum()  # 0 * -inf is 0 here
    return total


def _model_enumerated_terms(pt, num_data, normalizer):
    """Sites enumerated in the model: Pyro's TraceEnum_ELBO computation for the bound, Pyro's Dice for its KL part."""
    pt.pack()
    model_enum_dims = {pt.model.nodes[n]["infer"]["_enumerate_symbol"] for n in pt.model_enumerated}
    ordering = {name: frozenset(tr.plate_to_symbol[f.name] for f in s["cond_indep_stack"] if f.vectorized)
                for tr in (pt.model, pt.guide) for name, s in tr.nodes.items() if s["type"] == "sample"}
    k = pt.num_particles
    elbo = _compute_dice_elbo(pt.model, pt.guide) / k
    kl_costs = OrderedDict()
    for name, q in pt.latents.items():
        p = pt.model.nodes[name]
        if model_enum_dims & set(p["packed"]["log_prob"]._pyro_dims):
            zero = torch.zeros(())
            return _InseparableTerms(elbo.detach(), zero, num_data, normalizer, {}, elbo, zero, [],
                                     site=name, enumerated=pt.model_enumerated)
        kl_costs.setdefault(ordering[name], []).append(packed.neg(p["packed"]["log_prob"]))
        kl_costs.setdefault(ordering[name], []).append(q["packed"]["log_prob"])
    kl = Dice(pt.guide, ordering).compute_expectation(kl_costs) / k
    rec = elbo + kl
    return ELBOTerms(rec.detach(), kl.detach(), num_data, normalizer, {}, rec, kl, [])


class _InseparableTerms(ELBOTerms):
    """A bound whose KL term cannot be told apart from its likelihood (a latent depends on a site enumerated in
    the model): the ELBO itself is known (held as ``reconstruction``, with ``kl`` 0), its parts and any KL weight
    other than 1 are not."""

    separable = False

    def __init__(self, *args, site, enumerated):
        super().__init__(*args)
        self._site, self._enumerated = site, enumerated

    def surrogate(self, kl_weight=1.0):
        if float(kl_weight) != 1.0:
            raise PairError(f"latent site {self._site!r} depends on sites enumerated in the model "
                            f"({self._enumerated}): its KL cannot be separated from the likelihood, so a KL "
                            "weight (warm-up, beta, capacity) does not apply; use the plain ELBO or IWAE")
        return self._rec_surrogate


def _normaliser(pt):
    """(number, description) to divide batch sums by: B, or N for a subsampled data plate."""
    for site in pt.observed.values():
        f = frame(site, DATA_PLATE)
        if f is not None:
            if f.full_size and f.full_size != f.size:
                return f.full_size, f"data plate size N={f.full_size} (subsampled)"
            return f.size, "batch size"
    raise PairError(f"no observed site is inside pyro.plate({DATA_PLATE!r}, ...)")


class ELBO(Objective):
    """The evidence lower bound (Kingma & Welling 2014, arXiv 1312.6114) for any pair.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)), estimated with
    ``num_particles`` draws vectorized in an outer plate; non-reparameterized
    and enumerated latents are handled as in the module doc. The loss is
    -ELBO per datapoint (see :class:`ELBOTerms` for the normaliser).

    ``warmup`` (epochs) anneals the KL weight (Bowman et al. 2016, arXiv
    1511.06349; Sønderby et al. 2016, arXiv 1602.02282): the training loss is
    -(E_q[log p(x|z)] - w KL) with w = min(1, epoch / warmup), epochs counted
    from 1 as in the VampPrior protocol (Tomczak & Welling 2018, arXiv
    1705.07120). The reported ``elbo`` is always the bound (w = 1);
    ``kl_weight`` is logged beside it.
    """

    def __init__(self, analytic_kl=True, num_particles=1, warmup=0):
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 epochs, got {warmup}")
        super().__init__()
        self.analytic_kl = analytic_kl
        self.num_particles = num_particles
        self.warmup = warmup
        self.state["kl_weight"] = torch.tensor(1.0 if warmup == 0 else 0.0)

    def set_progress(self, epoch, step):
        if self.warmup:
            self.state["kl_weight"].fill_(min(1.0, (epoch + 1) / self.warmup))

    def run(self, model, guide, *args, **kwargs):
        """One :class:`~pyrovae.infer.trace.PairTrace` of the pair, with ``num_particles`` draws."""
        k = self.num_particles
        structure = self.structure(model, guide, *args, **kwargs)
        # dependency tracking only where score-function terms need it (Dice handles enumerated pairs itself)
        track = structure.score_function and not structure.enumerated
        return trace_pair(model, guide, *args, num_particles=k if k > 1 else None, nesting=structure.nesting,
                          track_provenance=track, **kwargs)

    def terms(self, model, guide, *args, **kwargs):
        """:class:`ELBOTerms` of one run of the pair."""
        return elbo_terms(self.run(model, guide, *args, **kwargs), self.analytic_kl)

    def loss(self, model, guide, *args, **kwargs):
        t = self.terms(model, guide, *args, **kwargs)
        w = self.state["kl_weight"]
        n = t.num_data
        value = -(t.reconstruction - w * t.kl) / n
        surrogate = -t.surrogate(w) / n
        stats = {"elbo": t.elbo.detach() / n}
        if t.separable:
            stats.update(reconstruction=t.reconstruction.detach() / n, kl=t.kl.detach() / n)
        if self.warmup:
            stats["kl_weight"] = w.detach().clone()
        return value.detach() + (surrogate - surrogate.detach()), stats
