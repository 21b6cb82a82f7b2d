"""Conformance: pyrovae's objectives, estimators and recorded step against Pyro's own, pair by pair.

For every pair of :mod:`conformance_pairs` (the styles Pyro's users write):

- the loss and every parameter's gradient equal those of the matching Pyro
  estimator (``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceGraph_ELBO``,
  ``TraceEnum_ELBO``) on the same random draws, with one particle and with
  three vectorized particles;
- ``log_likelihood`` agrees with the exact log p(x) where the pair has one
  (closed-form linear-Gaussian marginals, or a discrete latent summed out);
- the recorded training step gives the eager step's gradients.

Then the estimators that have no Pyro twin are checked against exact
expectations: the score-function gradients of the ELBO and of IWAE against
the exact gradient by enumeration, IWAE against ``RenyiELBO(alpha=0)``.
"""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from torch import nn

import conformance_pairs as pairs
from pyrovae.data import Batch
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.iwae import IWAE
from pyrovae.infer.step import StepFunction
from pyrovae.infer.trace import check_pair, pair_modules

ESTIMATORS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO, "graph": TraceGraph_ELBO,
              "enum": TraceEnum_ELBO}


@pytest.fixture(autouse=True)
def float64_and_a_fresh_store():
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    pyro.clear_param_store()
    with pyro.validation_enabled(False):
        yield
    torch.set_default_dtype(dtype)
    pyro.clear_param_store()


def _ids(make):
    return make().name


def make_pair(factory):
    torch.manual_seed(0)
    pair = factory()
    torch.manual_seed(1)
    with torch.no_grad():  # register the param-store parameters, as a first run does
        ELBO(analytic_kl=pair.analytic_kl).loss(pair.model, pair.guide, *pair.args, **pair.kwargs)
    return pair


def params_of(pair):
    found = {id(p): p for m in pair.modules + pair_modules(pair.model, pair.guide) for p in m.parameters()}
    for p in pyro.get_param_store()._params.values():
        found.setdefault(id(p), p)
    return list(found.values())


def grads_of(params, loss):
    for p in params:
        p.grad = None
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]


def pyro_loss_and_grads(pair, params, k, seed):
    estimator = ESTIMATORS[pair.estimator](num_particles=k, vectorize_particles=k > 1,
                                           max_plate_nesting=pair.nesting)
    torch.manual_seed(seed)
    if pair.estimator == "graph":  # TraceGraph_ELBO has no differentiable_loss: its (ELBO, surrogate loss)
        elbo, surrogate = estimator._loss_and_surrogate_loss(pair.model, pair.guide, pair.args, pair.kwargs)
        return -float(elbo), grads_of(params, surrogate)
    loss = estimator.differentiable_loss(pair.model, pair.guide, *pair.args, **pair.kwargs)
    return float(loss), grads_of(params, loss)


@pytest.mark.parametrize("factory,k", [(f, 1) for f in pairs.ALL] + [(f, 3) for f in pairs.ALL if f().particles],
                         ids=lambda v: _ids(v) if callable(v) else f"K={v}")
def test_loss_and_gradients_equal_pyros_on_the_same_draws(factory, k):
    pair = make_pair(factory)
    params = params_of(pair)
    expected_loss, expected = pyro_loss_and_grads(pair, params, k, seed=7)
    objective = ELBO(analytic_kl=pair.analytic_kl, num_particles=k)
    objective.nesting(pair.model, pair.guide, *pair.args, **pair.kwargs)  # as Pyro, found before the draws
    torch.manual_seed(7)
    loss, stats = objective.loss(pair.model, pair.guide, *pair.args, **pair.kwargs)
    got = grads_of(params, loss * pair.num_data)
    assert math.isfinite(expected_loss)
    assert float(loss) * pair.num_data == pytest.approx(expected_loss, rel=1e-9, abs=1e-9)
    assert float(stats["elbo"]) * pair.num_data == pytest.approx(-expected_loss, rel=1e-9, abs=1e-9)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-10)


