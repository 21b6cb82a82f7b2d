"""Model/guide pairs written the ways Pyro's users write them, for the conformance suite.

Each :class:`Pair` holds a model and a guide, the arguments of one batch, the
Pyro estimator whose numbers pyrovae's must equal on the same random draws,
and, where one exists, the exact log p(x) of every datum. All arithmetic is
float64 (set by the suite), so "equal" means to float rounding.
"""

import itertools
import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import config_enumerate
from pyro.nn import PyroModule, PyroParam, PyroSample
from torch import nn

B = 5  # data per batch


@dataclass
class Pair:
    name: str
    model: object
    guide: object
    args: tuple
    kwargs: dict = field(default_factory=dict)
    estimator: str = "trace"  # trace | meanfield | graph | enum: the Pyro ELBO to equal
    analytic_kl: bool = False
    nesting: int = 1
    exact_log_px: object = None  # callable () -> [B] exact log p(x), or None
    particles: bool = True  # the pair vectorizes over an outer particle plate
    modules: list = field(default_factory=list)  # modules that hold parameters outside the programs
    num_data: int = B  # the per-datapoint normaliser: B, or N for a subsampled data plate


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_g(seed))


def _binary(*shape, seed=0):
    return (torch.rand(*shape, generator=_g(seed)) < 0.4).double()


# -- linear-Gaussian pairs (probabilistic PCA): exact log p(x) = log N(x; b, W W^T + s^2 I) ------------

D_X, D_Z = 4, 2


def _ppca_log_px(x, w, b, s):
    cov = w @ w.T + s ** 2 * torch.eye(w.shape[0])
    return dist.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)


class _ModuleModel(nn.Module):
    """p(z) = N(0, I), p(x | z) = N(W z + b, s^2): an ``nn.Module`` whose forward is the model."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(_randn(D_X, D_Z, seed=1))
        self.b = nn.Parameter(_randn(D_X, seed=2))
        self.log_s = nn.Parameter(torch.tensor(-0.3))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.w.T + self.b, self.log_s.exp()).to_event(1), obs=x)


class _ModuleGuide(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(D_X, 2 * D_Z)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.net(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def module_style(analytic_kl):
    model, guide = _ModuleModel(), _ModuleGuide()
    x = _randn(B, D_X, seed=3)
    return Pair("nn.Module" + (" (closed-form KL)" if analytic_kl else ""), model, guide, (x,),
                estimator="meanfield" if analytic_kl else "trace", analytic_kl=analytic_kl,
                exact_log_px=lambda: _ppca_log_px(x, model.w, model.b, model.log_s.exp()))


class _PyroModel(PyroModule):
    """A ``PyroModule`` with a ``PyroSample`` latent and ``PyroParam`` weights."""

    def __init__(self):
        super().__init__()
        self.w = PyroParam(_randn(D_X, D_Z, seed=4))
        self.s = PyroParam(torch.tensor(0.7), constraint=constraints.positive)
        self.z = PyroSample(lambda self: dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = self.z
            pyro.sample("x", dist.Normal(z @ self.w.T, self.s).to_event(1), obs=x)


class _PyroGuide(PyroModule):
    def __init__(self):
        super().__init__()
        self.a = PyroParam(0.1 * _randn(D_Z, D_X, seed=5))
        self.scale = PyroParam(0.5 * torch.ones(D_Z), constraint=constraints.positive)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ self.a.T, self.scale).to_event(1))


def pyromodule_style():
    model, guide = _PyroModel(), _PyroGuide()
    x = _randn(B, D_X, seed=6)
    return Pair("PyroModule + PyroSample + PyroParam", model, guide, (x,), estimator="meanfield",
                analytic_kl=True,
                exact_log_px=lambda: _ppca_log_px(x, model.w, torch.zeros(D_X), model.s))


def function_style():
    """Pyro's tutorial style: plain functions, ``pyro.module`` for the networks, ``pyro.param`` for a scale."""
    decoder, encoder = nn.Linear(D_Z, D_X), nn.Linear(D_X, 2 * D_Z)
    with torch.no_grad():
        decoder.weight.copy_(_randn(D_X, D_Z, seed=7))

    def model(x):
        pyro.module("decoder", decoder)
        s = pyro.param("noise", torch.tensor(0.8), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), s).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    x = _randn(B, D_X, seed=8)
    return Pair("functions with pyro.module and pyro.param", model, guide, (x,), modules=[decoder, encoder],
                exact_log_px=lambda: _ppca_log_px(x, decoder.weight, decoder.bias, pyro.param("noise")))


