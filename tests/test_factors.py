"""pyrovae.evaluate.factors on synthetic codes whose information about the rivers inputs is known in closed form."""

import math

import numpy as np
import pytest

from pyrovae.data import rivers
from pyrovae.evaluate.factors import curvature_vs_turns, factor_latent_information, most_informative_dims

N = 5000
INPUTS, NAMES = rivers.draw_inputs(0, np.arange(N)).table()
COLUMN = {name: k for k, name in enumerate(NAMES)}


def binomial_entropy(n):
    """H(Binomial(n, 1/2)) in nats."""
    p = np.array([math.comb(n, k) for k in range(n + 1)]) / 2**n
    return float(-(p * np.log(p)).sum())


def codes_from(*columns, noise=0.05, seed=0):
    """Codes: the given input columns plus N(0, noise^2) noise, then two dimensions of pure noise."""
    rng = np.random.default_rng(seed)
    signal = np.stack([INPUTS[:, COLUMN[c]] for c in columns], axis=1)
    return np.concatenate([signal + noise * rng.normal(size=signal.shape), rng.normal(size=(N, 2))], axis=1)


def test_a_dimension_that_sums_the_turns_follows_the_net_curvature():
    info = factor_latent_information(codes_from("net_curvature", noise=0.05), INPUTS, NAMES)
    c = COLUMN["net_curvature"]
    # the code determines the sum (levels 2 apart, noise 0.05): I(z; S) = H(S), H(Binomial(8, 1/2)); the plug-in
    # entropy's standard error at N = 5000 is about 0.01 nats
    assert info.mi[0, c] == pytest.approx(binomial_entropy(8), abs=0.03)
    # given one turn the sum is that turn plus a Binomial(7) sum: I(S; T_1) = H(Binomial(8)) - H(Binomial(7))
    exact = binomial_entropy(8) - binomial_entropy(7)
    turns = [COLUMN[f"turn_{k}"] for k in range(1, 9)]
    assert np.allclose(info.mi[0, turns], exact, atol=0.015)
    result = curvature_vs_turns(info)
    assert result["dim"] == 0 and result["curvature_explains_better"]
    assert result["corrected_mi_curvature"] > 10 * result["corrected_mi_best_turn"]


def test_a_dimension_that_copies_one_turn_is_not_credited_to_the_curvature():
    info = factor_latent_information(codes_from("turn_3"), INPUTS, NAMES)
    result = curvature_vs_turns(info)
    assert result["dim"] == 0 and result["best_turn"] == "turn_3"
    assert result["mi_best_turn"] == pytest.approx(math.log(2), abs=0.01)  # H(turn) = ln 2
    assert result["mi_curvature"] == pytest.approx(binomial_entropy(8) - binomial_entropy(7), abs=0.015)
    assert not result["curvature_explains_better"]


def test_copies_are_found_with_their_runner_up():
    codes = codes_from("grass", "net_curvature", "heading", noise=0.01)
    codes[:, 0] = INPUTS[:, COLUMN["grass"]]  # an exact copy: the code's bins are the input's bins
    info = factor_latent_information(codes, INPUTS, NAMES)
    picks = most_informative_dims(info, ["grass", "net_curvature", "heading"])
    assert [picks[n]["dim"] for n in ("grass", "net_curvature", "heading")] == [0, 1, 2]
    assert picks["grass"]["mi"] == pytest.approx(info.entropy[COLUMN["grass"]], abs=1e-12)
    # the noisy heading's bins sit up to one bin off the input's: each straddles at most about two, losing <= ln 2
    assert picks["heading"]["mi"] > info.entropy[COLUMN["heading"]] - math.log(2)
    for name in ("grass", "heading"):
        # the runner-up holds no information: its plug-in MI is its bias, (20 - 1)(20 - 1)/2N = 0.036, give or take
        assert picks[name]["runner_up_mi"] < 3 * 19 * 19 / (2 * N)
        assert picks[name]["normalized_gap"] > 0.75


def test_integer_inputs_are_used_level_by_level():
    # A code equal to the tree count (7 levels, in 7 of the 20 bins): the plug-in MI is exactly the plug-in H(v).
    codes = np.stack([INPUTS[:, COLUMN["num_trees"]], np.random.default_rng(1).normal(size=N)], axis=1)
    info = factor_latent_information(codes, INPUTS, NAMES)
    k = COLUMN["num_trees"]
    p = np.bincount(INPUTS[:, k].astype(int)) / N
    assert info.mi[0, k] == pytest.approx(-(p * np.log(p)).sum(), abs=1e-12) == pytest.approx(info.entropy[k])
    assert info.bias[0, k] == pytest.approx((7 - 1) * (7 - 1) / (2 * N))
    assert info.entropy[COLUMN["turn_1"]] == pytest.approx(math.log(2), abs=1e-3)
    assert info.entropy[COLUMN["grass"]] == pytest.approx(math.log(20), abs=0.01)  # continuous: 20 bins


def test_bad_input_is_named():
    codes = codes_from("grass")
    with pytest.raises(ValueError, match="must share N"):
        factor_latent_information(codes[:10], INPUTS, NAMES)
    with pytest.raises(ValueError, match="factor_names must name"):
        factor_latent_information(codes, INPUTS, NAMES[:-1])
    with pytest.raises(ValueError, match="finite"):
        factor_latent_information(np.full_like(codes, np.nan), INPUTS, NAMES)
    info = factor_latent_information(codes, INPUTS, NAMES)
    with pytest.raises(KeyError, match="no input named 'curvature'"):
        most_informative_dims(info, ["curvature"])
    with pytest.raises(ValueError, match="no turn inputs"):
        curvature_vs_turns(info, turns=[])