def test_nan_under_a_mask_costs_nothing_as_in_pyro():
    """Pyro's scale_and_mask replaces masked entries (torch.where): NaN data there leave the loss finite."""
    pair = make_pair(lambda: pairs.tensor_masks(invalid=float("nan")))
    with torch.no_grad():
        torch.manual_seed(0)
        expected = Trace_ELBO().loss(pair.model, pair.guide, *pair.args)
        torch.manual_seed(0)
        loss, _ = ELBO(analytic_kl=False).loss(pair.model, pair.guide, *pair.args)
    assert math.isfinite(expected) and float(loss) * pairs.B == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("factory", [f for f in pairs.ALL if f().exact_log_px is not None], ids=_ids)
def test_log_likelihood_agrees_with_the_exact_log_px(factory):
    pair = make_pair(factory)
    with torch.no_grad():
        exact = pair.exact_log_px()
    data = {"x": pair.args[0], **pair.kwargs}
    res = log_likelihood(pair.model, pair.guide, data, num_samples=4000, seed=0)
    # the estimate is biased down by about se^2 / 2 (delta method); 5 standard errors cover the noise
    assert torch.all((res.log_px - exact).abs() <= 5 * res.std_error + res.std_error ** 2 + 1e-9), (
        res.log_px, exact, res.std_error)


@pytest.mark.parametrize("factory", pairs.ALL, ids=_ids)
def test_the_recorded_step_gives_the_eager_steps_gradients(factory):
    pair = make_pair(factory)
    params = params_of(pair)
    module = ELBO(analytic_kl=pair.analytic_kl)(pair.model, pair.guide)
    graph = StepFunction(module, params, "graph", timed=False)
    eager = StepFunction(module, params, "eager")
    batch = Batch(pair.args[0], pair.kwargs)
    graph(batch)  # records, checks against an eager step
    for step in (graph, eager):
        torch.manual_seed(11)
        step(batch)
        if step is graph:
            recorded = [p.grad.clone() for p in params]
    for r, e in zip(recorded, params):
        torch.testing.assert_close(r, e.grad, rtol=1e-7, atol=1e-9)
    if pair.estimator in ("trace", "meanfield"):
        assert graph.mode == "graph", graph.reason  # reparameterized pairs are recorded, whatever their style


def test_after_eval_the_recorded_step_switches_dropout_off_as_eager_does():
    pair = make_pair(pairs.dropout)
    params = params_of(pair)
    module = ELBO()(pair.model, pair.guide)
    graph, eager = StepFunction(module, params, "graph", timed=False), StepFunction(module, params, "eager")
    batch = Batch(pair.args[0])
    graph(batch)
    vae = pair.modules[0]
    vae.eval()
    for step in (graph, eager):
        torch.manual_seed(3)
        step(batch)
        if step is graph:
            recorded = [p.grad.clone() for p in params]
    assert graph.mode == "graph" and len(graph._graphs) == 2  # a second graph for eval mode
    for r, p in zip(recorded, params):
        torch.testing.assert_close(r, p.grad)


# -- score-function gradients: unbiased against the exact gradient by enumeration --------------------------

def _exact_elbo(pair, states):
    """sum_z q(z|x) [log p(x, z) - log q(z|x)] summed over the batch, by enumerating the latent's states."""
    model, guide = pair.model, pair.guide
    x = pair.args[0]
    total = 0.0
    for z in states:
        value = z.expand(x.shape[0], *z.shape)
        conditioned = {"z": value} if "z" in check_pair(model, guide, x).latents else {"y": value}
        gtr = pyro.poutine.trace(pyro.poutine.condition(guide, conditioned)).get_trace(x)
        mtr = pyro.poutine.trace(pyro.poutine.condition(model, conditioned)).get_trace(x)
        gtr.compute_log_prob()
        mtr.compute_log_prob()
        name = next(iter(conditioned))
        log_q = gtr.nodes[name]["log_prob"]
        log_joint = sum(s["log_prob"] for s in mtr.nodes.values() if s["type"] == "sample")
        total = total + (log_q.exp() * (log_joint - log_q)).sum()
    return total


