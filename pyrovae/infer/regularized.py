"""Objectives that reshape the ELBO's KL term to shape the representation.

All three work on any (model, guide) pair: they reuse the ELBO's reading of the
pair (:meth:`pyrovae.infer.elbo.ELBO.terms`, so non-reparameterized and
enumerated latents keep their gradient estimators) and change only how the reconstruction term E_q[log p(x|z)] and the KL term
KL(q(z|x) || p(z)) are combined. With x a batch of B data, every loss is per
datapoint and its ``stats`` hold the true ELBO, the reconstruction term and the
KL term (each per datapoint), so training logs stay comparable across
objectives.

- :class:`BetaVAE`: reconstruction - beta * KL (Higgins et al. 2017).
- :class:`ControlledCapacity`: reconstruction - gamma * |KL - C|, with C raised
  linearly during training (Burgess et al. 2018, arXiv 1804.03599).
- :class:`FreeBits`: reconstruction - sum_j max(lambda, KL_j) over groups j of
  latent dimensions (Kingma et al. 2016, arXiv 1606.04934, appendix, "free bits").
"""

import math

import torch
from pyro.distributions.util import scale_and_mask
from torch.distributions import Independent

from pyrovae.infer.distributions import kl_or_log_ratio
from pyrovae.infer.elbo import ELBO, closed_form_kl_sites, elbo_terms
from pyrovae.infer.trace import PairError, is_enumerated, is_reparameterized, latent_sites
from pyrovae.util import positive_int

__all__ = ["BetaVAE", "ControlledCapacity", "FreeBits", "site_kl_per_dimension"]


def _nonnegative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class BetaVAE(ELBO):
    r"""The beta-VAE objective (Higgins et al. 2017, "beta-VAE: Learning basic visual
    concepts with a constrained variational framework", ICLR, eq. 4).

    .. math:: \mathcal{L}_\beta(x) = \mathbb{E}_{q(z|x)}[\log p(x|z)] - \beta\,
              \mathrm{KL}(q(z|x) \,\|\, p(z)).

    beta > 1 presses the code towards the factorised prior and, on data with
    independent generative factors, towards disentangled codes, at the cost of
    reconstruction; beta = 1 is the ELBO (the same loss, bit for bit), beta < 1
    weakens the KL term. The KL is analytic where torch knows it and Monte Carlo
    otherwise, as in :class:`~pyrovae.infer.elbo.ELBO`; ``stats["elbo"]`` is the
    unweighted bound.
    """

    def __init__(self, beta=4.0, analytic_kl=True, num_particles=1):
        super().__init__(analytic_kl=analytic_kl, num_particles=num_particles)
        self.beta = _nonnegative("beta", beta)
        self.state["kl_weight"].fill_(self.beta)  # the ELBO's KL weight, held at beta


class ControlledCapacity(ELBO):
    r"""Controlled encoding capacity (Burgess et al. 2018, "Understanding disentangling
    in beta-VAE", arXiv 1804.03599, eq. 8).

    .. math:: \mathcal{L}_C(x) = \mathbb{E}_{q(z|x)}[\log p(x|z)] - \gamma\,
              \big| \mathrm{KL}(q(z|x) \,\|\, p(z)) - C \big|,

    with the KL averaged over the batch and the target capacity C (nats per
    datapoint) raised linearly from 0 to ``capacity`` over the first
    ``capacity_steps`` SVI steps and held there:
    C(step) = capacity * min(step / capacity_steps, 1). A large ``gamma`` pins the
    KL to C, so the code gains information gradually and puts it first where it
    improves the reconstruction most. The paper's dSprites setting is
    capacity 25, gamma 1000, over 100,000 steps.

    C lives in ``state["capacity"]`` (a 0-dim tensor that :meth:`set_progress`
    updates in place), so a captured SVI step (:mod:`pyrovae.infer.step`) follows the
    schedule. ``stats["capacity"]`` is the C a step used.
    """

    def __init__(self, capacity, capacity_steps, gamma=1000.0, analytic_kl=True, num_particles=1):
        super().__init__(analytic_kl=analytic_kl, num_particles=num_particles)
        self.capacity = _nonnegative("capacity", capacity)
        self.capacity_steps = positive_int("capacity_steps", capacity_steps)
        self.gamma = _nonnegative("gamma", gamma)
        if self.gamma == 0:
            raise ValueError("gamma must be > 0 (gamma = 0 drops the KL term altogether)")
        self.state["capacity"] = torch.zeros(())

    def capacity_at(self, step):
        """The target capacity C after ``step`` SVI steps."""
        return self.capacity * min(step / self.capacity_steps, 1.0)

    def set_progress(self, epoch, step):
        self.state["capacity"].fill_(self.capacity_at(step))

    def loss(self, model, guide, *args, **kwargs):
        t = self.terms(model, guide, *args, **kwargs)
        n, c = t.num_data, self.state["capacity"]
        rec, kl = t.reconstruction / n, t.kl / n
        value = -rec + self.gamma * (kl - c).abs()
        # d|KL - C| = sign(KL - C) dKL: the ELBO's surrogate with the KL weighted by gamma * sign(KL - C)
        surrogate = -t.surrogate(self.gamma * torch.sign(kl - c)) / n
        return value.detach() + (surrogate - surrogate.detach()), {
            "elbo": (rec - kl).detach(), "reconstruction": rec.detach(), "kl": kl.detach(), "capacity": c.detach()}


