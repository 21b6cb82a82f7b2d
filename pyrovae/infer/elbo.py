"""Training objectives for any (model, guide) pair.

An objective maps one run of the pair on a batch to a scalar loss to minimise
(per datapoint, so the learning rate does not depend on the batch size) and a
dict of statistics. Objectives follow Pyro's module style: ``ELBO()(model, guide)``
is an ``nn.Module`` whose ``parameters()`` are the pair's and whose
``forward(x)`` is the loss, so a plain torch optimizer (or DDP) can drive it.
"""

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import kl_divergence

from pyrovae.infer.trace import max_plate_nesting, observed_sites, run_pair


@dataclass
class ELBOTerms:
    """Batch sums of the ELBO's two parts: E_q[log p(x|z)] and KL(q(z|x) || p(z)) per latent site."""

    reconstruction: torch.Tensor
    kl: dict = field(default_factory=dict)
    batch_size: int = 1

    @property
    def total_kl(self):
        return sum(self.kl.values(), torch.zeros(()))

    @property
    def elbo(self):
        return self.reconstruction - self.total_kl


def _mask_and_scale(value, site):
    """Apply a site's ``poutine.mask`` and ``poutine.scale`` as Pyro applies them to its log-density."""
    if isinstance(site.mask, torch.Tensor):
        value = value * site.mask
    if not (isinstance(site.scale, (int, float)) and site.scale == 1.0):
        value = value * site.scale
    return value


class Objective:
    """Base class: subclasses define :meth:`loss` ``(model, guide, x) -> (loss, stats)``.

    ``state`` holds the objective's scheduled scalars (KL weight, capacity) as
    0-dim tensors; a captured SVI step (:mod:`pyrovae.infer.step`) passes them as
    inputs, so a schedule must change them in :meth:`set_progress`, never
    replace them by Python numbers read inside :meth:`loss`.
    """

    def __init__(self):
        self.state = {}

    def loss(self, model, guide, x):
        raise NotImplementedError

    def set_progress(self, epoch, step):
        """Called by the SVI run before each step; schedules (warm-up, capacity) override it."""

    def __call__(self, model, guide):
        return ObjectiveModule(self, model, guide)


class ObjectiveModule(nn.Module):
    """``objective(model, guide)``: the pair's parameters and the loss as one module."""

    def __init__(self, objective, model, guide):
        super().__init__()
        self.objective = objective
        self.model = model
        self.guide = guide

    def forward(self, x, with_stats=False):
        loss, stats = self.objective.loss(self.model, self.guide, x)
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
    whose KL then stays a Monte Carlo estimate.
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


class ELBO(Objective):
    """The evidence lower bound (Kingma & Welling 2014, arXiv 1312.6114).

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)), estimated with
    ``num_particles`` reparameterised draws. With ``analytic_kl=True`` the KL of
    each latent site is computed in closed form when torch knows it for the
    guide's and the model's distributions and the site's place in the guide
    allows it (:func:`closed_form_kl_sites`), as Pyro's ``TraceMeanField_ELBO``;
    by Monte Carlo, log q(z|x) - log p(z), otherwise.

    ``warmup`` (epochs) anneals the KL weight (Bowman et al. 2016, arXiv
    1511.06349; Sønderby et al. 2016, arXiv 1602.02282): the training loss is
    -(E_q[log p(x|z)] - w KL) with w = min(1, epoch / warmup), epochs counted
    from 1 as in the VampPrior protocol (Tomczak & Welling 2018, arXiv
    1705.07120, 100 epochs). The reported ``elbo`` is always the bound (w = 1);
    ``kl_weight`` is logged beside it.
    """

    def __init__(self, analytic_kl=True, num_particles=1, warmup=0):
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 epochs, got {warmup}")
        super().__init__()
        self.analytic_kl = analytic_kl
        self.num_particles = num_particles
        self.warmup = warmup
        self.state["kl_weight"] = torch.tensor(1.0 if warmup == 0 else 0.0)
        self._closed_form = {}
        self._nesting = None

    def set_progress(self, epoch, step):
        if self.warmup:
            self.state["kl_weight"].fill_(min(1.0, (epoch + 1) / self.warmup))

    def _site_kl(self, name, q, p, closed_form_allowed):
        if self.analytic_kl and name in closed_form_allowed and self._closed_form.get(name, True):
            try:
                kl = kl_divergence(q.fn, p.fn)
                self._closed_form[name] = True
                return _mask_and_scale(kl, q).sum()
            except NotImplementedError:
                self._closed_form[name] = False
        return (q.log_prob() - p.log_prob()).sum()

    def run(self, model, guide, x):
        """The pair's sites on ``x``, with ``num_particles`` draws vectorized in an outer plate when > 1."""
        k = self.num_particles
        if k == 1:
            return run_pair(model, guide, x)
        if self._nesting is None:
            self._nesting = max_plate_nesting(model, guide, x)
        return run_pair(model, guide, x, num_particles=k, particle_dim=-self._nesting - 1)

    def terms(self, model, guide, x):
        """The batch sums of reconstruction and per-site KL, averaged over particles."""
        k = self.num_particles
        guide_sites, model_sites = self.run(model, guide, x)
        rec = sum(site.log_prob().sum() for site in observed_sites(model_sites).values()) / k
        allowed = closed_form_kl_sites(guide_sites, model_sites)
        kl = {name: self._site_kl(name, q, model_sites[name], allowed) / k for name, q in guide_sites.items()}
        return ELBOTerms(rec, kl, x.shape[0])

    def loss(self, model, guide, x):
        t = self.terms(model, guide, x)
        w = self.state["kl_weight"]
        b = t.batch_size
        stats = {"elbo": t.elbo.detach() / b, "reconstruction": t.reconstruction.detach() / b,
                 "kl": t.total_kl.detach() / b}
        if self.warmup:
            stats["kl_weight"] = w.detach().clone()
        return -(t.reconstruction - w * t.total_kl) / b, stats
