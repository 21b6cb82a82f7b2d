"""Building a (model, guide) pair from a run configuration.

Built-in models (``MODELS``): ``vae``, ``hvae``, ``stacked``, ``cvae``, ``m2``;
built-in guides: ``gaussian`` and the flow guides ``iaf``, ``householder``,
``planar`` (with ``vae``). A user's own pair is ``path/to/file.py:Name``, where
``Name`` is

- a class or an object with ``.model`` and ``.guide`` methods (Pyro's example
  style, e.g. ``class VAE(nn.Module)`` with ``model(x)`` and ``guide(x)``);
- a factory returning ``(model, guide)`` (or a model, with the guide given by
  ``--guide path/to/file.py:Name`` too);
- an ``nn.Module`` or a Pyro program whose first parameter is the data
  (``x``, ``xs`` or ``data``), used as it is.

A class or factory is called with **only the options given on the command
line** among those it accepts (``latent_dim``, ``hidden``, ...): its own
defaults hold for everything else (a required ``image_shape`` without a
default gets the data's shape). The file is imported with its folder on
the import path, so it may import helper modules beside it; its absolute path
and content hash go into the run's configuration, and reloading a run whose
file has changed since warns. Importing a run's pair file executes it: read a
run folder's ``config.json`` before evaluating a run from someone else.
"""

import hashlib
import importlib.util
import inspect
import os
import sys
import warnings

import torch
from torch import nn

from pyrovae.nn.likelihoods import eight_bit, make_likelihood
from pyrovae.nn.nets import ConditionalGaussian, ContextEncoder, MLPDecoder, make_networks, mlp
from pyrovae.nn.priors import make_prior

FACTORY_ARGS = ("image_shape", "latent_dim", "likelihood", "hidden", "activation", "arch", "prior")
DATA_PARAMETERS = ("x", "xs", "data")


class UserPairError(ValueError):
    """A user's pair file that cannot be imported or does not give a model and a guide."""


# -- user files ---------------------------------------------------------------------------------------------

def file_source(spec):
    """``{"path": absolute path, "name": Name, "sha256": content hash}`` of ``path/to/file.py:Name``, or
    ``{"module": name, "name": Name}`` of an importable ``package.module:Name``."""
    path, _, name = str(spec).rpartition(":")
    if not path or not name:
        raise UserPairError(f"{spec!r} is not of the form path/to/file.py:Name (or package.module:Name)")
    if not path.endswith(".py") and os.sep not in path:
        return {"module": path, "name": name}
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UserPairError(f"no such file {path!r} (from {spec!r})")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"path": path, "name": name, "sha256": digest}