@pytest.mark.parametrize("factory,states", [
    (pairs.bernoulli_latent, [torch.tensor(s, dtype=torch.float64) for s in itertools.product([0, 1], repeat=3)]),
    (pairs.categorical_latent, [torch.tensor(c) for c in range(4)]),
], ids=["bernoulli", "categorical"])
def test_score_function_elbo_gradient_is_unbiased(factory, states):
    pair = make_pair(factory)
    params = params_of(pair)
    exact = grads_of(params, -_exact_elbo(pair, states))
    k = 20000
    objective = ELBO(num_particles=k)
    torch.manual_seed(5)
    loss, _ = objective.loss(pair.model, pair.guide, *pair.args)
    mean = grads_of(params, loss * pairs.B)
    # the standard error of the k-particle mean, from 20 independent 1000-particle estimates
    small = ELBO(num_particles=1000)
    draws = []
    for seed in range(20):
        torch.manual_seed(100 + seed)
        draws.append(grads_of(params, small.loss(pair.model, pair.guide, *pair.args)[0] * pairs.B))
    for i, (m, e) in enumerate(zip(mean, exact)):
        spread = torch.stack([d[i] for d in draws]).std(0) * math.sqrt(1000 / k)
        assert torch.all((m - e).abs() <= 5 * spread + 1e-8), (i, m, e, spread)


def _exact_iwae_bound(pair, states, k):
    """E over K independent draws of log mean_k w_k, summed over the batch, by enumerating all K-tuples."""
    model, guide = pair.model, pair.guide
    x = pair.args[0]
    log_q, log_w = [], []
    for z in states:
        value = z.expand(x.shape[0], *z.shape)
        gtr = pyro.poutine.trace(pyro.poutine.condition(guide, {"z": value})).get_trace(x)
        mtr = pyro.poutine.trace(pyro.poutine.condition(model, {"z": value})).get_trace(x)
        gtr.compute_log_prob()
        mtr.compute_log_prob()
        lq = gtr.nodes["z"]["log_prob"]
        log_q.append(lq)
        log_w.append(sum(s["log_prob"] for s in mtr.nodes.values() if s["type"] == "sample") - lq)
    log_q, log_w = torch.stack(log_q), torch.stack(log_w)  # [S, B]
    total = 0.0
    for tup in itertools.product(range(len(states)), repeat=k):
        idx = list(tup)
        prob = log_q[idx].sum(0).exp()
        total = total + (prob * (torch.logsumexp(log_w[idx], 0) - math.log(k))).sum()
    return total


def test_iwae_score_function_gradient_is_unbiased():
    """VIMCO's leave-one-out signals keep the IWAE gradient unbiased for a Bernoulli guide."""
    pair = make_pair(pairs.bernoulli_latent)
    params = params_of(pair)
    states = [torch.tensor(s, dtype=torch.float64) for s in itertools.product([0, 1], repeat=3)]
    k = 3
    exact = grads_of(params, -_exact_iwae_bound(pair, states, k))
    objective = IWAE(num_particles=k)
    estimates = []
    for seed in range(400):
        torch.manual_seed(seed)
        estimates.append(grads_of(params, objective.loss(pair.model, pair.guide, *pair.args)[0] * pairs.B))
    for i, e in enumerate(exact):
        draws = torch.stack([d[i] for d in estimates])
        mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(estimates))
        assert torch.all((mean - e).abs() <= 5 * se + 1e-8), (i, mean, e, se)


@pytest.mark.parametrize("factory", [lambda: pairs.module_style(False), pairs.function_style, pairs.scaled,
                                     pairs.two_observed], ids=_ids)
