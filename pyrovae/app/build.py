"""Building a (model, guide) pair from a run configuration.

Built-in names live in ``MODELS`` and ``GUIDES``. A user's own model or guide is
named ``path/to/file.py:Name``. ``Name`` may be

- a class or factory function: pyrovae calls it with the keyword arguments it
  accepts among ``image_shape``, ``latent_dim``, ``likelihood``, ``hidden``,
  ``activation``, ``arch``, ``prior`` and uses what it returns;
- an ``nn.Module`` instance or a Pyro program whose first parameter is ``x``:
  used as it is.
"""

import importlib.util
import inspect
import os

import torch
from torch import nn

from pyrovae.nn.likelihoods import make_likelihood
from pyrovae.nn.nets import ConditionalGaussian, MLPDecoder, make_networks
from pyrovae.nn.priors import make_prior


def _latent_dims(cfg, default_levels):
    """Per-level latent sizes ``[d1, ..., dL]`` from ``latent_dim`` (an int, or one int per level) and ``levels``."""
    dims = cfg["latent_dim"]
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    levels = cfg.get("levels") or (len(dims) if len(dims) > 1 else default_levels)
    if len(dims) == 1:
        dims = dims * levels
    if len(dims) != levels:
        raise ValueError(f"latent_dim gives {len(dims)} sizes {dims} for {levels} levels; give one size or one per level")
    if any(not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"latent sizes must be positive integers, got {dims}")
    return dims


def _top_prior(cfg, latent_dim, top_encoder, train=None):
    """The prior p(z_top); a VampPrior shares ``top_encoder``, the guide's q(z_top | x) network."""
    init, data = cfg.get("prior_init", "random"), None
    k = cfg.get("components")
    if cfg.get("prior") == "vamp" and init == "data":
        k = k or 500
        if train is None:
            raise ValueError("prior_init='data' needs the training images to draw pseudo-inputs from")
        if k > len(train):
            raise ValueError(f"prior_init='data' needs {k} pseudo-inputs but the training split has {len(train)} images")
        index = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.get("seed", 0)))[:k]
        data = train.data[index].to(torch.get_default_dtype())
    return make_prior(cfg.get("prior", "standard"), latent_dim, num_components=k, encoder=top_encoder,
                      input_shape=cfg["image_shape"], init=init, data=data)


def _vae_pair(cfg, train=None):
    from pyrovae.guides import GaussianGuide
    from pyrovae.models import VAE

    dims = _latent_dims(cfg, 1)
    if len(dims) != 1:
        raise ValueError(f"the 'vae' model has one stochastic level, got {len(dims)} latent sizes {dims}; "
                         "use --model hvae or --model stacked for levels >= 2")
    latent_dim = dims[0]
    encoder, decoder = make_networks(cfg["arch"], cfg["image_shape"], latent_dim, cfg.get("hidden"),
                                     cfg.get("activation", "relu"))
    likelihood = make_likelihood(cfg["likelihood"], event_dims=len(cfg["image_shape"]))
    model = VAE(decoder, _top_prior(cfg, latent_dim, encoder, train), likelihood)
    return model, GaussianGuide(encoder)