def load_user_object(source):
    """Import the file of ``source`` (:func:`file_source`) with its folder on the import path; return ``Name``."""
    if "module" in source:
        return _imported(source)
    path, name = source["path"], source["name"]
    if not os.path.isfile(path):
        raise UserPairError(f"the pair file {path} no longer exists")
    with open(path, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != source.get("sha256", ""):
            warnings.warn(f"{path} has changed since the run was trained: the pair built from it may not match the "
                          "checkpoint", stacklevel=2)
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = "pyrovae_user_" + hashlib.sha256(path.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise UserPairError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except ImportError as e:
        raise UserPairError(f"{path} imports {e.name or 'a module'}, which cannot be found ({e}); modules beside the "
                            "file are on the import path") from None
    except Exception as e:  # the user's module body raised: say so in one line
        raise UserPairError(f"running {path} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, name):
        names = sorted(n for n in vars(module) if not n.startswith("_"))
        raise UserPairError(f"{path} defines no {name!r}; it defines {names[:12]}")
    return getattr(module, name)


def _imported(source):
    try:
        module = importlib.import_module(source["module"])
    except ImportError as e:
        raise UserPairError(f"cannot import {source['module']} for the pair: {e}") from None
    obj = module
    for part in source["name"].split("."):
        if not hasattr(obj, part):
            raise UserPairError(f"{source['module']} defines no {source['name']!r}")
        obj = getattr(obj, part)
    return obj


def _is_program(obj):
    if isinstance(obj, nn.Module):
        return True
    if inspect.isclass(obj) or not callable(obj):
        return False
    params = list(inspect.signature(obj).parameters.values())
    return bool(params) and params[0].name in DATA_PARAMETERS


def user_pair(spec, cfg, train=None):
    """``(model or None, guide or None, source)`` from ``path/to/file.py:Name`` (module doc)."""
    source = cfg.get("sources", {}).get(spec) or file_source(spec)
    obj = load_user_object(source)
    where = f"{source.get('path', source.get('module'))}:{source['name']}"
    if not callable(obj) and not (hasattr(obj, "model") and hasattr(obj, "guide")):
        raise UserPairError(f"{where} is a {type(obj).__name__}, not a model, a guide, a pair class or a factory")
    if _pair_object(obj):
        return obj.model, obj.guide, source
    if _is_program(obj):
        return obj, None, source
    given = set(cfg.get("given", ()))
    accepted = inspect.signature(obj).parameters
    kwargs = {k: cfg[k] for k in FACTORY_ARGS if k in accepted and k in given}
    required = {k for k, p in accepted.items() if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if "image_shape" in required and "image_shape" not in kwargs and train is not None:
        kwargs["image_shape"] = tuple(train.event_shape)  # the data's own shape, where the class has no default
    try:
        built = obj(**kwargs)
    except TypeError as e:
        raise UserPairError(f"calling {where}({', '.join(kwargs)}) failed: {e}") from None
    if built is None:
        raise UserPairError(f"{where} returned None; a factory must return (model, guide), a model, or an object "
                            "with .model and .guide")
    if _pair_object(built):
        return built.model, built.guide, source
    if isinstance(built, tuple) and len(built) == 2 and all(callable(b) for b in built):
        return built[0], built[1], source
    if callable(built):
        return built, None, source
    raise UserPairError(f"{where} returned a {type(built).__name__}; expected (model, guide), a model, or an object "
                        "with .model and .guide")


def _pair_object(obj):
    return (not inspect.isclass(obj) and callable(getattr(obj, "model", None))
            and callable(getattr(obj, "guide", None)))


# -- built-in pairs -------------------------------------------------------------------------------------------

def _latent_dims(cfg, default_levels):
    """Per-level latent sizes ``[d1, ..., dL]`` from ``latent_dim`` (an int, or one int per level) and ``levels``."""
    dims = cfg["latent_dim"]
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    levels = cfg.get("levels") or (len(dims) if len(dims) > 1 else default_levels)
    if len(dims) == 1:
        dims = dims * levels
    if len(dims) != levels:
        raise ValueError(f"latent_dim gives {len(dims)} sizes {dims} for {levels} levels; give one size or one per level")
    return dims


def likelihood_name(cfg, train):
    """``likelihood`` as given, else bernoulli for binary data, discretized-logistic for 8-bit images
    ``[C, H, W]`` (every value k/255) and gaussian-learned otherwise."""
    if cfg.get("likelihood"):
        return cfg["likelihood"]
    if train is None:
        return "bernoulli"
    x = train.data
    if cfg.get("binarize") in ("static", "dynamic") or bool(((x == 0) | (x == 1)).all()):
        return "bernoulli"
    if x.dim() == 4 and bool(eight_bit.check(x).all()):
        return "discretized-logistic"
    return "gaussian-learned"


def _likelihood(cfg, train, shape):
    """The likelihood named by :func:`likelihood_name` for images of ``shape``."""
    return make_likelihood(likelihood_name(cfg, train), event_dims=len(shape), image_shape=shape)


def _output_shape(likelihood, shape):
    """The decoder output a likelihood takes: ``params_per_channel`` channels per image channel."""
    per_channel = getattr(likelihood, "params_per_channel", 1)
    return (per_channel * shape[0], *shape[1:]) if per_channel != 1 else tuple(shape)


def _shape(cfg, train):
    shape = cfg.get("image_shape") or (train.event_shape if train is not None else None)
    if shape is None:
        raise ValueError("the built-in networks need the data's shape: give image_shape")
    return tuple(shape)


def _top_prior(cfg, latent_dim, top_encoder, train, shape):
    """The prior p(z_top); a VampPrior shares ``top_encoder``, the guide's q(z_top | x) network."""
    init, data = cfg.get("prior_init", "random"), None
    k = cfg.get("components")
    if cfg.get("prior") == "vamp" and init == "data":
        k = k or 500
        if train is None:
            raise ValueError("prior_init='data' needs the training data to draw pseudo-inputs from")
        if k > len(train):
            raise ValueError(f"prior_init='data' needs {k} pseudo-inputs but the training split has {len(train)} data")
        index = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.get("seed", 0)))[:k]
        data = train.data[index].to(torch.get_default_dtype()).reshape(k, *shape)
    return make_prior(cfg.get("prior", "standard"), latent_dim, num_components=k, encoder=top_encoder,
                      input_shape=shape, init=init, data=data, flow_steps=cfg.get("prior_steps"))


def _pixelcnn_decoder(cfg, shape, latent_dim, decoder, train):
    """``--decoder pixelcnn``: (conditioning network, PixelCNN likelihood) in place of the decoder's output."""
    from pyrovae.nn.pixelcnn import PixelCNNLikelihood

    if likelihood_name(cfg, train) != "bernoulli" or len(shape) != 3 or shape[0] != 1:
        raise ValueError("--decoder pixelcnn models binary one-channel images [1, H, W] with --likelihood bernoulli")
    layers = cfg.get("layers") or 5
    if cfg.get("arch") == "conv":  # a one-channel conditioning map from the conv decoder
        return decoder, PixelCNNLikelihood(shape, shape, layers=layers)
    context = 32
    hidden = tuple(cfg.get("hidden") or (400,))
    return (MLPDecoder((context,), latent_dim, hidden, cfg.get("activation", "relu")),
            PixelCNNLikelihood(shape, (context,), layers=layers))


def _guide_for(cfg, encoder, latent_dim):
    """The built-in guide named by ``guide`` around ``encoder``: Gaussian, or a flow on top of it."""
    from pyrovae.guides import FLOWS, GaussianGuide

    name = cfg.get("guide", "gaussian")
    if name in FLOWS:
        if cfg.get("prior") == "vamp":
            raise ValueError("a VampPrior mixes the guide's Gaussian encoder, not a flow guide's posterior: use "
                             "--guide gaussian with --prior vamp")
        context = 32
        return FLOWS[name](ContextEncoder(encoder, context), latent_dim, context, steps=cfg.get("flow_steps") or 2)
    return GaussianGuide(encoder)


def _vae_pair(cfg, train):
    from pyrovae.models import VAE

    dims = _latent_dims(cfg, 1)
    if len(dims) != 1:
        raise ValueError(f"the 'vae' model has one stochastic level, got {len(dims)} latent sizes {dims}; "
                         "use --model hvae or --model stacked for levels >= 2")
    shape, arch, act = _shape(cfg, train), cfg.get("arch", "mlp"), cfg.get("activation", "relu")
    if cfg.get("decoder", "default") == "pixelcnn":
        encoder, decoder = make_networks(arch, shape, dims[0], cfg.get("hidden"), act)
        decoder, likelihood = _pixelcnn_decoder(cfg, shape, dims[0], decoder, train)
    else:
        likelihood = _likelihood(cfg, train, shape)
        encoder, decoder = make_networks(arch, shape, dims[0], cfg.get("hidden"), act, _output_shape(likelihood, shape))
    model = VAE(decoder, _top_prior(cfg, dims[0], encoder, train, shape), likelihood)
    return model, _guide_for(cfg, encoder, dims[0])


def _hierarchical_pair(cfg, train, top_down):
    """The VampPrior paper's HVAE (``top_down``) or the IWAE paper's stacked model, L >= 2 levels."""
    from pyrovae.guides import BottomUpGuide, TopDownGuide
    from pyrovae.models import HierarchicalVAE

    if cfg.get("arch", "mlp") != "mlp":
        raise ValueError(f"hierarchical models use MLP networks; got arch={cfg['arch']!r}")
    dims = _latent_dims(cfg, 2)
    if len(dims) < 2:
        raise ValueError(f"a hierarchical model needs levels >= 2, got {len(dims)}")
    shape, act, hidden = _shape(cfg, train), cfg.get("activation", "relu"), cfg.get("hidden")
    levels, likelihood = len(dims), _likelihood(cfg, train, shape)
    output_shape = _output_shape(likelihood, shape)

    def h(level):  # the IWAE paper's widths: 2 x 100 units below z1, 2 x 50 between z1 and z2
        if hidden is not None:
            return tuple(hidden)
        return (300, 300) if top_down else ((100, 100) if level == 1 else (50, 50))

    if top_down:
        encoder = ConditionalGaussian([shape], dims[-1], h(levels), act)
        q_cond = [ConditionalGaussian([shape, (dims[lv],)], dims[lv - 1], h(lv), act) for lv in range(1, levels)]
        guide = TopDownGuide(encoder, q_cond)
        decoder = MLPDecoder(output_shape, sum(dims), h(1), act)
    else:
        encoder = ConditionalGaussian([shape], dims[0], h(1), act)
        q_cond = [ConditionalGaussian([(dims[lv - 2],)], dims[lv - 1], h(lv), act) for lv in range(2, levels + 1)]
        guide = BottomUpGuide(encoder, q_cond)
        decoder = MLPDecoder(output_shape, dims[0], h(1), act)
    p_cond = [ConditionalGaussian([(dims[lv],)], dims[lv - 1], h(lv + 1), act) for lv in range(1, levels)]
    if cfg.get("prior") == "vamp" and not top_down:
        raise ValueError("a VampPrior on z_top needs q(z_top | x): use --model hvae (top-down guide)")
    prior = _top_prior(cfg, dims[-1], encoder if top_down else None, train, shape)
    model = HierarchicalVAE(decoder, prior, p_cond, likelihood, decode_from="all" if top_down else "z1")
    return model, guide


def _num_classes(train):
    from pyrovae.data import classes

    if train is None or "y" not in train.fields:
        raise ValueError("a label-conditioned model needs the labels: pass --condition-on labels")
    return int(classes(train).max()) + 1


def _conditional_pair(cfg, train):
    """The conditional VAE p(z) p(x | z, y), q(z | x, y) on class labels."""
    from pyrovae.guides import ConditionalGaussianGuide
    from pyrovae.models import ConditionalVAE
    from pyrovae.nn.priors import StandardNormal

    dims = _latent_dims(cfg, 1)
    shape, c = _shape(cfg, train), _num_classes(train)
    hidden, act = tuple(cfg.get("hidden") or (400,)), cfg.get("activation", "relu")
    encoder = ConditionalGaussian([shape, (c,)], dims[0], hidden, act)
    likelihood = _likelihood(cfg, train, shape)
    decoder = MLPDecoder(_output_shape(likelihood, shape), dims[0] + c, hidden, act)
    return ConditionalVAE(decoder, StandardNormal(dims[0]), likelihood, c), ConditionalGaussianGuide(encoder, c)


def _semi_supervised_pair(cfg, train):
    """Kingma et al. 2014's M2: q(y | x) q(z | x, y), p(y) p(z) p(x | y, z).

    The classification term weighs each labelled datum's log q(y | x) by 0.1 N / N_l (the paper's alpha = 0.1 N
    on the mean over the N_l labelled data of N; see :mod:`pyrovae.models.conditional`).
    """
    from pyrovae.guides import SemiSupervisedGuide
    from pyrovae.models import SemiSupervisedVAE

    dims = _latent_dims(cfg, 1)
    shape, c = _shape(cfg, train), _num_classes(train)
    hidden, act = tuple(cfg.get("hidden") or (500,)), cfg.get("activation", "softplus")
    flat = int(torch.Size(shape).numel())
    classifier = nn.Sequential(nn.Flatten(-len(shape)), mlp([flat, *hidden, c], act))
    encoder = ConditionalGaussian([shape, (c,)], dims[0], hidden, act)
    likelihood = _likelihood(cfg, train, shape)
    decoder = MLPDecoder(_output_shape(likelihood, shape), dims[0] + c, hidden, act)
    present = train.present.get("y")
    num_labelled = len(train) if present is None else int(present.sum())
    alpha = 0.1 * len(train) / num_labelled
    model = SemiSupervisedVAE(decoder, likelihood, dims[0], c, classifier, alpha=alpha)
    return model, SemiSupervisedGuide(classifier, encoder, c)


MODELS = {"vae": _vae_pair,
          "hvae": lambda cfg, train: _hierarchical_pair(cfg, train, top_down=True),
          "stacked": lambda cfg, train: _hierarchical_pair(cfg, train, top_down=False),
          "cvae": _conditional_pair,
          "m2": _semi_supervised_pair}
GUIDES = ("gaussian", "iaf", "householder", "planar")  # built with their model: the pair shares one configuration


def build_pair(cfg, train=None):
    """``(model, guide, sources)`` for a configuration (see the module doc).

    ``train`` (a :class:`~pyrovae.data.Split`) gives the built-in networks the
    data's shape, the likelihood's default, the classes of label-conditioned
    models and a VampPrior's pseudo-inputs (``prior_init="data"``).
    ``sources`` maps each user spec to its :func:`file_source`.
    """
    model_name, guide_name = cfg["model"], cfg.get("guide", "gaussian")
    sources = {}
    if model_name in MODELS:
        if ":" in str(guide_name):
            raise ValueError(f"the built-in model {model_name!r} comes with its built-in guide; give your own model "
                             "too (path/to/file.py:Name) or drop --guide")
        if guide_name not in GUIDES:
            raise ValueError(f"unknown guide {guide_name!r}; expected one of {list(GUIDES)} or path/to/file.py:Name")
        if guide_name != "gaussian" and model_name != "vae":
            raise ValueError(f"--guide {guide_name} is a flow guide for --model vae")
        model, guide = MODELS[model_name](cfg, train)
        return model, guide, sources
    if ":" not in str(model_name):
        raise ValueError(f"unknown model {model_name!r}; expected one of {sorted(MODELS)} or path/to/file.py:Name")
    model, guide, sources[model_name] = user_pair(model_name, cfg, train)
    if guide_name == model_name and guide is not None:  # one pair object or factory gave both
        return model, guide, sources
    if ":" in str(guide_name):
        user_guide = user_pair(guide_name, cfg, train)
        guide, sources[guide_name] = user_guide[1] or user_guide[0], user_guide[2]
    elif guide is None:
        raise ValueError(f"{model_name} gives a model only: give its guide with --guide path/to/file.py:Name, or "
                         "make Name a pair (an object with .model and .guide, or a factory returning both)")
    return model, guide, sources
