"""Tests for pyrovae.evaluate.disentangle: the five metrics on representations whose answer is known.

The ground truth is the ``shapes`` factor grid (sizes 3, 6, 40, 32, 32) with its
observations replaced by the factor indices themselves, so a representation is a
plain function of the factors and nothing is rendered. Sample sizes are small
(hundreds to a few thousand points) to keep the file fast; each tolerance below
says which sampling error it covers.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from sklearn.svm import LinearSVC
from torch import nn

from pyrovae.evaluate import disentangle as D
from pyrovae.data.shapes import ShapesFactors

SIZES = np.array(ShapesFactors.factor_sizes)
K = len(SIZES)
SMALL = dict(num_train=1000, num_eval=500)


class FactorsAsObservations(ShapesFactors):
    """The shapes factor grid whose 'observations' are the factor indices, as floats."""

    def sample_observations_from_factors(self, factors, rng=None):
        return torch.as_tensor(np.asarray(factors), dtype=torch.float64)


GT = FactorsAsObservations()
# Mean and std of each uniform discrete factor: standardises factors without sampling.
MEAN = (SIZES - 1) / 2
STD = np.sqrt((SIZES**2 - 1) / 12)


def identity(observations):
    return np.asarray(observations)


def standardized(observations):
    return (np.asarray(observations) - MEAN) / STD


def make_noise(dim=K, seed=1):
    """Independent N(0, 1) codes that ignore the observations."""
    rng = np.random.default_rng(seed)
    return lambda observations: rng.normal(size=(len(observations), dim))


def rotation(seed=2):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(K, K)))
    return q * np.sign(np.diag(r))  # a Haar-random orthogonal matrix


def make_rotated():
    q = rotation()
    return lambda observations: standardized(observations) @ q


def make_partly_entangled(seed=3):
    """Standardised factors, pos_x and pos_y mixed by a 45-degree rotation, plus N(0, 0.3^2) noise.

    Its scores are neither top nor chance, so invariance tests compare numbers that could move.
    A fresh generator per call: two runs with the same metric seed see the same noise.
    """
    rng = np.random.default_rng(seed)
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    mix = np.eye(K)
    mix[3:, 3:] = [[c, -s], [s, c]]
    return lambda observations: standardized(observations) @ mix + 0.3 * rng.normal(size=(len(observations), K))


PERM = np.array([3, 0, 4, 2, 1])
SCALES = np.array([0.5, 3.0, 1.7, 2.2, 0.8])  # positive, and keep every variance above FactorVAE's 0.05


def permuted_rescaled(representation_fn):
    return lambda observations: representation_fn(observations)[:, PERM] * SCALES


def binned_entropy_ratio(levels, num_bins):
    """H(bin(v)) / H(v) for v uniform on 0..levels-1 cut into num_bins equal-width bins.

    The mutual information between a factor and a code equal to it, binned, is H(bin(v)):
    the most MIG can credit that factor.
    """
    edges = np.linspace(0, levels - 1, num_bins + 1)
    bins = np.digitize(np.arange(levels), edges[1:-1])
    p = np.bincount(bins) / levels
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(levels))


# ---------------------------------------------------------------------------
# ground truth as the representation: every metric at or near its top


def test_beta_vae_ground_truth_is_perfect():
    # The fixed factor's |z1 - z2| is exactly 0 and every other is > 0 with
    # overwhelming probability over 64 pairs, so the classes are linearly separable.
    scores = D.beta_vae_score(identity, GT, np.random.default_rng(0), **SMALL)
    assert scores["train_accuracy"] >= 0.99
    assert scores["eval_accuracy"] >= 0.99


def test_factor_vae_ground_truth_is_perfect():
    # The fixed factor's dimension has batch variance exactly 0, so it always wins the argmin.
    scores = D.factor_vae_score(identity, GT, np.random.default_rng(0), num_variance_estimate=1000, **SMALL)
    assert scores == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": K}


def test_mig_ground_truth_reaches_the_binning_bound():
    # With 20 bins, factors with 40 and 32 levels get merged levels, so MIG's ceiling
    # for the factors themselves is the mean of H(bin(v_k)) / H(v_k) (about 0.90), not 1.
    # The plug-in MI bias, ~ (bins-1)(levels-1)/2N nats, inflates the runner-up: at
    # N=2000 that costs up to ~0.1 of a 40-level factor's share, so allow 0.06 on the mean.
    bound = np.mean([binned_entropy_ratio(n, 20) for n in SIZES])
    scores = D.mutual_information_gap(identity, GT, np.random.default_rng(0), num_train=2000)
    assert bound - 0.06 <= scores["mig"] <= bound + 0.01
    # With as many bins as the largest factor has levels, no levels merge and the bound is
    # 1; at N=5000 the runner-up bias is < 0.04 of any factor's entropy.
    scores = D.mutual_information_gap(identity, GT, np.random.default_rng(0), num_train=5000, num_bins=40)
    assert scores["mig"] > 0.9
    assert len(scores["mig_per_factor"]) == K


def test_dci_ground_truth_is_perfect():
    # Each tree needs only its own factor's dimension; splits on others have zero gain and
    # add no importance, so R is diagonal: D = C = 1. Ten stages already fit every level.
    scores = D.dci(identity, GT, np.random.default_rng(0), num_train=1000, num_test=500, n_estimators=10)
    assert scores["disentanglement"] > 0.99
    assert scores["completeness"] > 0.99
    assert scores["informativeness_test"] > 0.99


def test_sap_threshold_ground_truth_reaches_its_bound():
    # With the threshold classifier the factor's own dimension predicts it perfectly
    # (accuracy 1); any other dimension is independent of it, so it predicts at chance
    # 1/n_k. The gap's ceiling is 1 - 1/n_k; 500 test points put the runner-up within
    # ~0.03 of chance.
    bound = np.mean(1 - 1 / SIZES)
    scores = D.sap_score(identity, GT, np.random.default_rng(0), num_train=1000, num_test=500,
                         classifier="threshold")
    assert bound - 0.05 <= scores["sap"] <= bound + 0.01


def test_sap_continuous_factors_uses_r_squared():
    # R^2 of a dimension equal to the factor is 1, of an independent one ~ 1/N.
    scores = D.sap_score(identity, GT, np.random.default_rng(0), num_train=1000, num_test=10,
                         continuous_factors=True)
    assert scores["sap"] > 0.98


# ---------------------------------------------------------------------------
# independent noise: every metric at chance


def test_noise_scores_at_chance():
    rng = np.random.default_rng(0)
    beta = D.beta_vae_score(make_noise(), GT, rng, **SMALL)
    # Chance is 1/5; the eval accuracy's sampling sd at 500 points is 0.018.
    assert 0.1 < beta["eval_accuracy"] < 0.3
    factor = D.factor_vae_score(make_noise(), GT, rng, num_variance_estimate=1000, **SMALL)
    assert 0.1 < factor["eval_accuracy"] < 0.3
    mig = D.mutual_information_gap(make_noise(), GT, rng, num_train=2000)
    # Only the plug-in bias separates the top two MIs: well under 0.05 of an entropy.
    assert mig["mig"] < 0.05
    dci = D.dci(make_noise(), GT, rng, num_train=1000, num_test=500, n_estimators=10)
    # Trees fit noise with importances spread over dimensions: near-maximal entropy.
    assert dci["disentanglement"] < 0.2
    assert dci["completeness"] < 0.2
    assert dci["informativeness_test"] < 0.35  # chance accuracy averaged over factors is ~0.12
    sap = D.sap_score(make_noise(), GT, rng, num_train=1000, num_test=500)
    assert sap["sap"] < 0.05


def test_rotated_factors_score_lower_than_the_factors():
    # A random rotation keeps all the information (an invertible map) but spreads every
    # factor over every dimension: MIG and DCI disentanglement must drop a lot.
    mig_gt = D.mutual_information_gap(identity, GT, np.random.default_rng(0), num_train=2000)["mig"]
    mig_rot = D.mutual_information_gap(make_rotated(), GT, np.random.default_rng(0), num_train=2000)["mig"]
    assert mig_rot < mig_gt - 0.3
    kwargs = dict(num_train=600, num_test=300, n_estimators=5)
    dci_gt = D.dci(identity, GT, np.random.default_rng(0), **kwargs)["disentanglement"]
    dci_rot = D.dci(make_rotated(), GT, np.random.default_rng(0), **kwargs)["disentanglement"]
    assert dci_rot < dci_gt - 0.3


# ---------------------------------------------------------------------------
# invariance to permuting and positively rescaling the code's dimensions


def _same_seed_pair(metric, **kwargs):
    base = metric(make_partly_entangled(), GT, np.random.default_rng(7), **kwargs)
    moved = metric(permuted_rescaled(make_partly_entangled()), GT, np.random.default_rng(7), **kwargs)
    return base, moved


def test_mig_is_invariant_to_permutation_and_rescaling():
    # Equal-width bins scale with the data, so the binned codes are identical; the MI
    # matrix's rows are permuted and MIG sorts them away. Exact up to float rounding.
    base, moved = _same_seed_pair(D.mutual_information_gap, num_train=2000)
    assert 0.05 < base["mig"] < 0.95
    assert moved["mig"] == pytest.approx(base["mig"], abs=1e-9)


def test_mig_is_invariant_to_sign_flips():
    base = D.mutual_information_gap(make_partly_entangled(), GT, np.random.default_rng(7), num_train=2000)
    rep = make_partly_entangled()
    flipped = D.mutual_information_gap(lambda o: -rep(o), GT,
                                       np.random.default_rng(7), num_train=2000)
    # Mirroring reverses the bin order (a relabelling); only a value exactly on an edge
    # could change bins, which continuous noise makes a measure-zero event.
    assert flipped["mig"] == pytest.approx(base["mig"], abs=1e-9)


def test_factor_vae_is_invariant_to_permutation_and_rescaling():
    # Batch variance / global variance is scale-free, so every vote is the same, only
    # relabelled by the permutation. The scales keep all variances above the 0.05 pruning.
    base, moved = _same_seed_pair(D.factor_vae_score, num_variance_estimate=1000, **SMALL)
    assert 0.3 < base["eval_accuracy"] < 1.0
    assert moved == pytest.approx(base, abs=1e-12)


def test_dci_is_invariant_to_permutation_and_rescaling():
    # Trees split on thresholds: a positive rescaling maps the same partitions to scaled
    # thresholds. sklearn casts to float32 and breaks exactly tied splits by its own
    # feature order, so allow 0.02 for rounding-induced ties rather than demanding equality.
    base, moved = _same_seed_pair(D.dci, num_train=600, num_test=300, n_estimators=5)
    assert 0.2 < base["disentanglement"] < 0.99
    for key in base:
        assert moved[key] == pytest.approx(base[key], abs=0.02), key


def test_sap_threshold_is_invariant_to_permutation_and_rescaling():
    # The threshold classifier on one dimension sees the same ordering of points. (The
    # default linear SVM is regularized, so rescaling a dimension can change its score.)
    base, moved = _same_seed_pair(D.sap_score, num_train=1000, num_test=500, classifier="threshold")
    assert 0.05 < base["sap"] < 0.95
    assert moved["sap"] == pytest.approx(base["sap"], abs=0.01)


def test_beta_vae_is_invariant_to_permutation():
    # Multinomial logistic regression with an L2 penalty is symmetric in its features;
    # only the optimiser's stopping point can differ. (Rescaling changes the penalty's
    # effect, so BetaVAE is not scale-invariant and is not tested for it.)
    rep = make_partly_entangled()
    base = D.beta_vae_score(make_partly_entangled(), GT, np.random.default_rng(7), **SMALL)
    moved = D.beta_vae_score(lambda o: rep(o)[:, PERM], GT, np.random.default_rng(7), **SMALL)
    assert moved["eval_accuracy"] == pytest.approx(base["eval_accuracy"], abs=0.01)


# ---------------------------------------------------------------------------
# DCI's formulas on importance matrices with known answers


def test_dci_from_importance_known_matrices():
    assert D.dci_from_importance(np.eye(4)) == pytest.approx({"disentanglement": 1.0, "completeness": 1.0})
    assert D.dci_from_importance(np.ones((4, 4))) == pytest.approx({"disentanglement": 0.0, "completeness": 0.0})
    # One code explains every factor: it is not disentangled, but each factor is complete.
    one_code = np.zeros((4, 3))
    one_code[0] = 1.0
    assert D.dci_from_importance(one_code) == pytest.approx({"disentanglement": 0.0, "completeness": 1.0})
    # Dead codes carry no weight in D.
    padded = np.vstack([np.eye(3), np.zeros((2, 3))])
    assert D.dci_from_importance(padded)["disentanglement"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# compute_all, real images, bad input


def test_compute_all_runs_every_metric_and_times_it():
    kwargs = dict(num_train=300, num_eval=200, num_variance_estimate=300, n_estimators=3)
    results = D.compute_all(identity, GT, 0, **kwargs)
    assert list(results) == list(D.METRICS)
    for name, scores in results.items():
        assert scores["seconds"] >= 0, name
    assert results["factor_vae"]["eval_accuracy"] == 1.0
    # Each metric has its own generator: running one alone gives the same numbers.
    alone = D.compute_all(identity, GT, 0, metrics=["mig"], **kwargs)
    assert alone["mig"]["mig"] == results["mig"]["mig"]
    with pytest.raises(ValueError, match="unknown metrics"):
        D.compute_all(identity, GT, 0, metrics=["mig", "nope"])


@pytest.mark.filterwarnings("ignore:The number of unique classes")  # 40 draws of 40-level factors
def test_metrics_run_on_rendered_shapes():
    # The real dataset renders images; a fixed random projection of the pixels is a code.
    weights = torch.randn(64 * 64, 6, generator=torch.Generator().manual_seed(0))
    rep = lambda x: torch.tanh(x.reshape(len(x), -1) @ weights / 64)  # noqa: E731
    results = D.compute_all(rep, ShapesFactors(), 0, num_train=40, num_eval=40, num_variance_estimate=64,
                            batch_size=8, n_estimators=2)
    for scores in results.values():
        assert all(np.isfinite(v).all() for v in scores.values())


def test_bad_representation_is_named():
    with pytest.raises(ValueError, match=r"representation_fn must return an array \[N, D\]"):
        D.mutual_information_gap(lambda o: np.zeros(len(o)), GT, 0, num_train=10)
    with pytest.raises(ValueError, match="non-finite"):
        D.mutual_information_gap(lambda o: np.full((len(o), 2), np.nan), GT, 0, num_train=10)
    with pytest.raises(ValueError, match="num_train"):
        D.beta_vae_score(identity, GT, 0, num_train=0)
    with pytest.raises(ValueError, match="classifier"):
        D.sap_score(identity, GT, 0, num_train=10, num_test=10, classifier="svm")


def test_factor_vae_with_every_dimension_collapsed_scores_zero():
    scores = D.factor_vae_score(lambda o: 0.01 * standardized(o), GT, 0, num_train=10, num_eval=10,
                                num_variance_estimate=100)
    assert scores == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


# ---------------------------------------------------------------------------
# SAP and FactorVAE against disentanglement_lib's definitions, recomputed here
#
# A recording ground truth keeps every batch of factors a metric renders, in order, so
# the reference below can recompute the score from the very draws the metric saw. The
# references follow the definitions in disentanglement_lib (Locatello et al. 2019,
# arXiv 1811.12359): sap_score.py, factor_vae.py and the 0.05 of its study configs.


class Recorded(FactorsAsObservations):
    """FactorsAsObservations that records the factors of every observation it renders."""

    def __init__(self):
        self.seen = []

    def sample_observations_from_factors(self, factors, rng=None):
        self.seen.append(np.array(factors))
        return super().sample_observations_from_factors(factors, rng)

    def rendered(self):
        return np.concatenate(self.seen)


def with_small_and_dead_dims(observations):
    """Standardised factors, the first shrunk to std 0.1, plus a constant (dead) sixth dimension."""
    z = standardized(observations)
    z[:, 0] *= 0.1
    return np.concatenate([z, np.zeros((len(z), 1))], axis=1)


CODES = {"identity": identity, "rotated": make_rotated(), "small and dead dims": with_small_and_dead_dims}


def reference_sap(z_train, v_train, z_test, v_test, continuous=False):
    """SAP: S[j, k] scores code j alone on factor k; the mean over k of the gap between the top two."""
    num_codes, num_factors = z_train.shape[1], v_train.shape[1]
    S = np.zeros((num_codes, num_factors))
    for j in range(num_codes):
        for k in range(num_factors):
            if continuous:  # squared correlation; 0 for a code of variance <= 1e-12
                c = np.cov(z_train[:, j], v_train[:, k])
                S[j, k] = c[0, 1] ** 2 / (c[0, 0] * c[1, 1]) if c[0, 0] > 1e-12 else 0.0
            else:  # test accuracy of a linear SVM fitted on the one code
                svm = LinearSVC(C=0.01, class_weight="balanced").fit(z_train[:, [j]], v_train[:, k])
                S[j, k] = np.mean(svm.predict(z_test[:, [j]]) == v_test[:, k])
    gaps = []
    for k in range(num_factors):
        first, second = sorted(S[:, k], reverse=True)[:2]
        gaps.append(first - second)
    return float(np.mean(gaps))


@pytest.mark.parametrize("name", list(CODES))
def test_sap_is_disentanglement_libs(name):
    gt, code = Recorded(), CODES[name]
    scores = D.sap_score(code, gt, np.random.default_rng(0), num_train=1000, num_test=500)
    factors = gt.rendered()
    assert len(factors) == 1500  # 1000 training draws, then 500 test draws
    train, test = factors[:1000], factors[1000:]
    expected = reference_sap(code(train), train, code(test), test)
    assert scores["sap"] == pytest.approx(expected, abs=1e-12)


def test_sap_continuous_is_disentanglement_libs():
    for name, code in CODES.items():
        gt = Recorded()
        scores = D.sap_score(code, gt, np.random.default_rng(0), num_train=1000, continuous_factors=True)
        factors = gt.rendered()
        assert len(factors) == 1000  # no test set for continuous factors
        assert scores["sap"] == pytest.approx(reference_sap(code(factors), factors, None, None, continuous=True),
                                              abs=1e-12), name


def test_sap_of_the_factors_themselves_is_low_by_default_and_high_with_thresholds():
    # The identity code: one linear rule per level on a single feature cannot carve out the
    # middle levels of a factor, so disentanglement_lib's SAP of the factors themselves is
    # far from 1 (0.234 at its 10,000 / 5,000 points); the threshold classifier reaches
    # each factor's 1 - 1/n_k bound (0.878 at those sizes).
    kwargs = dict(num_train=1000, num_test=500)
    default = D.sap_score(identity, Recorded(), np.random.default_rng(0), **kwargs)
    threshold = D.sap_score(identity, GT, np.random.default_rng(0), classifier="threshold", **kwargs)
    assert default["sap"] < 0.4
    assert threshold["sap"] > 0.8


def reference_factor_vae(code, factors, num_variance_estimate, batch_size, num_train, num_eval,
                         threshold=0.05, rule="std"):
    """FactorVAE: prune codes by global std, vote argmin of batch variance / global variance, majority vote."""
    std = code(factors[:num_variance_estimate]).std(axis=0, ddof=1)
    keep = (std if rule == "std" else std**2) >= threshold
    if not keep.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    batches = factors[num_variance_estimate:].reshape(num_train + num_eval, batch_size, -1)
    votes = []
    for batch in batches:
        fixed = [k for k in range(batch.shape[1]) if len(np.unique(batch[:, k])) == 1]
        assert len(fixed) == 1, "one factor, and only one, is held fixed across a batch"
        ratio = code(batch).var(axis=0, ddof=1)[keep] / std[keep] ** 2
        votes.append((np.flatnonzero(keep)[np.argmin(ratio)], fixed[0]))
    counts = np.zeros((len(std), batches.shape[2]))
    for d, k in votes[:num_train]:
        counts[d, k] += 1
    majority = counts.argmax(axis=1)  # a dimension without votes predicts factor 0

    def accuracy(points):
        return float(np.mean([majority[d] == k for d, k in points]))

    return {"train_accuracy": accuracy(votes[:num_train]), "eval_accuracy": accuracy(votes[num_train:]),
            "num_active_dims": int(keep.sum())}


@pytest.mark.parametrize("rule", ["std", "variance"])
@pytest.mark.parametrize("name", list(CODES))
def test_factor_vae_is_disentanglement_libs(name, rule):
    gt, code = Recorded(), CODES[name]
    sizes = dict(num_variance_estimate=500, batch_size=32, num_train=300, num_eval=200)
    kwargs = {} if rule == "std" else {"prune": "variance"}  # disentanglement_lib's rule is the default
    scores = D.factor_vae_score(code, gt, np.random.default_rng(0), **sizes, **kwargs)
    factors = gt.rendered()
    assert len(factors) == 500 + (300 + 200) * 32
    expected = reference_factor_vae(code, factors, rule=rule, **sizes)
    assert scores == pytest.approx(expected, abs=1e-12)


def test_factor_vae_prunes_on_the_standard_deviation():
    # A dimension of std 0.1 carries factor 0: disentanglement_lib keeps it (0.1 >= 0.05) and
    # the code scores 1; pruning on the variance (0.01 < 0.05) drops it, and batches with
    # factor 0 fixed (1/5 of them) then vote for other dimensions' factors.
    sizes = dict(num_variance_estimate=500, batch_size=32, num_train=300, num_eval=200)
    by_std = D.factor_vae_score(with_small_and_dead_dims, GT, np.random.default_rng(0), **sizes)
    by_variance = D.factor_vae_score(with_small_and_dead_dims, GT, np.random.default_rng(0), prune="variance",
                                     **sizes)
    assert by_std == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 5}
    assert by_variance["num_active_dims"] == 4
    assert by_variance["eval_accuracy"] < 0.9
    with pytest.raises(ValueError, match="prune"):
        D.factor_vae_score(identity, GT, 0, prune="var")


# ---------------------------------------------------------------------------
# mean_representation: codes from a Pyro guide


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.loc = nn.Linear(K, 3)
        self.log_scale = nn.Linear(K, 3)

    def forward(self, x):
        return self.loc(x), self.log_scale(x).exp()


def test_mean_representation_reads_the_guide_mean():
    pyro.clear_param_store()
    torch.manual_seed(0)
    encoder = Encoder()

    def guide(x):
        pyro.module("encoder", encoder)
        loc, scale = encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("code", dist.Normal(loc, scale).to_event(1))

    x = torch.randn(10, K)
    expected = encoder.loc(x).detach().numpy()
    rep = D.mean_representation(guide, sites="code", batch_size=4)  # 3 batches, the last one short
    codes = rep(x)
    assert isinstance(codes, np.ndarray) and codes.shape == (10, 3)
    np.testing.assert_allclose(codes, expected, rtol=1e-6, atol=1e-6)  # the mean, not a draw
    np.testing.assert_allclose(rep(x.numpy().astype(np.float64)), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match="'z'.*'code'"):
        D.mean_representation(guide, sites="z")(x)


def test_mean_representation_unwraps_and_drives_a_metric():
    # A guide whose q(z|x) is centred on the observation (here the factors): its mean is the
    # ground truth, so FactorVAE is perfect. Masking wraps the Normal twice over.
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            fn = dist.Normal(x.float(), 0.1).to_event(1).mask(torch.ones(x.shape[0], dtype=torch.bool))
            pyro.sample("z", fn)

    scores = D.factor_vae_score(D.mean_representation(guide), GT, 0, num_train=200, num_eval=100,
                                num_variance_estimate=500)
    assert scores["eval_accuracy"] == 1.0


def test_mean_representation_refuses_a_distribution_without_mean():
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            base = dist.Normal(torch.zeros_like(x), 1.0).to_event(1)
            pyro.sample("z", dist.TransformedDistribution(base, [dist.transforms.ExpTransform()]))

    with pytest.raises(ValueError, match="has no mean"):
        D.mean_representation(guide)(torch.zeros(3, K))


def _top_down_guide():
    """TopDownGuide q(z2 | x) q(z1 | x, z2) with small random networks; z2 has 2 dims, z1 3."""
    from pyrovae.guides import TopDownGuide
    from pyrovae.nn.nets import ConditionalGaussian

    torch.manual_seed(0)
    return TopDownGuide(ConditionalGaussian([(K,)], 2, hidden=(8,)), [ConditionalGaussian([(K,), (2,)], 3, hidden=(8,))])


def test_mean_representation_runs_a_hierarchical_guide_at_its_means():
    # z1's distribution depends on z2: its code is the mean of q(z1 | x, z2 = E[z2 | x]),
    # so the codes are a deterministic function of x, whatever the global random state.
    guide = _top_down_guide()
    x = torch.randn(7, K)
    with torch.no_grad():
        z2 = guide.encoder(x)[0]
        z1 = guide.conditionals[0](x, z2)[0]
    torch.manual_seed(1)
    codes = D.mean_representation(guide)(x)  # every latent site, in the guide's order: z2 then z1
    np.testing.assert_allclose(codes, torch.cat([z2, z1], -1).numpy(), rtol=1e-6, atol=1e-6)
    torch.manual_seed(2)
    assert np.array_equal(D.mean_representation(guide)(x), codes)
    # In batches of 3 only float rounding of the smaller matrix products differs.
    np.testing.assert_allclose(D.mean_representation(guide, batch_size=3)(x), codes, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(D.mean_representation(guide, sites="z1")(x), z1.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(D.mean_representation(guide, sites=["z1", "z2"])(x), codes[:, [2, 3, 4, 0, 1]],
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(KeyError, match=r"'z3'.*\['z2', 'z1'\]"):
        D.mean_representation(guide, sites=["z1", "z3"])(x)
    with pytest.raises(TypeError, match="sites"):
        D.mean_representation(guide, sites=[])


def test_mean_representation_seeds_randomness_left_in_the_guide():
    # A guide with dropout on its input: its codes are random, but the same seed gives the same ones.
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(nn.functional.dropout(x.float(), 0.5), 1.0).to_event(1))

    x = torch.ones(20, K)
    first = D.mean_representation(guide, seed=3)(x)
    assert np.array_equal(D.mean_representation(guide, seed=3)(x), first)
    assert not np.array_equal(D.mean_representation(guide, seed=4)(x), first)


def test_mean_representation_refuses_discrete_sites_and_sites_outside_the_data_plate():
    def discrete(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(x.shape[0], 3)))

    with pytest.raises(ValueError, match=r"'c' is discrete \(Categorical\)"):
        D.mean_representation(discrete)(torch.zeros(2, K))

    def global_latent(x):
        pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.float(), 1.0).to_event(1))

    with pytest.raises(ValueError, match=r"'scale' is not inside pyro.plate\('data'"):
        D.mean_representation(global_latent)(torch.zeros(2, K))
    assert D.mean_representation(global_latent, sites="z")(torch.zeros(2, K)).shape == (2, K)
