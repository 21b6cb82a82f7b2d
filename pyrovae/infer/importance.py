"""Importance weights of a pair: log w_k = log p(x, z_k) - log q(z_k | x) per particle and datapoint.

Both the IWAE objective (:mod:`pyrovae.infer.iwae`) and the K=5000
log-likelihood estimate (:mod:`pyrovae.evaluate.likelihood`) start here.
"""

import torch

from pyrovae.infer.trace import DATA_PLATE, PairError, run_pair


def datapoint_log_prob(site, particle_dim):
    """``site``'s log-density summed over all dims but the particle and ``"data"`` dims.

    Returns a tensor of shape ``[K or 1, B or 1]`` (size 1 where the site's log
    density does not vary along that dim); ``particle_dim`` is the (negative)
    dim of the outer particle plate.
    """
    data_dim = site.plate_dim(DATA_PLATE)
    if data_dim is None:
        raise PairError(f"site {site.name!r} is not inside pyro.plate({DATA_PLATE!r}, batch_size): "
                        "per-datapoint estimates need every latent and observed site to be local to the data plate")
    lp = site.log_prob()
    if not isinstance(lp, torch.Tensor):
        lp = torch.as_tensor(lp)
    n = -particle_dim
    if lp.dim() > n:
        raise PairError(f"site {site.name!r} has log-density batch shape {list(lp.shape)} with more dims than "
                        f"its plates allow ({n - 1} plus the particle dim): declare the datum's dims as event "
                        "dims with .to_event(...)")
    lp = lp.reshape((1,) * (n - lp.dim()) + tuple(lp.shape))
    keep = (0, n + data_dim)
    other = [d for d in range(n) if d not in keep]
    if other:
        lp = lp.sum(other)
    return lp


def sum_sites(sites, particle_dim, shape):
    total = torch.zeros(())
    for site in sites:
        total = total + datapoint_log_prob(site, particle_dim)
    return total.expand(shape) if total.dim() == 2 else total.reshape(1, 1).expand(shape)


def log_weights(model, guide, x, num_particles, particle_dim):
    """log w_k = log p(x, z_k) - log q(z_k | x), z_k ~ q(z|x), as a ``[K, B]`` tensor.

    Differentiable (no ``no_grad`` here); :class:`pyrovae.infer.iwae.IWAE` trains with it.
    """
    guide_sites, model_sites = run_pair(model, guide, x, num_particles=num_particles, particle_dim=particle_dim)
    shape = (num_particles, x.shape[0])
    return sum_sites(model_sites.values(), particle_dim, shape) - sum_sites(guide_sites.values(), particle_dim,
                                                                              shape)