# -- masks, scales, plates -------------------------------------------------------------------------------

class _BernoulliVAE(nn.Module):
    """A tiny Bernoulli VAE on flat binary vectors, with optional masks and a scale.

    ``entry_mask`` [B, D] masks entries of x inside the likelihood (``fn.mask``), ``data_mask`` [B] masks
    whole data (``poutine.mask``), ``latent_mask`` masks the latent site, ``scale`` scales every site.
    """

    def __init__(self, d_x=6, entry_mask=None, data_mask=None, latent_mask=None, scale=None):
        super().__init__()
        self.d_x = d_x
        self.dec = nn.Linear(D_Z, d_x)
        self.enc = nn.Linear(d_x, 2 * D_Z)
        self.entry_mask, self.data_mask, self.latent_mask = entry_mask, data_mask, latent_mask
        self.scale = 1.0 if scale is None else scale

    def _masks(self):
        return (poutine.mask(mask=True if self.data_mask is None else self.data_mask),
                poutine.mask(mask=True if self.latent_mask is None else self.latent_mask))

    def model(self, x):
        data_mask, latent_mask = self._masks()
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=self.scale), data_mask:
            with latent_mask:
                z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))
            likelihood = dist.Bernoulli(logits=self.dec(z), validate_args=False)
            if self.entry_mask is not None:
                likelihood = likelihood.mask(self.entry_mask)
            pyro.sample("x", likelihood.to_event(1), obs=x)

    def guide(self, x):
        data_mask, latent_mask = self._masks()
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=self.scale), data_mask, latent_mask:
            loc, log_scale = self.enc(torch.nan_to_num(x)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


class _PerEntryVAE(_BernoulliVAE):
    """x scored per entry under a nested plate: data at dim -2, ``pyro.plate("features", D)`` at dim -1."""

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))  # [..., B, 1, D_Z]
            with pyro.plate("features", self.d_x, dim=-1):
                pyro.sample("x", dist.Bernoulli(logits=self.dec(z).squeeze(-2)), obs=x)  # [..., B, D]

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-2):
            loc, log_scale = self.enc(x).unsqueeze(-2).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def tensor_masks(invalid=7.0):
    """A mask [B, D] of entries inside the likelihood over invalid entries (7, or NaN), and a mask [B] of data."""
    entries = torch.rand(B, 6, generator=_g(9)) < 0.7
    x = torch.where(entries, _binary(B, 6, seed=10), torch.tensor(invalid))
    vae = _BernoulliVAE(entry_mask=entries, data_mask=torch.tensor([True, False, True, True, False]))
    return Pair("tensor masks over invalid entries and whole data", vae.model, vae.guide, (x,), modules=[vae])


def mask_false():
    """``poutine.mask(mask=False)`` on the latent: its KL term is 0, also in closed form."""
    vae = _BernoulliVAE(latent_mask=False)
    return Pair("poutine.mask(mask=False) on the latent", vae.model, vae.guide, (_binary(B, 6, seed=11),),
                estimator="meanfield", analytic_kl=True, modules=[vae])


def scaled():
    vae = _BernoulliVAE(scale=0.3)
    return Pair("poutine.scale(0.3)", vae.model, vae.guide, (_binary(B, 6, seed=12),), estimator="meanfield",
                analytic_kl=True, modules=[vae])


def nested_plate():
    vae = _PerEntryVAE()
    x = _binary(B, 6, seed=13)  # data at dim -2, features at dim -1
    return Pair("a nested plate per feature", vae.model, vae.guide, (x,), nesting=2, modules=[vae])


def subsampled():
    """``pyro.plate("data", N, subsample_size=B)`` over the full data: Pyro scales by N / B."""
    full = _binary(20, 6, seed=14)
    dec, enc = nn.Linear(D_Z, 6), nn.Linear(6, 2 * D_Z)

    def model(data):
        pyro.module("dec", dec)
        with pyro.plate("data", data.shape[0], subsample_size=B) as idx:
            z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=data[idx])

    def guide(data):
        pyro.module("enc", enc)
        with pyro.plate("data", data.shape[0], subsample_size=B) as idx:
            loc, log_scale = enc(data[idx]).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return Pair("a subsampled data plate", model, guide, (full,), modules=[dec, enc], particles=False, num_data=20)