def _hierarchical_pair(cfg, train, top_down):
    """The VampPrior paper's HVAE (``top_down``) or the IWAE paper's stacked model, L >= 2 levels."""
    from pyrovae.guides import BottomUpGuide, TopDownGuide
    from pyrovae.models import HierarchicalVAE

    if cfg["arch"] != "mlp":
        raise ValueError(f"hierarchical models use MLP networks; got arch={cfg['arch']!r}")
    dims = _latent_dims(cfg, 2)
    if len(dims) < 2:
        raise ValueError(f"a hierarchical model needs levels >= 2, got {len(dims)}")
    image, act, hidden = tuple(cfg["image_shape"]), cfg.get("activation", "relu"), cfg.get("hidden")
    levels = len(dims)

    def h(level):  # the IWAE paper's widths: 2 x 100 units below z1, 2 x 50 between z1 and z2
        if hidden is not None:
            return tuple(hidden)
        return (300, 300) if top_down else ((100, 100) if level == 1 else (50, 50))

    if top_down:
        encoder = ConditionalGaussian([image], dims[-1], h(levels), act)
        q_cond = [ConditionalGaussian([image, (dims[lv],)], dims[lv - 1], h(lv), act) for lv in range(1, levels)]
        guide = TopDownGuide(encoder, q_cond)
        decoder = MLPDecoder(image, sum(dims), h(1), act)
    else:
        encoder = ConditionalGaussian([image], dims[0], h(1), act)
        q_cond = [ConditionalGaussian([(dims[lv - 2],)], dims[lv - 1], h(lv), act) for lv in range(2, levels + 1)]
        guide = BottomUpGuide(encoder, q_cond)
        decoder = MLPDecoder(image, dims[0], h(1), act)
    p_cond = [ConditionalGaussian([(dims[lv],)], dims[lv - 1], h(lv + 1), act) for lv in range(1, levels)]
    likelihood = make_likelihood(cfg["likelihood"], event_dims=len(image))
    top_encoder = encoder if top_down else None
    if cfg.get("prior") == "vamp" and not top_down:
        raise ValueError("a VampPrior on z_top needs q(z_top | x): use --model hvae (top-down guide)")
    prior = _top_prior(cfg, dims[-1], top_encoder, train)
    model = HierarchicalVAE(decoder, prior, p_cond, likelihood, decode_from="all" if top_down else "z1")
    return model, guide


MODELS = {"vae": _vae_pair,
          "hvae": lambda cfg, train=None: _hierarchical_pair(cfg, train, top_down=True),
          "stacked": lambda cfg, train=None: _hierarchical_pair(cfg, train, top_down=False)}
GUIDES = {"gaussian": None}  # built with its model: the pair shares one configuration


def build_pair(cfg, train=None):
    """``(model, guide)`` for a configuration dict with keys ``model``, ``guide``, ``image_shape`` ...

    ``train`` (an :class:`~pyrovae.data.ImageSplit`) is needed only to draw a
    VampPrior's pseudo-inputs from training images (``prior_init="data"``).
    """
    model_name, guide_name = cfg["model"], cfg["guide"]
    builtin = None
    if model_name in MODELS:
        builtin = MODELS[model_name](cfg, train)
    elif ":" not in model_name:
        raise ValueError(f"unknown model {model_name!r}; expected one of {sorted(MODELS)} or path/to/file.py:Name")
    model = builtin[0] if builtin else load_user_object(model_name, cfg)
    if guide_name in GUIDES:
        if builtin is None:
            raise ValueError(f"the built-in guide {guide_name!r} goes with a built-in model; "
                             "give your own guide as path/to/file.py:Name")
        guide = builtin[1]
    elif ":" in guide_name:
        guide = load_user_object(guide_name, cfg)
    else:
        raise ValueError(f"unknown guide {guide_name!r}; expected one of {sorted(GUIDES)} or path/to/file.py:Name")
    return model, guide


FACTORY_ARGS = ("image_shape", "latent_dim", "likelihood", "hidden", "activation", "arch", "prior")


def load_user_object(spec, cfg):
    """Load ``path/to/file.py:Name`` and turn it into a model or guide (see the module doc)."""
    path, _, name = spec.rpartition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file {path!r} (from {spec!r})")
    module_name = "pyrovae_user_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise ValueError(f"{path} defines no {name!r}")
    obj = getattr(module, name)
    if isinstance(obj, nn.Module):
        return obj
    params = inspect.signature(obj).parameters
    if not inspect.isclass(obj) and next(iter(params), None) == "x":
        return obj
    accepted = {k: cfg[k] for k in FACTORY_ARGS if k in params and k in cfg}
    return obj(**accepted)
