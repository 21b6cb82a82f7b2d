"""The built-in M2 pair (Kingma et al. 2014, arXiv 1406.5298): the weight of its classification term, mixed batches.

The paper's eq. 9 adds alpha * E_labelled[-log q(y | x)] with alpha = 0.1 N to a
sum over all N data, so each of the N_l labelled data carries 0.1 N / N_l; the
term trains the classifier and is no part of the bound evaluated on test data.
"""

import json
import math

import pytest
import torch

from pyrovae.app.build import build_pair
from pyrovae.app.config import make_config
from pyrovae.app.runs import train
from pyrovae.data import load_dataset
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.svi import SVIRun, evaluate_elbo
from pyrovae.infer.trace import evaluation_mode


def _pair(num_labelled):
    data = load_dataset("shapes", num_train=96, val_size=16, num_test=16, condition_on="labels",
                        num_labelled=num_labelled)
    cfg = make_config(model="m2", condition_on="labels", num_labelled=num_labelled, latent_dim=2, hidden=[16])
    model, guide, _ = build_pair(cfg, data.train)
    return model, guide, data


@pytest.mark.parametrize("num_labelled, alpha", [(12, 0.1 * 96 / 12), (None, 0.1)])
def test_each_labelled_datum_carries_a_tenth_of_n_over_n_labelled(num_labelled, alpha):
    model, _, _ = _pair(num_labelled)
    assert model.alpha == pytest.approx(alpha, rel=1e-12)


def test_the_classification_term_trains_and_stays_out_of_the_evaluated_bound():
    model, guide, data = _pair(12)
    batch = data.train.materialize(torch.nonzero(data.train.present["y"]).squeeze(1))
    x, y = batch.x.double(), batch.kwargs["y"]  # double: the two losses of ~3000 nats differ by ~1
    model.double(), guide.double()
    assert y is not None and len(y) == 12
    objective = ELBO()

    def loss(train_mode):
        torch.manual_seed(5)  # the same draws of z in both modes: the factor draws nothing
        if train_mode:
            return objective.loss(model, guide, x, y=y)[0]
        with evaluation_mode(model, guide):
            return objective.loss(model, guide, x, y=y)[0]

    with torch.no_grad():
        log_q = torch.log_softmax(guide.classifier(x), -1).gather(-1, y[:, None]).squeeze(-1)
        difference = loss(True) - loss(False)
        torch.testing.assert_close(difference, -model.alpha * log_q.mean(), rtol=1e-9, atol=1e-9)
        test = {"x": data.test.data.double(), "y": data.test.fields["y"]}
        before = evaluate_elbo(model, guide, test)
        model.alpha *= 100
        assert evaluate_elbo(model, guide, test) == before


def test_a_mixed_step_is_the_share_weighted_sum_of_its_parts():
    """batching="mixed": every step holds labelled and unlabelled data, and its gradient is
    sum_g (N_g / N) * grad(mean loss of the step's part of group g), the M2 paper's minibatch."""
    model, guide, data = _pair(12)
    run = SVIRun(model, guide, data.train, objective=ELBO(), batch_size=32, epochs=1, step_mode="eager",
                 batching="mixed", progress=False)
    steps = data.train.mixed_batch_indices(32, torch.Generator().manual_seed(0))
    assert len(steps) == 3 and all(len(parts) == 2 for parts in steps)
    parts = steps[0]
    assert [w for _, w in parts] == [84 / 96, 12 / 96]
    torch.manual_seed(3)
    run._mixed_step(parts, None)
    mixed = [p.grad.clone() for p in run.params]
    torch.manual_seed(3)
    expected = [torch.zeros_like(p) for p in run.params]
    for rows, weight in parts:
        batch = data.train.materialize(rows)
        for p in run.params:
            p.grad = None
        ELBO().loss(model, guide, batch.x, **batch.kwargs)[0].backward()
        expected = [e + weight * (0 if p.grad is None else p.grad) for e, p in zip(expected, run.params)]
    for got, want in zip(mixed, expected):
        torch.testing.assert_close(got, want)


def test_the_cli_trains_m2_with_mixed_batches(tmp_path):
    cfg = make_config(model="m2", condition_on="labels", num_labelled=12, latent_dim=2, hidden=[16], num_train=96,
                      val_size=16, num_test=16, epochs=1, batch_size=32, batching="mixed", out=str(tmp_path / "run"))
    train(cfg, progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["batching"] == "mixed"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 3 and math.isfinite(rows[0]["train_elbo"])