def two_observed():
    """Two observed sites from one latent: binary features and a real-valued one."""
    dec_a, dec_b, enc = nn.Linear(D_Z, 6), nn.Linear(D_Z, 1), nn.Linear(7, 2 * D_Z)

    def model(x, y):
        pyro.module("dec_a", dec_a)
        pyro.module("dec_b", dec_b)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec_a(z)).to_event(1), obs=x)
            pyro.sample("y", dist.Normal(dec_b(z), 0.5).to_event(1), obs=y)

    def guide(x, y):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = enc(torch.cat([x, y], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return Pair("two observed sites", model, guide, (_binary(B, 6, seed=15),), {"y": _randn(B, 1, seed=16)},
                modules=[dec_a, dec_b, enc])


def tabular():
    """Tabular rows: 3 real columns (learned scales) and 2 binary columns, one latent."""
    dec, enc = nn.Linear(D_Z, 5), nn.Linear(5, 2 * D_Z)
    rows = torch.cat([_randn(B, 3, seed=17), _binary(B, 2, seed=18)], -1)

    def model(x):
        pyro.module("dec", dec)
        log_scale = pyro.param("log_scale", torch.zeros(3))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))
            out = dec(z)
            pyro.sample("real", dist.Normal(out[..., :3], log_scale.exp()).to_event(1), obs=x[..., :3])
            pyro.sample("binary", dist.Bernoulli(logits=out[..., 3:]).to_event(1), obs=x[..., 3:])

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return Pair("tabular data (real and binary columns)", model, guide, (rows,), modules=[dec, enc])


def conditional():
    """A conditional VAE: p(x | z, y) q(z | x, y) with the label y a keyword argument (one-hot)."""
    dec, enc = nn.Linear(D_Z + 3, 6), nn.Linear(6 + 3, 2 * D_Z)
    y = nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 0]), 3).double()

    def model(x, y):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(torch.cat([z, y.expand(*z.shape[:-1], 3)], -1))).to_event(1),
                        obs=x)

    def guide(x, y):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = enc(torch.cat([x, y], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return Pair("a conditioning argument", model, guide, (_binary(B, 6, seed=19),), {"y": y}, modules=[dec, enc])


def records_and_factors():
    """``pyro.deterministic`` records and a ``pyro.factor`` term beside the likelihood."""
    dec, enc = nn.Linear(D_Z, 6), nn.Linear(6, 2 * D_Z)

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))
            pyro.deterministic("z_norm", z.norm(dim=-1))
            pyro.factor("shrink", -0.1 * z.pow(2).sum(-1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return Pair("pyro.deterministic and pyro.factor", model, guide, (_binary(B, 6, seed=20),), modules=[dec, enc])


def relaxed_categorical():
    """A reparameterized relaxed one-hot categorical latent (Jang et al. 2017; Maddison et al. 2017)."""
    dec, enc = nn.Linear(3, 6), nn.Linear(6, 3)
    temperature = torch.tensor(0.5)

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.RelaxedOneHotCategorical(temperature, logits=torch.zeros(3)))
            pyro.sample("x", dist.Bernoulli(logits=dec(c)).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.RelaxedOneHotCategorical(temperature, logits=enc(x)))

    return Pair("a relaxed categorical latent", model, guide, (_binary(B, 6, seed=21),), modules=[dec, enc])


# -- discrete latents: score function and enumeration; exact log p(x) by summing the latent out --------

def _bernoulli_latent_pair(prior_probs):
    d = len(prior_probs)
    dec, enc = nn.Linear(d, 6), nn.Linear(6, d)

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(prior_probs).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=enc(x)).to_event(1))

    def exact(x):
        states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=x.dtype)  # [S, d]
        log_pz = dist.Bernoulli(prior_probs).to_event(1).log_prob(states)  # [S]
        log_px_z = dist.Bernoulli(logits=dec(states).unsqueeze(1)).to_event(1).log_prob(x)  # [S, B]
        return torch.logsumexp(log_pz.unsqueeze(1) + log_px_z, 0)

    return model, guide, [dec, enc], exact


def bernoulli_latent():
    model, guide, modules, exact = _bernoulli_latent_pair(torch.tensor([0.3, 0.5, 0.6]))
    x = _binary(B, 6, seed=22)
    return Pair("a Bernoulli latent (score function)", model, guide, (x,), estimator="graph", modules=modules,
                exact_log_px=lambda: exact(x))


def _categorical_pair(enumerate_in_guide):
    c = 4
    dec, enc = nn.Embedding(c, 6), nn.Linear(6, c)
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4])

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(prior))
            pyro.sample("x", dist.Bernoulli(logits=dec(y)).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=enc(x)))

    def exact(x):
        log_px_y = dist.Bernoulli(logits=dec.weight.unsqueeze(1)).to_event(1).log_prob(x)  # [C, B]
        return torch.logsumexp(prior.log().unsqueeze(1) + log_px_y, 0)

    return model, (config_enumerate(guide) if enumerate_in_guide else guide), [dec, enc], exact


