"""Objectives that reshape the ELBO's KL term to shape the representation.

All three work on any (model, guide) pair: they reuse the ELBO's reading of the
pair (:meth:`pyrovae.infer.elbo.ELBO.terms` or :func:`pyrovae.infer.trace.run_pair`)
and change only how the reconstruction term E_q[log p(x|z)] and the KL term
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
from torch.distributions import Independent

from pyrovae.infer.distributions import kl_or_log_ratio
from pyrovae.infer.elbo import ELBO, closed_form_kl_sites
from pyrovae.infer.trace import observed_sites
from pyrovae.util import positive_int

__all__ = ["BetaVAE", "ControlledCapacity", "FreeBits", "objective_from_config", "site_kl_per_dimension"]


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

    def loss(self, model, guide, x):
        t = self.terms(model, guide, x)
        rec, kl = t.reconstruction / t.batch_size, t.total_kl / t.batch_size
        c = self.state["capacity"]
        return -rec + self.gamma * (kl - c).abs(), {"elbo": (rec - kl).detach(), "reconstruction": rec.detach(),
                                                   "kl": kl.detach(), "capacity": c.detach()}


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

    def group_kl(self, guide_sites, model_sites, batch_size):
        """The batch-averaged KL of each group: a 1-d tensor over all latent sites' groups."""
        out = []
        closed_form = closed_form_kl_sites(guide_sites, model_sites) if self.analytic_kl else set()
        for name, q in guide_sites.items():
            per_dim = site_kl_per_dimension(q, model_sites[name], analytic=name in closed_form)
            per_dim = per_dim.reshape(-1, per_dim.shape[-1]).sum(0) / (batch_size * self.num_particles)
            size = self.groups or 1
            if per_dim.shape[-1] % size:
                raise ValueError(f"FreeBits: groups={size} does not divide the {per_dim.shape[-1]} dimensions "
                                 f"of latent site {name!r}")
            out.append(per_dim.reshape(-1, size).sum(-1))
        return torch.cat(out)

    def loss(self, model, guide, x):
        guide_sites, model_sites = self.run(model, guide, x)
        b = x.shape[0]
        rec = sum(s.log_prob().sum() for s in observed_sites(model_sites).values()) / (self.num_particles * b)
        kl_j = self.group_kl(guide_sites, model_sites, b)
        kl = kl_j.sum()
        return -rec + kl_j.clamp(min=self.lambda_).sum(), {"elbo": (rec - kl).detach(),
                                                          "reconstruction": rec.detach(), "kl": kl.detach()}


def site_kl_per_dimension(q_site, p_site, analytic=True):
    r"""KL(q(z_d|x) || p(z_d)) for every dimension d of one latent site: ``[*batch, D]``.

    ``q_site`` is the guide's :class:`~pyrovae.infer.trace.Site` and ``p_site`` the
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
    event_shape = q_site.fn.event_shape
    kl = kl_or_log_ratio(q, p, q_site.value, analytic)
    batch_shape = q_site.fn.batch_shape
    kl = kl.expand(*batch_shape, *event_shape).reshape(*batch_shape, math.prod(event_shape))
    if isinstance(q_site.mask, torch.Tensor):
        kl = kl * q_site.mask.unsqueeze(-1)
    elif q_site.mask is False:
        kl = kl * 0.0
    if not (isinstance(q_site.scale, (int, float)) and q_site.scale == 1.0):
        scale = q_site.scale.unsqueeze(-1) if isinstance(q_site.scale, torch.Tensor) else q_site.scale
        kl = kl * scale
    return kl


def _elementwise(site):
    """The site's distribution without its ``Independent`` wrappers; it must have an empty event shape."""
    fn = site.fn
    while isinstance(fn, Independent):
        fn = fn.base_dist
    if fn.event_shape != ():
        raise ValueError(f"latent site {site.name!r}: per-dimension KL needs a distribution that factorises "
                         f"over the latent dimensions (element-wise, e.g. Normal(...).to_event(1)); "
                         f"got {type(fn).__name__} with event shape {tuple(fn.event_shape)}")
    return fn


# configuration keys (``pyrovae train`` flags) that choose one of the objectives above
FLAGS = {"beta": "--beta", "capacity": "--capacity", "free_bits": "--free-bits"}


def objective_from_config(cfg):
    """The objective a run configuration asks for with ``beta``, ``capacity`` or ``free_bits``, else None.

    ``capacity`` needs ``capacity_steps``; ``gamma`` defaults to 1000 (Burgess et
    al. 2018). Contradictory settings raise a ValueError naming the flags: two of
    these objectives at once, any of them with ``objective="iwae"``, ``dreg`` or
    ``warmup``, and ``capacity_steps`` or ``gamma`` without ``capacity``.
    """
    given = [key for key in FLAGS if cfg.get(key) is not None]
    if cfg.get("capacity") is None:
        orphans = [flag for key, flag in (("capacity_steps", "--capacity-steps"), ("gamma", "--gamma"))
                   if cfg.get(key) is not None]
        if orphans:
            raise ValueError(f"{' and '.join(orphans)} set the controlled-capacity objective: pass --capacity C too")
    if not given:
        return None
    flag = FLAGS[given[0]]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(FLAGS[k] for k in given)} are different objectives: choose one")
    conflicts = [f"--objective {cfg['objective']}"] if cfg.get("objective", "elbo") != "elbo" else []
    conflicts += [f"--{key}" for key in ("dreg", "warmup") if cfg.get(key)]
    if conflicts:
        raise ValueError(f"{flag} reshapes the ELBO's KL term and does not combine with {', '.join(conflicts)}")
    common = dict(analytic_kl=cfg.get("analytic_kl", True), num_particles=cfg.get("particles", 1))
    if given == ["beta"]:
        return BetaVAE(cfg["beta"], **common)
    if given == ["free_bits"]:
        return FreeBits(cfg["free_bits"], **common)
    if cfg.get("capacity_steps") is None:
        raise ValueError("--capacity needs --capacity-steps N: the number of SVI steps over which the target KL "
                         "rises from 0 to the capacity")
    gamma = 1000.0 if cfg.get("gamma") is None else cfg["gamma"]
    return ControlledCapacity(cfg["capacity"], cfg["capacity_steps"], gamma, **common)
