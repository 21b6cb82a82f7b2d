"""The built-in M2 pair (Kingma et al. 2014, arXiv 1406.5298): the weight of its classification term.

The paper's eq. 9 adds alpha * E_labelled[-log q(y | x)] with alpha = 0.1 N to a
sum over all N data, so each of the N_l labelled data carries 0.1 N / N_l; the
term trains the classifier and is no part of the bound evaluated on test data.
"""

import pytest
import torch

from pyrovae.app.build import build_pair
from pyrovae.app.config import make_config
from pyrovae.data import load_dataset
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.svi import evaluate_elbo
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