def categorical_latent():
    model, guide, modules, exact = _categorical_pair(False)
    x = _binary(B, 6, seed=23)
    return Pair("a Categorical latent (score function)", model, guide, (x,), estimator="graph", modules=modules,
                exact_log_px=lambda: exact(x))


def enumerated_categorical():
    model, guide, modules, exact = _categorical_pair(True)
    x = _binary(B, 6, seed=24)
    return Pair("an enumerated Categorical (config_enumerate)", model, guide, (x,), estimator="enum",
                modules=modules, exact_log_px=lambda: exact(x))


class _M2Decoder(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.w = nn.Parameter(_randn(D_X, D_Z, seed=25))
        self.b = nn.Parameter(_randn(classes, D_X, seed=26))


def semi_supervised_m2():
    """Kingma et al. 2014's M2 in Pyro's ss-vae style: y ~ Cat enumerated in the guide, z | y Gaussian.

    Linear-Gaussian given y, so log p(x) = logsumexp_y [log p(y) + log N(x; b_y, W W^T + s^2 I)] exactly.
    """
    c = 3
    dec = _M2Decoder(c)
    enc_y, enc_z = nn.Linear(D_X, c), nn.Linear(D_X + c, 2 * D_Z)
    prior = torch.tensor([0.5, 0.3, 0.2])
    s = 0.6

    def model(x, y=None):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(prior), obs=y)
            z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ dec.w.T + dec.b[y], s).to_event(1), obs=x)

    @config_enumerate
    def guide(x, y=None):
        pyro.module("enc_y", enc_y)
        pyro.module("enc_z", enc_z)
        with pyro.plate("data", x.shape[0]):
            if y is None:
                y = pyro.sample("y", dist.Categorical(logits=enc_y(x)))
            onehot = nn.functional.one_hot(y, c).to(x.dtype)
            shape = torch.broadcast_shapes(onehot.shape[:-1], x.shape[:-1])
            h = torch.cat([x.expand(*shape, D_X), onehot.expand(*shape, c)], -1)
            loc, log_scale = enc_z(h).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    x = _randn(B, D_X, seed=27)

    def exact():
        cov = dec.w @ dec.w.T + s ** 2 * torch.eye(D_X)
        log_px_y = dist.MultivariateNormal(dec.b.unsqueeze(1), covariance_matrix=cov).log_prob(x)  # [C, B]
        return torch.logsumexp(prior.log().unsqueeze(1) + log_px_y, 0)

    return Pair("M2: an enumerated label and a Gaussian z | y", model, guide, (x,), estimator="enum",
                modules=[dec, enc_y, enc_z], exact_log_px=exact)


class _Locations(nn.Module):
    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor([[-2.0, 0.0], [1.0, 1.5], [2.5, -1.0]]))


def model_enumerated_mixture():
    """A Gaussian mixture enumerated in the model (the guide samples z only): x | z, c ~ N(z + mu_c, s^2)."""
    locs = _Locations()
    weights = torch.tensor([0.2, 0.5, 0.3])
    enc = nn.Linear(2, 4)
    s = 0.5

    @config_enumerate
    def model(x):
        pyro.module("locs", locs)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(weights))
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z + locs.mu[c], s).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    x = _randn(B, 2, seed=28)

    def exact():
        comp = dist.Normal(locs.mu.unsqueeze(1), math.sqrt(1 + s ** 2)).to_event(1).log_prob(x)  # [C, B]
        return torch.logsumexp(weights.log().unsqueeze(1) + comp, 0)

    return Pair("a mixture label enumerated in the model", model, guide, (x,), estimator="enum",
                modules=[locs, enc], exact_log_px=exact)


class _DropoutVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.dec = nn.Sequential(nn.Linear(D_Z, 8), nn.Dropout(0.5), nn.Linear(8, 6))
        self.enc = nn.Linear(6, 2 * D_Z)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(D_Z), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def dropout():
    vae = _DropoutVAE()
    return Pair("dropout (a module with .model/.guide, Pyro's example style)", vae.model, vae.guide,
                (_binary(B, 6, seed=29),), modules=[vae])


ALL = [lambda: module_style(False), lambda: module_style(True), pyromodule_style, function_style, tensor_masks,
       mask_false, scaled, nested_plate, subsampled, two_observed, tabular, conditional, records_and_factors,
       relaxed_categorical, bernoulli_latent, categorical_latent, enumerated_categorical, semi_supervised_m2,
       model_enumerated_mixture, dropout]