@pytest.mark.parametrize("dreg", [False, True])
def test_iwae_equals_pyros_renyi_elbo_at_alpha_0_datum_by_datum(factory, dreg):
    """RenyiELBO treats a whole batch as one datum: compare on one datum at a time, same draws."""
    pair = make_pair(factory)
    params = params_of(pair)
    k = 6
    for i in range(2):
        args = (pair.args[0][i:i + 1],)
        kwargs = {n: v[i:i + 1] for n, v in pair.kwargs.items()}
        renyi = RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=pair.nesting)
        for p in params:
            p.grad = None
        torch.manual_seed(20 + i)
        expected_loss = renyi.loss_and_grads(_registering(pair.model, params), pair.guide, *args, **kwargs)
        expected = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
        objective = IWAE(num_particles=k, dreg=dreg)
        objective.nesting(pair.model, pair.guide, *args, **kwargs)
        torch.manual_seed(20 + i)
        loss, _ = objective.loss(pair.model, pair.guide, *args, **kwargs)
        assert float(loss) == pytest.approx(expected_loss, rel=1e-9)
        got = grads_of(params, loss)
        if not dreg:  # DReG changes the guide's gradient estimator on purpose; the model's stays
            for g, e in zip(got, expected):
                torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-10)


def _registering(model, params):
    """``model`` that registers ``params`` with ``pyro.module``: Pyro's loss_and_grads differentiates only then."""
    holder = nn.ParameterList(params)

    def registered(*args, **kwargs):
        pyro.module("conformance", holder)
        return model(*args, **kwargs)

    return registered


def test_an_enumerated_label_is_summed_inside_each_particle():
    """With q(z | x, y) the exact posterior, w_k = sum_y p(x, y, z_k^y) / q(z_k^y | x, y) = p(x) for every draw.

    So the IWAE bound and the K-sample log-likelihood are exact with no Monte Carlo error, whatever q(y | x)
    is -- which holds only if the label is summed out inside each particle rather than drawn.
    """
    pair = make_pair(pairs.semi_supervised_m2)
    dec, enc_y = pair.modules[0], pair.modules[1]
    w, b, s, classes = dec.w, dec.b, 0.6, 3
    cov = torch.linalg.inv(torch.eye(pairs.D_Z) + w.T @ w / s ** 2)

    @pyro.infer.config_enumerate
    def exact_guide(x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=enc_y(x)))
            loc = ((x - b[y]) @ w) @ cov.T / s ** 2
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

    x = pair.args[0]
    with torch.no_grad():
        exact = pair.exact_log_px()
        for k in (1, 7):
            torch.manual_seed(k)
            loss, _ = IWAE(num_particles=k).loss(pair.model, exact_guide, x)
            assert float(-loss) == pytest.approx(float(exact.mean()), abs=1e-9)
        res = log_likelihood(pair.model, exact_guide, x, num_samples=50, seed=0)
    torch.testing.assert_close(res.log_px, exact, rtol=0, atol=1e-9)
    assert float(res.std_error.max()) < 1e-6


def test_the_m2_pair_trains_with_q_y_in_use_and_its_loss_is_traceenums(tmp_path):
    """Trained by pyrovae, M2 keeps its classifier q(y|x) spread over the classes (no collapse)."""
    import pyrovae

    pair = make_pair(pairs.semi_supervised_m2)
    torch.manual_seed(0)
    x = torch.cat([torch.randn(60, pairs.D_X) + 2.0 * torch.tensor([1.0, 0, 0, 0]) * c for c in range(3)])
    run = pyrovae.SVIRun(pair.model, pair.guide, x, lr=1e-2, batch_size=30, epochs=15, progress=False)
    run.fit()
    enc_y = pair.modules[1]
    with torch.no_grad():
        probs = torch.softmax(enc_y(x), -1)
    usage = probs.mean(0)
    entropy = float(-(usage * usage.log()).sum())
    assert entropy > 0.5, usage  # the 8-class collapse of the old estimator had entropy 0.008
