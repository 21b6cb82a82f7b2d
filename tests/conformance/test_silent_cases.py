"""The cases that once gave silently wrong numbers: each now matches Pyro or raises a PairError naming the site.

Found by users and by running Pyro's own examples through pyrovae: a score-function latent trained without its
score term, ``infer={"enumerate": ...}`` ignored, masks multiplied instead of applied, multi-particle runs that
broke on a mask of shape [B, D], a deterministic site taken for the data, a graph step frozen in train mode, and
Pyro's global param store shared between runs.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch import nn

import pyrovae
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.iwae import IWAE
from pyrovae.infer.trace import PairError, check_pair


@pytest.fixture(autouse=True)
def fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def _cvae(entry_mask):
    """Pyro's CVAE example in miniature: the model scores y (the image's masked quadrant), given the rest x."""
    dec, enc = nn.Linear(2 + 6, 6), nn.Linear(12, 4)

    def model(xs, ys=None):
        pyro.module("dec", dec)
        with pyro.plate("data", xs.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            loc = torch.sigmoid(dec(torch.cat([z, xs.expand(*z.shape[:-1], 6)], -1)))
            pyro.deterministic("y_hat", loc)
            pyro.sample("y", dist.Bernoulli(loc, validate_args=False).mask(entry_mask).to_event(1), obs=ys)

    def guide(xs, ys=None):
        pyro.module("enc", enc)
        with pyro.plate("data", xs.shape[0]):
            loc, log_scale = enc(torch.cat([xs, ys], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide


def test_a_cvae_with_a_mask_of_shape_b_d_runs_with_particles_and_k_5000():
    mask = torch.rand(8, 6, generator=torch.Generator().manual_seed(0)) < 0.5
    model, guide = _cvae(mask)
    xs, ys = torch.rand(8, 6), (torch.rand(8, 6) < 0.5).float()
    loss, _ = ELBO(num_particles=2).loss(model, guide, xs, ys=ys)
    iwae, _ = IWAE(num_particles=3).loss(model, guide, xs, ys=ys)
    res = log_likelihood(model, guide, {"x": xs, "ys": ys}, num_samples=200, seed=0)
    assert torch.isfinite(loss) and torch.isfinite(iwae) and torch.isfinite(res.log_px).all()


def test_the_cvae_without_its_labels_is_named_not_trained_at_zero():
    """Called without ys, y is a latent the guide does not sample, and y_hat a record: not data."""
    model, guide = _cvae(torch.ones(8, 6, dtype=torch.bool))
    xs = torch.rand(8, 6)

    def guide_without_y(xs, ys=None):
        return guide(xs, torch.zeros_like(xs))

    with pytest.raises(PairError, match=r"model only \['y'\].*was its observed value passed"):
        check_pair(model, guide_without_y, xs)


def test_a_model_whose_only_observed_site_is_deterministic_is_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.deterministic("x", z.sum(-1, keepdim=True) + x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    with pytest.raises(PairError, match=r"no observed site.*pyro.deterministic sites \['x'\]"):
        check_pair(model, guide, torch.zeros(3, 1))


def test_sequential_enumeration_and_local_sampling_are_named():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(torch.ones(3) / 3))
            pyro.sample("x", dist.Normal(y.double(), 1.0), obs=x)

    def guide(how, **extra):
        def g(x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("y", dist.Categorical(torch.ones(3) / 3), infer={"enumerate": how, **extra})
        return g

    x = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(PairError, match="'y' asks for sequential enumeration"):
        check_pair(model, guide("sequential"), x)
    with pytest.raises(PairError, match="'y' asks for local parallel sampling"):
        check_pair(model, guide("parallel", num_samples=4), x)


def test_enumeration_is_honoured_not_ignored():
    """infer={"enumerate": "parallel"} sums the label out: the loss equals TraceEnum_ELBO's with no sampling noise."""
    torch.manual_seed(0)
    emb, enc = nn.Embedding(4, 5), nn.Linear(5, 4)

    def model(x):
        pyro.module("emb", emb)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(torch.ones(4) / 4))
            pyro.sample("x", dist.Bernoulli(logits=emb(y)).to_event(1), obs=x)

    @config_enumerate
    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=enc(x)))

    x = (torch.rand(6, 5) < 0.5).float()
    expected = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)
    losses = {float(ELBO().loss(model, guide, x)[0]) for _ in range(5)}
    assert len(losses) == 1 and losses.pop() * 6 == pytest.approx(expected, rel=1e-6)


def _function_pair():
    """Pyro's tutorial style: module names shared by every pair built this way."""
    dec, enc = nn.Linear(2, 6), nn.Linear(6, 4)

    def model(x):
        pyro.module("decoder", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, [dec, enc]


def test_two_function_style_pairs_trained_in_one_process_each_train_their_own_weights():
    x = (torch.rand(64, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    for _ in range(2):  # no pyro.clear_param_store() between them, as a user would forget
        model, guide, modules = _function_pair()
        before = [p.detach().clone() for m in modules for p in m.parameters()]
        pyrovae.SVIRun(model, guide, x, lr=1e-2, batch_size=32, epochs=2, progress=False).fit()
        after = [p.detach() for m in modules for p in m.parameters()]
        assert all(not torch.equal(a, b) for a, b in zip(before, after))  # all 4 tensors of this pair moved
    assert not pyro.get_param_store().keys()  # the runs kept their parameters in their own stores


def test_a_runs_bare_params_live_in_its_own_store():
    x = torch.randn(32, 3)

    def model(x):
        loc = pyro.param("loc", torch.zeros(3))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x * 0.8, 0.45).to_event(1))

    pyro.param("loc", torch.full((3,), 7.0))  # a user's own parameter of the same name stays untouched
    run = pyrovae.SVIRun(model, guide, x + 2.0, lr=5e-2, batch_size=32, epochs=150, progress=False)
    run.fit()
    assert torch.equal(pyro.param("loc").detach(), torch.full((3,), 7.0))
    with run.param_scope():  # p(z) = N(loc, 1) fitted to the guide's draws z ~ N(0.8 (x + 2), 0.45^2)
        assert torch.allclose(pyro.param("loc").detach(), (0.8 * (x + 2.0)).mean(0), atol=0.15)