class FreeBits(ELBO):
    r"""The free-bits objective (Kingma et al. 2016, "Improved variational inference
    with inverse autoregressive flow", arXiv 1606.04934, appendix, "free bits").

    The latent dimensions are divided into groups j; with the KL of each group
    averaged over the batch (and the particles),
    :math:`\mathrm{KL}_j = \frac{1}{B} \sum_{i=1}^{B} \mathrm{KL}(q(z_j|x_i) \,\|\, p(z_j))`,

    .. math:: \tilde{\mathcal{L}} = \frac{1}{B} \sum_{i=1}^{B} \mathbb{E}_{q(z|x_i)}[\log p(x_i|z)]
              - \sum_j \max(\lambda, \mathrm{KL}_j).

    A group whose KL is below ``lambda_`` nats costs a constant lambda, so the KL
    term gives it no gradient: its guide parameters move only to improve the
    reconstruction, and each group can use lambda nats for free, which keeps
    latent units from collapsing to the prior early in training.

    ``groups=None`` makes every latent dimension its own group; an int ``g``
    groups consecutive blocks of ``g`` dimensions of each latent site (``g`` must
    divide each site's size). Per-dimension KLs come from
    :func:`site_kl_per_dimension`: analytic where torch knows the KL of the sites'
    element-wise distributions and the site's place in the guide keeps it
    unbiased (:func:`pyrovae.infer.elbo.closed_form_kl_sites`), Monte Carlo
    otherwise (or always, with ``analytic_kl=False``). ``stats["elbo"]`` is the
    true bound.
    """

    def __init__(self, lambda_, groups=None, analytic_kl=True, num_particles=1):
        super().__init__(analytic_kl=analytic_kl, num_particles=num_particles)
        self.lambda_ = _nonnegative("lambda_", lambda_)
        if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int) or groups < 1):
            raise ValueError(f"groups must be None (one group per latent dimension) or a positive int "
                             f"(dimensions per group), got {groups!r}")
        self.groups = groups

    def group_kl(self, pt, num_data):
        """The batch-averaged KL of each group: a 1-d tensor over all latent sites' groups."""
        out = []
        closed_form = closed_form_kl_sites(pt.latents, latent_sites(pt.model)) if self.analytic_kl else set()
        for name, q in pt.latents.items():
            if not is_reparameterized(q) or is_enumerated(q):
                raise PairError(f"FreeBits needs reparameterized latents: guide site {name!r} is "
                                f"{'enumerated' if is_enumerated(q) else 'not reparameterized'}; use the ELBO, "
                                "beta-VAE or controlled capacity for this pair")
            per_dim = site_kl_per_dimension(q, pt.model.nodes[name], analytic=name in closed_form)
            per_dim = per_dim.reshape(-1, per_dim.shape[-1]).sum(0) / (num_data * pt.num_particles)
            size = self.groups or 1
            if per_dim.shape[-1] % size:
                raise ValueError(f"FreeBits: groups={size} does not divide the {per_dim.shape[-1]} dimensions "
                                 f"of latent site {name!r}")
            out.append(per_dim.reshape(-1, size).sum(-1))
        return torch.cat(out)

    def loss(self, model, guide, *args, **kwargs):
        pt = self.run(model, guide, *args, **kwargs)
        t = elbo_terms(pt, self.analytic_kl)
        n = t.num_data
        rec = t.reconstruction / n
        kl_j = self.group_kl(pt, n)
        kl = kl_j.sum()
        rec_grad = t.surrogate(0.0) / n  # the reconstruction's gradient (pathwise and score-function terms)
        free = kl_j.clamp(min=self.lambda_).sum()
        loss = free - rec.detach() - (rec_grad - rec_grad.detach())
        return loss, {"elbo": (rec - kl).detach(), "reconstruction": rec.detach(), "kl": kl.detach()}


def site_kl_per_dimension(q_site, p_site, analytic=True):
    r"""KL(q(z_d|x) || p(z_d)) for every dimension d of one latent site: ``[*batch, D]``.

    ``q_site`` is the guide's trace site (a node of Pyro's ``Trace``) and ``p_site`` the
    model's site of the same name (replaying the guide's draw); ``D`` is the
    size of the site's event. Both distributions must factorise over the event
    -- element-wise distributions, possibly wrapped in ``Independent`` (e.g.
    ``Normal(loc, scale).to_event(1)``) -- so that the site's KL is the sum of
    the D per-dimension KLs. Each KL is analytic where torch knows the KL of the
    two element-wise distributions (with ``analytic=True``), and otherwise the
    one-draw Monte Carlo estimate log q(z_d|x) - log p(z_d) at the site's draw,
    unbiased for it. The site's ``poutine.mask`` and ``poutine.scale`` apply as to
    its log-density.
    """
    q, p = _elementwise(q_site), _elementwise(p_site)
    event_shape = q_site["fn"].event_shape
    kl = kl_or_log_ratio(q, p, q_site["value"], analytic)
    batch_shape = q_site["fn"].batch_shape
    kl = kl.expand(*batch_shape, *event_shape).reshape(*batch_shape, math.prod(event_shape))
    mask = q_site["mask"]
    if isinstance(mask, torch.Tensor):
        mask = mask.unsqueeze(-1)
    scale = q_site["scale"]
    if isinstance(scale, torch.Tensor) and scale.dim():
        scale = scale.unsqueeze(-1)
    return scale_and_mask(kl, scale, mask)


def _elementwise(site):
    """The site's distribution without its ``Independent`` wrappers; it must have an empty event shape."""
    fn = site["fn"]
    while isinstance(fn, Independent):
        fn = fn.base_dist
    if fn.event_shape != ():
        raise ValueError(f"latent site {site['name']!r}: per-dimension KL needs a distribution that factorises "
                         f"over the latent dimensions (element-wise, e.g. Normal(...).to_event(1)); "
                         f"got {type(fn).__name__} with event shape {tuple(fn.event_shape)}")
    return fn
