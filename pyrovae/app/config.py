"""The run configuration: one table of options for ``pyrovae train``, run folders and ``config.json``.

Every option is declared once in :data:`OPTIONS` with its default, its type,
its check and its help text; the command line is generated from the table,
:func:`make_config` fills and checks a configuration, and a run folder's
``config.json`` holds it with the list of options the user gave
(``"given"``). What applies to the pair actually trained -- a prior's
components, an objective's weights, the built-in networks' sizes -- is
listed by :func:`applicable`, so the report shows only those.

A configuration is checked where it enters, Python and command line alike
(:class:`ConfigError` names each bad value): sizes are positive integers,
never 0 for "all" nor negative for "from the end"; ``clip_norm > 0``;
``patience >= 1``; ``levels`` and ``components >= 1``.
"""

import math
import os
import time
from dataclasses import dataclass, field

from pyrovae.data import BINARIZE_CHOICES, DATASETS
from pyrovae.infer.step import MODES
from pyrovae.nn.likelihoods import LIKELIHOODS
from pyrovae.nn.nets import ACTIVATIONS
from pyrovae.nn.priors import PRIORS, PSEUDO_INPUT_INITS


class ConfigError(ValueError):
    """A run configuration with a value that cannot be used, or that contradicts the run it resumes."""


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _positive(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _nonnegative(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _sizes(v):
    values = v if isinstance(v, (list, tuple)) else [v]
    return len(values) >= 1 and all(_positive_int(x) for x in values)


@dataclass(frozen=True)
class Option:
    """One option: ``name`` (the config key; the flag is ``--name`` with dashes), its default and check."""

    name: str
    default: object
    help: str
    type: object = str
    choices: tuple = None
    nargs: str = None
    check: object = None  # callable value -> bool, for values that are not None
    expect: str = ""  # what the check wants, for the error message
    flag: str = None  # an explicit flag (a negated boolean)
    group: str = "run"  # data | model | objective | training | run
    applies: object = None  # callable cfg -> bool: does the option mean anything for this run?

    @property
    def cli_flag(self):
        return self.flag or "--" + self.name.replace("_", "-")


# The main job's defaults: the built-in vae on the built-in shapes data (``bash scripts/main.sh``), chosen with
# benchmarks/main_job_search.py so that the pair learns the shape factor in about 5 minutes of training on 2 cores.
# They replace the defaults of OPTIONS for that run only; options given win, and its beta gives way to any other
# choice of objective (MAIN_JOB_BETA_YIELDS_TO), which would not combine with it.
MAIN_JOB = {"num_train": 64000, "epochs": 20, "lr": 3e-3, "lr_decay": 0.7, "lr_decay_after": 14, "beta": 0.5}
MAIN_JOB_BETA_YIELDS_TO = ("objective", "dreg", "warmup", "capacity", "capacity_steps", "gamma", "free_bits")


def is_main_job(cfg):
    """Does the configuration train the built-in vae on shapes (whose defaults are :data:`MAIN_JOB`)?"""
    return cfg.get("dataset") == "shapes" and cfg.get("model") == "vae"


def _builtin(cfg):
    return ":" not in str(cfg.get("model", ""))


def _prior(*names):
    return lambda cfg: _builtin(cfg) and cfg.get("prior") in names


OPTIONS = (
    # data
    Option("dataset", "shapes", "built-in dataset", choices=DATASETS, group="data"),
    Option("data_dir", None, "folder with the dataset's files (MNIST / Fashion-MNIST IDX; dSprites: its .npz or "
           "its folder)", group="data"),
    Option("download", False, "fetch MNIST / Fashion-MNIST with torchvision (online)", type=bool, group="data"),
    Option("binarize", None, "binarization of the data: none, static (drawn once) or dynamic (drawn per batch); "
           "default: dynamic for MNIST and Fashion-MNIST, none for the others", choices=BINARIZE_CHOICES,
           group="data"),
    Option("num_train", None, "use only this many training data (default: all)", type=int, check=_positive_int,
           expect="a positive integer", group="data"),
    Option("num_test", None, "use only this many test data (default: all)", type=int, check=_positive_int,
           expect="a positive integer", group="data"),
    Option("val_size", None, "validation data (shapes: 1000, MNIST: 10000)", type=int, check=_positive_int,
           expect="a positive integer", group="data"),
    Option("condition_on", None, "pass the dataset's labels to the model and guide as the keyword argument y",
           choices=("labels",), group="data"),
    Option("num_labelled", None, "semi-supervised: keep the labels of only this many training data, balanced "
           "over the classes (with --condition-on labels)", type=int, check=_positive_int,
           expect="a positive integer", group="data"),
    # model
    Option("model", "vae", "built-in model (vae; hvae: the VampPrior paper's top-down L-level HVAE; stacked: the "
           "IWAE paper's bottom-up L-level model; cvae: conditional on labels; m2: semi-supervised) or "
           "path/to/file.py:Name", group="model"),
    Option("guide", "gaussian", "built-in guide (gaussian; iaf, householder, planar: normalizing-flow guides) or "
           "path/to/file.py:Name", group="model", applies=lambda cfg: ":" not in str(cfg.get("guide", ""))),
    Option("arch", None, "encoder/decoder networks of the built-in models (default: conv for the vae on rivers, mlp otherwise)",
           choices=("mlp", "conv"), group="model", applies=_builtin),
    Option("hidden", None, "hidden layer sizes of the built-in networks", type=int, nargs="+", check=_sizes,
           expect="positive integers", group="model", applies=_builtin),
    Option("activation", "relu", "hidden-layer nonlinearity", choices=tuple(sorted(ACTIVATIONS)), group="model",
           applies=_builtin),
    Option("latent_dim", 10, "latent size, or one per level for hierarchical models (z1 first)", type=int,
           nargs="+", check=_sizes, expect="positive integers", group="model", applies=_builtin),
    Option("levels", None, "stochastic levels of hvae/stacked (default 2)", type=int, check=_positive_int,
           expect="a positive integer", group="model",
           applies=lambda cfg: cfg.get("model") in ("hvae", "stacked")),
    Option("prior", "standard", "p(z) of the top level: standard normal, mixture of Gaussians (mog), VampPrior "
           "(vamp) or a masked autoregressive flow (flow)", choices=tuple(sorted(PRIORS)), group="model",
           applies=_builtin),
    Option("components", None, "mixture components (mog, default 10) or pseudo-inputs (vamp, default 500)",
           type=int, check=_positive_int, expect="a positive integer", group="model",
           applies=_prior("mog", "vamp")),
    Option("prior_init", "random", "VampPrior pseudo-inputs: random N(0.05, 0.01) or drawn from training data",
           choices=PSEUDO_INPUT_INITS, group="model", applies=_prior("vamp")),
    Option("prior_steps", None, "steps of the flow prior (default 4)", type=int, check=_positive_int,
           expect="a positive integer", group="model", applies=_prior("flow")),
    Option("flow_steps", None, "steps of a flow guide (iaf, householder, planar; default 2)", type=int,
           check=_positive_int, expect="a positive integer", group="model",
           applies=lambda cfg: cfg.get("guide") in ("iaf", "householder", "planar")),
    Option("decoder", "default", "the built-in decoder: the arch's network, or a gated PixelCNN conditioned on z "
           "(binary images)", choices=("default", "pixelcnn"), group="model", applies=_builtin),
    Option("layers", None, "gated layers of the PixelCNN decoder (default 5)", type=int, check=_positive_int,
           expect="a positive integer", group="model", applies=lambda cfg: cfg.get("decoder") == "pixelcnn"),
    Option("likelihood", None, "p(x|z) of the built-in models (default: bernoulli for binary data, "
           "discretized-logistic for 8-bit images, gaussian-learned otherwise)", choices=tuple(sorted(LIKELIHOODS)), group="model", applies=_builtin),
    Option("image_shape", None, "C H W of flat data, for pictures", type=int, nargs="+", check=_sizes,
           expect="positive integers", group="model"),
    # objective
    Option("objective", "elbo", "training bound: the ELBO or the importance-weighted bound with --particles K",
           choices=("elbo", "iwae"), group="objective"),
    Option("analytic_kl", True, "estimate the KL term by Monte Carlo even where it has a closed form", type=bool,
           flag="--no-analytic-kl", group="objective", applies=lambda cfg: cfg.get("objective") == "elbo"),
    Option("particles", 1, "Monte Carlo draws (IWAE: K) per datapoint", type=int, check=_positive_int,
           expect="a positive integer", group="objective"),
    Option("dreg", False, "IWAE: doubly reparameterized guide gradients", type=bool, group="objective",
           applies=lambda cfg: cfg.get("objective") == "iwae"),
    Option("warmup", 0, "KL warm-up: the KL weight grows linearly from 0 to 1 over this many epochs; early "
           "stopping ignores them", type=int, check=lambda v: isinstance(v, int) and v >= 0,
           expect="an integer >= 0", group="objective"),
    Option("beta", None, "beta-VAE: reconstruction - beta * KL (Higgins et al. 2017), e.g. 4", type=float,
           check=_nonnegative, expect="a number >= 0", group="objective"),
    Option("capacity", None, "controlled capacity: reconstruction - gamma |KL - C|, C rising linearly to this "
           "many nats (Burgess et al. 2018); needs --capacity-steps", type=float, check=_nonnegative,
           expect="a number >= 0", group="objective"),
    Option("capacity_steps", None, "SVI steps over which C rises to --capacity", type=int, check=_positive_int,
           expect="a positive integer", group="objective"),
    Option("gamma", None, "controlled capacity: weight of |KL - C| (default 1000)", type=float, check=_positive,
           expect="a number > 0", group="objective"),
    Option("free_bits", None, "free bits: the KL of each latent dimension counts as at least this many nats "
           "(Kingma et al. 2016), e.g. 0.5", type=float, check=_nonnegative, expect="a number >= 0",
           group="objective"),
    # training
    Option("epochs", 20, "training epochs", type=int, check=_positive_int, expect="a positive integer",
           group="training"),
    Option("batch_size", 128, "data per SVI step", type=int, check=_positive_int, expect="a positive integer",
           group="training"),
    Option("batching", "grouped", "with labels of part of the data (--num-labelled): grouped (each batch from one "
           "group, batches in random order) or mixed (every step a part of every group, weighted by the group's "
           "share: the M2 paper's minibatches)", choices=("grouped", "mixed"), group="training",
           applies=lambda cfg: cfg.get("num_labelled") is not None),
    Option("lr", 1e-3, "Adam's learning rate", type=float, check=_positive, expect="a number > 0",
           group="training"),
    Option("lr_decay", 1.0, "multiply the learning rate by this each epoch after the first --lr-decay-after "
           "(1: constant)", type=float, check=lambda v: _positive(v) and v <= 1, expect="a number in (0, 1]",
           group="training"),
    Option("lr_decay_after", 1, "epochs at the full learning rate before --lr-decay applies", type=int,
           check=lambda v: _nonnegative(v) and isinstance(v, int), expect="an integer >= 0", group="training"),
    Option("clip_norm", None, "clip the gradient norm to this value", type=float, check=_positive,
           expect="a number > 0", group="training"),
    Option("patience", None, "early stopping: epochs without a better validation bound", type=int,
           check=_positive_int, expect="a positive integer", group="training"),
    Option("max_bad_steps", 10, "divergence: stop after this many steps with a non-finite loss or gradient "
           "(each is skipped)", type=int, check=_positive_int, expect="a positive integer", group="training"),
    Option("seed", 0, "random seed", type=int, check=lambda v: isinstance(v, int) and v >= 0,
           expect="an integer >= 0", group="training"),
    Option("device", "cpu", "cpu or cuda", group="training"),
    Option("step_mode", "graph", "how SVI steps run (see pyrovae.infer.step)", choices=MODES, group="training"),
    Option("out", None, "run folder (default runs/<dataset>-<model>-<time>)", group="run"),
)
BY_NAME = {o.name: o for o in OPTIONS}

# options that may differ between a run and its --resume: they change how, not what, is trained
RESUMABLE = ("epochs", "patience", "device", "step_mode", "out", "max_bad_steps")


def make_config(given=None, **overrides):
    """A full configuration: the defaults of :data:`OPTIONS` updated with the options given.

    ``given`` (or keyword arguments) maps option names to values; None means
    "not given". Unknown names and bad values are :class:`ConfigError` s naming
    them. The result holds every option, ``"given"`` (the names given) and the
    derived defaults (``out``; ``binarize`` and ``arch`` per dataset; :data:`MAIN_JOB` for the vae on shapes).
    """
    values = {**(given or {}), **overrides}
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"unknown configuration keys {unknown}; known: {sorted(BY_NAME)}")
    given_names = sorted(k for k, v in values.items() if v is not None)
    cfg = {o.name: o.default for o in OPTIONS}
    cfg.update({k: values[k] for k in given_names})
    if is_main_job(cfg):
        main_job = {k: v for k, v in MAIN_JOB.items() if k not in given_names}
        if any(k in given_names for k in MAIN_JOB_BETA_YIELDS_TO):
            main_job.pop("beta", None)
        cfg.update(main_job)
    if isinstance(cfg["latent_dim"], (list, tuple)) and len(cfg["latent_dim"]) == 1:
        cfg["latent_dim"] = cfg["latent_dim"][0]
    if cfg["binarize"] is None:
        cfg["binarize"] = "dynamic" if cfg["dataset"] in ("mnist", "fashion-mnist") else "none"
    if cfg["arch"] is None:
        cfg["arch"] = "conv" if cfg["dataset"] == "rivers" and cfg["model"] == "vae" else "mlp"
    if cfg["out"] is None:
        cfg["out"] = os.path.join("runs", f"{cfg['dataset']}-{_stem(cfg['model'])}-{time.strftime('%Y%m%d-%H%M%S')}")
    cfg["given"] = given_names
    validate(cfg)
    return cfg


def _stem(model):
    return os.path.splitext(os.path.basename(str(model).rpartition(":")[0]))[0] if ":" in str(model) else model


def validate(cfg):
    """Raise :class:`ConfigError` naming every option whose value fails its check."""
    problems = []
    for option in OPTIONS:
        value = cfg.get(option.name)
        if value is None:
            continue
        if option.choices is not None and value not in option.choices:
            problems.append(f"{option.cli_flag} {value!r}: expected one of {list(option.choices)}")
        elif option.check is not None and not option.check(value):
            problems.append(f"{option.cli_flag} {value!r}: expected {option.expect}")
    if problems:
        raise ConfigError("bad configuration: " + "; ".join(problems))


def applicable(cfg):
    """The configuration without the options that mean nothing for this run (for config views and reports)."""
    return {k: v for k, v in cfg.items()
            if k not in BY_NAME or BY_NAME[k].applies is None or BY_NAME[k].applies(cfg)}


def check_resume(saved, given):
    """The saved configuration of a run with the resumable options ``given`` applied; a ConfigError naming
    every other given option that differs from the run's."""
    differ = [f"{BY_NAME[k].cli_flag} {v!r} (the run has {saved.get(k)!r})" for k, v in given.items()
              if v is not None and k in BY_NAME and k not in RESUMABLE and _normal(v) != _normal(saved.get(k))]
    # a beta the run did not ask for is the main job's, which an objective option would have replaced in a new run
    # (a config.json without "given" predates the main job's beta: its beta was asked for)
    main_job_beta = saved.get("beta") is not None and "beta" not in saved.get("given", ["beta"])
    if main_job_beta:
        differ += [f"{BY_NAME[k].cli_flag} {given[k]!r} (the run trains with the main job's --beta {saved['beta']!r})"
                   for k in MAIN_JOB_BETA_YIELDS_TO if given.get(k) is not None
                   and _normal(given[k]) == _normal(saved.get(k))]
    if differ:
        raise ConfigError("--resume continues the run as it was configured; these options differ from it: "
                          + "; ".join(differ) + ". Drop them, or train a new run with another --out")
    # an option added after the run was made gets its default, the behaviour the run trained with
    cfg = {**{o.name: o.default for o in OPTIONS if o.name not in saved}, **saved}
    cfg.update({k: v for k, v in given.items() if v is not None and k in RESUMABLE})
    validate(cfg)
    return cfg


def _normal(value):
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value] if len(value) != 1 else _normal(value[0])
    return value


def add_arguments(parser):
    """The ``pyrovae train`` options of :data:`OPTIONS` as argparse arguments (defaults None: "not given")."""
    groups = {}
    for option in OPTIONS:
        group = groups.setdefault(option.group, parser.add_argument_group(f"{option.group} options"))
        default_text = "" if option.default in (None, False) or option.type is bool else f" (default: {option.default})"
        if option.name in MAIN_JOB:
            default_text += f" (the vae on shapes: {MAIN_JOB[option.name]})"
        kwargs = {"dest": option.name, "default": None, "help": option.help + default_text}
        if option.type is bool:
            kwargs["action"] = "store_const"
            kwargs["const"] = not option.default
        else:
            kwargs["type"] = option.type
            if option.choices is not None:
                kwargs["choices"] = option.choices
            if option.nargs:
                kwargs["nargs"] = option.nargs
        group.add_argument(option.cli_flag, **kwargs)
