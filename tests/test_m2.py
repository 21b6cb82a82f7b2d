"""The built-in M2 pair (Kingma et al. 2014, arXiv 1406.5298): the weight of its classification term.

The paper's eq. 9 adds alpha * E_labelled[-log q(y | x)] with alpha = 0.1 N to a
sum over all N data, so each of the N_l labelled data carries 0.1 N / N_l.
"""

import pytest

from pyrovae.app.build import build_pair
from pyrovae.app.config import make_config
from pyrovae.data import load_dataset


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
