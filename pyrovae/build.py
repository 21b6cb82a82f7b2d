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

from torch import nn

from .likelihoods import make_likelihood
from .nets import make_networks
from .priors import make_prior


def _vae_pair(cfg):
    from .guides import GaussianGuide
    from .models import VAE

    encoder, decoder = make_networks(cfg["arch"], cfg["image_shape"], cfg["latent_dim"], cfg.get("hidden"),
                                     cfg.get("activation", "relu"))
    likelihood = make_likelihood(cfg["likelihood"], event_dims=len(cfg["image_shape"]))
    model = VAE(decoder, make_prior(cfg.get("prior", "standard"), cfg["latent_dim"]), likelihood)
    return model, GaussianGuide(encoder)


MODELS = {"vae": _vae_pair}
GUIDES = {"gaussian": None}  # built with its model: the pair shares one configuration


def build_pair(cfg):
    """``(model, guide)`` for a configuration dict with keys ``model``, ``guide``, ``image_shape`` ..."""
    model_name, guide_name = cfg["model"], cfg["guide"]
    builtin = None
    if model_name in MODELS:
        builtin = MODELS[model_name](cfg)
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
