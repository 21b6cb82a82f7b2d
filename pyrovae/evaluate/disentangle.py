"""Disentanglement metrics: BetaVAE, FactorVAE, MIG, DCI and SAP scores.

Every metric is one function with the calling convention of disentanglement_lib
(Locatello et al. 2019, "Challenging common assumptions in the unsupervised
learning of disentangled representations")::

    metric(representation_fn, ground_truth, rng, <sample sizes>, chunk_size=...) -> dict

- ``representation_fn`` maps a batch of observations ``[N, ...]`` (a float tensor,
  as the ground-truth dataset renders it) to codes: an array ``[N, D]``.
  :func:`mean_representation` builds one from any Pyro guide.
- ``ground_truth`` is a dataset with known factors of variation, with the
  interface of :class:`pyrovae.data.shapes.ShapesFactors`: ``factor_sizes``,
  ``num_factors``, ``sample_factors(num, rng)`` (integer factor indices
  ``[num, K]``) and ``sample_observations_from_factors(factors)``.
- ``rng`` is a ``numpy.random.Generator`` (or an int seed). Same seed, same scores.
- ``chunk_size`` is how many observations go to one call of ``representation_fn``
  (disentanglement_lib's ``batch_size`` in MIG, DCI and SAP); it changes the cost,
  never the scores. ``batch_size`` is the BetaVAE and FactorVAE papers' batch of
  observations behind one training point, an argument of those two metrics only.

The sample sizes default to disentanglement_lib's (its ``unsupervised_study_v1``
configs: 10,000 training and 5,000 evaluation points, FactorVAE's variance
estimate on 10,000, batches of 64); smaller ones make quick, noisier estimates.
SAP and FactorVAE follow disentanglement_lib's definitions by default; pyrovae's
earlier variants are options (``sap_score(classifier="threshold")``,
``factor_vae_score(prune="variance")``). :func:`compute_all` runs all five and
times them.
"""

import time

import numpy as np
import torch
from pyro import poutine
from scipy.stats import entropy
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from pyrovae.infer import distributed
from pyrovae.infer.predictive import AtMean
from pyrovae.infer.trace import DATA_PLATE, frame, latent_sites, trace_program
from pyrovae.util import positive_int, seeded

__all__ = ["discretize", "mutual_information", "beta_vae_score", "factor_vae_score", "mutual_information_gap",
           "dci", "sap_score", "compute_all", "mean_representation", "AtMean", "METRICS"]

_CHUNK = 1024  # observations rendered and encoded per call of representation_fn


# ---------------------------------------------------------------------------
# helpers


def _as_rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def _seed(rng):
    """An int seed for scikit-learn, drawn from ``rng``."""
    return int(rng.integers(2**31 - 1))


def _codes(representation_fn, ground_truth, factors, chunk_size=_CHUNK):
    """Codes ``[N, D]`` (float64) of the observations of ``factors`` ``[N, K]``, in chunks."""
    chunk_size = positive_int("chunk_size", chunk_size)
    out = []
    for start in range(0, len(factors), chunk_size):
        part = factors[start:start + chunk_size]
        observations = ground_truth.sample_observations_from_factors(part)
        codes = representation_fn(observations)
        if isinstance(codes, torch.Tensor):
            codes = codes.detach().cpu().numpy()
        codes = np.asarray(codes, dtype=np.float64)
        if codes.ndim != 2 or codes.shape[0] != len(part):
            raise ValueError(f"representation_fn must return an array [N, D] for N={len(part)} "
                             f"observations, got shape {list(codes.shape)}")
        if not np.all(np.isfinite(codes)):
            raise ValueError("representation_fn returned non-finite codes (NaN or inf)")
        out.append(codes)
    return np.concatenate(out, axis=0)


def _sample_codes(representation_fn, ground_truth, num, rng, chunk_size):
    """``num`` uniform draws: ``(factors [num, K], codes [num, D])``."""
    factors = np.asarray(ground_truth.sample_factors(num, rng))
    return factors, _codes(representation_fn, ground_truth, factors, chunk_size)


def _one_minus_entropy(weights, num_outcomes):
    """``1 - H(p) / log(num_outcomes)`` for each row of ``weights`` normalised to a distribution p.

    The entropy is ``scipy.stats.entropy`` (which normalises the rows). A row of
    zeros has no distribution and gets 0; with one outcome there is no uncertainty
    and every non-zero row gets 1.
    """
    out = np.zeros(weights.shape[0])
    rows = weights.sum(axis=1) > 0
    if num_outcomes == 1:
        out[rows] = 1.0
    elif rows.any():
        out[rows] = 1.0 - entropy(weights[rows], base=num_outcomes, axis=1)
    return out


# ---------------------------------------------------------------------------
# BetaVAE score


def beta_vae_score(representation_fn, ground_truth, rng, num_train=10000, num_eval=5000,
                   batch_size=64, chunk_size=_CHUNK):
    r"""BetaVAE disentanglement score (Higgins et al. 2017, "beta-VAE: Learning basic
    visual concepts with a constrained variational framework", ICLR).

    One training point: draw a factor index :math:`k` uniformly, then ``batch_size``
    pairs of factor vectors :math:`(v_l, w_l)` that agree on factor :math:`k` and are
    drawn independently otherwise. With codes :math:`z = r(x)`,

    .. math:: z_{\text{diff}} = \frac{1}{L} \sum_{l=1}^{L} |r(x(v_l)) - r(x(w_l))|

    is the feature and :math:`k` the label. A logistic regression is fitted on
    ``num_train`` points and scored on ``num_eval`` fresh ones; a representation that
    puts factor :math:`k` in its own dimensions makes that dimension of
    :math:`z_{\text{diff}}` small exactly when :math:`k` is fixed, so the score is
    near 1. Chance is about ``1 / num_factors``.

    Returns ``{"train_accuracy", "eval_accuracy"}``.
    """
    rng = _as_rng(rng)
    num_train = positive_int("num_train", num_train)
    num_eval = positive_int("num_eval", num_eval)
    batch_size = positive_int("batch_size", batch_size)
    x_train, y_train = _beta_vae_points(representation_fn, ground_truth, rng, num_train, batch_size, chunk_size)
    x_eval, y_eval = _beta_vae_points(representation_fn, ground_truth, rng, num_eval, batch_size, chunk_size)
    if len(np.unique(y_train)) < 2:
        raise ValueError("beta_vae_score needs num_train large enough to draw at least two factors")
    model = LogisticRegression(max_iter=2000, random_state=_seed(rng))
    model.fit(x_train, y_train)
    return {"train_accuracy": float(model.score(x_train, y_train)),
            "eval_accuracy": float(model.score(x_eval, y_eval))}


def _beta_vae_points(representation_fn, ground_truth, rng, num_points, batch_size, chunk_size):
    """``num_points`` features ``z_diff`` ``[num_points, D]`` and their fixed factor ``[num_points]``."""
    num_factors = ground_truth.num_factors
    per_group = max(1, chunk_size // batch_size)
    features, labels = [], []
    for start in range(0, num_points, per_group):
        group = min(per_group, num_points - start)
        fixed = rng.integers(0, num_factors, size=group)
        first = np.asarray(ground_truth.sample_factors(group * batch_size, rng))
        second = np.asarray(ground_truth.sample_factors(group * batch_size, rng))
        rows = np.arange(group * batch_size)
        columns = np.repeat(fixed, batch_size)
        second[rows, columns] = first[rows, columns]
        z1 = _codes(representation_fn, ground_truth, first, chunk_size)
        z2 = _codes(representation_fn, ground_truth, second, chunk_size)
        diff = np.abs(z1 - z2).reshape(group, batch_size, -1).mean(axis=1)
        features.append(diff)
        labels.append(fixed)
    return np.concatenate(features), np.concatenate(labels)


# ---------------------------------------------------------------------------
# FactorVAE score


PRUNE_RULES = ("std", "variance")


def factor_vae_score(representation_fn, ground_truth, rng, num_train=10000, num_eval=5000,
                     num_variance_estimate=10000, batch_size=64, prune="std", prune_threshold=0.05,
                     chunk_size=_CHUNK):
    r"""FactorVAE disentanglement score (Kim & Mnih 2018, "Disentangling by factorising",
    ICML, arXiv 1802.05983), as disentanglement_lib computes it.

    First the code's per-dimension standard deviation :math:`s_j` (``ddof=1``) is
    estimated on ``num_variance_estimate`` uniform draws, and collapsed dimensions
    are pruned: they never vote. The rule is ``prune``:

    - ``"std"`` (default): dimension :math:`j` is kept when :math:`s_j \ge`
      ``prune_threshold``; disentanglement_lib's ``prune_dims`` rule, with its
      studies' threshold 0.05.
    - ``"variance"``: kept when :math:`s_j^2 \ge` ``prune_threshold``; pyrovae's
      earlier rule, which with 0.05 also prunes dimensions of standard deviation
      between 0.05 and 0.224. Kept to reproduce earlier pyrovae numbers.

    One training point: draw a factor :math:`k`, fix it at one random value across
    ``batch_size`` draws (the others drawn uniformly), divide the codes by the
    global :math:`s_j` and take the active dimension of least variance over the batch,

    .. math:: d = \arg\min_{j \text{ active}} \operatorname{Var}_{\text{batch}}(z_j / s_j)

    (ties go to the lowest index). The pair :math:`(d, k)` is one vote. The
    classifier is the majority vote: dimension :math:`d` predicts the factor it
    voted for most often on the ``num_train`` training points (ties to the lowest
    factor index); the score is its accuracy on those points and on ``num_eval``
    fresh ones. Dividing by :math:`s_j` makes the score invariant to rescaling
    (and permuting) the code's dimensions, as long as no dimension crosses the
    pruning threshold. Chance is about ``1 / num_factors``; a code with every
    dimension pruned scores 0.

    ``num_active_dims`` counts the dimensions kept. (disentanglement_lib reports
    the length of its boolean mask there, i.e. every dimension; its accuracies are
    the same as these.)

    Returns ``{"train_accuracy", "eval_accuracy", "num_active_dims"}``.
    """
    rng = _as_rng(rng)
    num_train = positive_int("num_train", num_train)
    num_eval = positive_int("num_eval", num_eval)
    num_variance_estimate = positive_int("num_variance_estimate", num_variance_estimate)
    batch_size = positive_int("batch_size", batch_size)
    if prune not in PRUNE_RULES:
        raise ValueError(f"prune must be one of {PRUNE_RULES}, got {prune!r}")
    if batch_size < 2 or num_variance_estimate < 2:
        raise ValueError("factor_vae_score needs batch_size >= 2 and num_variance_estimate >= 2 "
                         "to estimate variances")
    _, codes = _sample_codes(representation_fn, ground_truth, num_variance_estimate, rng, chunk_size)
    global_std = codes.std(axis=0, ddof=1)
    active = (global_std if prune == "std" else global_std**2) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    votes = _factor_vae_votes(representation_fn, ground_truth, rng, num_train, batch_size, chunk_size,
                              global_std, active)
    classifier = votes.argmax(axis=1)
    eval_votes = _factor_vae_votes(representation_fn, ground_truth, rng, num_eval, batch_size, chunk_size,
                                   global_std, active)
    dims = np.arange(len(classifier))
    return {"train_accuracy": float(votes[dims, classifier].sum() / num_train),
            "eval_accuracy": float(eval_votes[dims, classifier].sum() / num_eval),
            "num_active_dims": int(active.sum())}


def _factor_vae_votes(representation_fn, ground_truth, rng, num_points, batch_size, chunk_size,
                      global_std, active):
    """The vote matrix ``[D, K]``: how often dimension d had the least normalized variance for factor k."""
    num_factors = ground_truth.num_factors
    sizes = np.asarray(ground_truth.factor_sizes)
    active_dims = np.flatnonzero(active)
    votes = np.zeros((len(global_std), num_factors), dtype=np.int64)
    per_group = max(1, chunk_size // batch_size)
    for start in range(0, num_points, per_group):
        group = min(per_group, num_points - start)
        fixed = rng.integers(0, num_factors, size=group)
        values = rng.integers(0, sizes[fixed])
        factors = np.asarray(ground_truth.sample_factors(group * batch_size, rng))
        factors[np.arange(group * batch_size), np.repeat(fixed, batch_size)] = np.repeat(values, batch_size)
        codes = _codes(representation_fn, ground_truth, factors, chunk_size)
        normalized = codes.reshape(group, batch_size, -1)[:, :, active_dims] / global_std[active_dims]
        least = normalized.var(axis=1, ddof=1).argmin(axis=1)
        np.add.at(votes, (active_dims[least], fixed), 1)
    return votes


# ---------------------------------------------------------------------------
# Mutual information gap


def mutual_information_gap(representation_fn, ground_truth, rng, num_train=10000, num_bins=20,
                           chunk_size=_CHUNK):
    r"""Mutual information gap, MIG (Chen et al. 2018, "Isolating sources of
    disentanglement in variational autoencoders", NeurIPS).

    On ``num_train`` uniform draws, each code dimension :math:`z_j` is discretized
    into ``num_bins`` equal-width bins over its range, and the mutual information
    :math:`I(z_j; v_k)` with every factor is the plug-in estimate
    (``sklearn.metrics.mutual_info_score``, nats). With :math:`j^{(1)}_k, j^{(2)}_k`
    the two dimensions most informative about factor :math:`k`,

    .. math:: \mathrm{MIG} = \frac{1}{K} \sum_{k=1}^{K}
              \frac{I(z_{j^{(1)}_k}; v_k) - I(z_{j^{(2)}_k}; v_k)}{H(v_k)} .

    Equal-width bins make MIG invariant to permuting and to (positively or
    negatively) rescaling the code's dimensions. A factor with more levels than
    ``num_bins`` cannot reach 1 even when one dimension is the factor itself: the
    bins merge its levels. The plug-in estimate is biased upward by about
    :math:`(|z|-1)(|v|-1) / 2N` nats, so small samples inflate the runner-up term.

    Returns ``{"mig", "mig_per_factor"}``.
    """
    rng = _as_rng(rng)
    num_train = positive_int("num_train", num_train)
    num_bins = positive_int("num_bins", num_bins)
    factors, codes = _sample_codes(representation_fn, ground_truth, num_train, rng, chunk_size)
    discrete = discretize(codes, num_bins)
    mi = mutual_information(discrete, factors)
    entropy = np.array([mutual_info_score(f, f) for f in factors.T])
    if mi.shape[0] < 2:
        raise ValueError("mutual_information_gap needs a representation with at least 2 dimensions")
    top = np.sort(mi, axis=0)[::-1]
    per_factor = np.divide(top[0] - top[1], entropy, out=np.zeros_like(entropy), where=entropy > 0)
    return {"mig": float(per_factor.mean()), "mig_per_factor": per_factor.tolist()}


def discretize(codes, num_bins):
    """Equal-width histogram bin index (0 .. num_bins-1) of each entry, per column."""
    out = np.empty(codes.shape, dtype=np.int64)
    for j, column in enumerate(codes.T):
        edges = np.histogram_bin_edges(column, bins=num_bins)
        out[:, j] = np.digitize(column, edges[1:-1])
    return out


def mutual_information(discrete_codes, factors):
    """``[D, K]`` matrix of plug-in mutual informations (nats)."""
    return np.array([[mutual_info_score(f, z) for f in factors.T] for z in discrete_codes.T])


# ---------------------------------------------------------------------------
# DCI


def dci(representation_fn, ground_truth, rng, num_train=10000, num_test=5000, n_estimators=100,
        chunk_size=_CHUNK):
    r"""Disentanglement, completeness and informativeness (Eastwood & Williams 2018,
    "A framework for the quantitative evaluation of disentangled representations", ICLR).

    For each factor :math:`k` a gradient-boosted tree classifier
    (``sklearn.ensemble.GradientBoostingClassifier`` with ``n_estimators`` stages;
    100 is the default, fewer make quick tests) predicts :math:`v_k` from the whole
    code on ``num_train`` draws. Its feature importances fill column :math:`k` of the
    importance matrix :math:`R \in \mathbb{R}^{D \times K}`. With
    :math:`P_{jk} = R_{jk} / \sum_{k'} R_{jk'}` and
    :math:`\tilde P_{jk} = R_{jk} / \sum_{j'} R_{j'k}`,

    .. math::
        D = \sum_j \rho_j \Big(1 + \sum_k P_{jk} \log_K P_{jk}\Big),
        \quad \rho_j = \frac{\sum_k R_{jk}}{\sum_{jk} R_{jk}}, \qquad
        C = \frac{1}{K} \sum_k \Big(1 + \sum_j \tilde P_{jk} \log_D \tilde P_{jk}\Big).

    :math:`D` is high when each dimension matters for one factor, :math:`C` when
    each factor is captured by one dimension. Informativeness is the classifiers'
    mean accuracy on the training draws and on ``num_test`` fresh ones (higher is
    better here; the paper reports the error). Trees split on thresholds, so the
    scores are invariant to permuting and monotonically rescaling dimensions (up to
    tie-breaking between equally good splits).

    Returns ``{"disentanglement", "completeness", "informativeness_train",
    "informativeness_test"}``.
    """
    rng = _as_rng(rng)
    num_train = positive_int("num_train", num_train)
    num_test = positive_int("num_test", num_test)
    n_estimators = positive_int("n_estimators", n_estimators)
    f_train, z_train = _sample_codes(representation_fn, ground_truth, num_train, rng, chunk_size)
    f_test, z_test = _sample_codes(representation_fn, ground_truth, num_test, rng, chunk_size)
    num_codes, num_factors = z_train.shape[1], f_train.shape[1]
    importance = np.zeros((num_codes, num_factors))
    train_acc, test_acc = [], []
    for k in range(num_factors):
        if len(np.unique(f_train[:, k])) < 2:
            raise ValueError(f"dci: factor {k} takes one value in {num_train} draws; increase num_train")
        model = GradientBoostingClassifier(n_estimators=n_estimators, random_state=_seed(rng))
        model.fit(z_train, f_train[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(model.score(z_train, f_train[:, k]))
        test_acc.append(model.score(z_test, f_test[:, k]))
    scores = dci_from_importance(importance)
    scores["informativeness_train"] = float(np.mean(train_acc))
    scores["informativeness_test"] = float(np.mean(test_acc))
    return scores


def dci_from_importance(importance):
    """Disentanglement and completeness (see :func:`dci`) of an importance matrix ``[D, K]``."""
    importance = np.abs(np.asarray(importance, dtype=np.float64))
    total = importance.sum()
    if total == 0:
        return {"disentanglement": 0.0, "completeness": 0.0}
    num_codes, num_factors = importance.shape
    per_code = _one_minus_entropy(importance, num_factors)
    disentanglement = float((importance.sum(axis=1) / total * per_code).sum())
    per_factor = _one_minus_entropy(importance.T, num_codes)
    return {"disentanglement": disentanglement, "completeness": float(per_factor.mean())}


# ---------------------------------------------------------------------------
# SAP score


SAP_CLASSIFIERS = ("linear_svc", "threshold")


def sap_score(representation_fn, ground_truth, rng, num_train=10000, num_test=5000, continuous_factors=False,
              classifier="linear_svc", chunk_size=_CHUNK):
    r"""Separated attribute predictability, SAP (Kumar et al. 2018, "Variational
    inference of disentangled latent concepts from unlabeled observations", ICLR,
    arXiv 1711.00848, section 3), as disentanglement_lib computes it by default.

    A score matrix :math:`S \in \mathbb{R}^{D \times K}` says how well code dimension
    :math:`j` alone predicts factor :math:`k`.

    - Continuous factors (``continuous_factors=True``): :math:`S_{jk}` is the
      :math:`R^2` of a linear regression of :math:`v_k` on :math:`z_j`, the squared
      correlation :math:`\operatorname{Cov}(z_j, v_k)^2 / (\operatorname{Var} z_j \operatorname{Var} v_k)`
      on the ``num_train`` draws (no test set is drawn); 0 where
      :math:`\operatorname{Var} z_j \le 10^{-12}` (disentanglement_lib's rule) or
      the factor is constant.
    - Discrete factors (default): :math:`S_{jk}` is the accuracy on ``num_test``
      fresh draws of a classifier of :math:`v_k` fitted on :math:`z_j` alone on the
      ``num_train`` draws. ``classifier`` picks it:

      - ``"linear_svc"`` (default): a linear SVM, ``sklearn.svm.LinearSVC(C=0.01,
        class_weight="balanced")`` on the raw :math:`z_j`, as disentanglement_lib.
        Its one-vs-rest linear rules on one feature separate only a few levels, so
        a factor with many levels scores low even when :math:`z_j` is the factor
        itself (the factors of ``shapes`` as their own code score about 0.23, not
        1), and the regularization makes the score depend on the scale of :math:`z_j`.
      - ``"threshold"``: thresholds on :math:`z_j` cutting the line into at most as
        many intervals as the factor has levels, each predicting one level (a
        decision tree on the one feature with that many leaves); pyrovae's earlier
        default, closer to the paper's intent that a dimension equal to the
        factor scores 1. Invariant to permuting and monotonically rescaling dimensions.

      A factor that takes one value in the training draws has nothing to predict:
      its column is 0 (disentanglement_lib's SVM would fail on it).

    With :math:`S^{(1)}_k \ge S^{(2)}_k` the two largest entries of column :math:`k`,

    .. math:: \mathrm{SAP} = \frac{1}{K} \sum_k \big(S^{(1)}_k - S^{(2)}_k\big).

    Returns ``{"sap", "sap_per_factor"}``.
    """
    rng = _as_rng(rng)
    num_train = positive_int("num_train", num_train)
    num_test = positive_int("num_test", num_test)
    if classifier not in SAP_CLASSIFIERS:
        raise ValueError(f"classifier must be one of {SAP_CLASSIFIERS}, got {classifier!r}")
    f_train, z_train = _sample_codes(representation_fn, ground_truth, num_train, rng, chunk_size)
    if z_train.shape[1] < 2:
        raise ValueError("sap_score needs a representation with at least 2 dimensions")
    if continuous_factors:
        scores = _r_squared(z_train, f_train)
    else:
        f_test, z_test = _sample_codes(representation_fn, ground_truth, num_test, rng, chunk_size)
        scores = _single_dim_accuracy(z_train, f_train, z_test, f_test, classifier, _seed(rng))
    top = np.sort(scores, axis=0)[::-1]
    per_factor = top[0] - top[1]
    return {"sap": float(per_factor.mean()), "sap_per_factor": per_factor.tolist()}


def _r_squared(codes, factors):
    """``[D, K]`` squared Pearson correlations; 0 where the code's variance is <= 1e-12 or the factor is constant."""
    zc = codes - codes.mean(axis=0)
    fc = factors - factors.mean(axis=0)
    cov = zc.T @ fc
    z_var = (zc**2).sum(axis=0) / (len(codes) - 1)
    f_norm = (fc**2).sum(axis=0)
    defined = (z_var > 1e-12)[:, None] & (f_norm > 0)[None, :]
    denominator = np.outer((zc**2).sum(axis=0), f_norm)
    return np.divide(cov**2, denominator, out=np.zeros_like(cov), where=defined)


def _single_dim_accuracy(z_train, f_train, z_test, f_test, classifier, seed):
    """``[D, K]`` test accuracies of one-dimensional classifiers (see :func:`sap_score`)."""
    scores = np.zeros((z_train.shape[1], f_train.shape[1]))
    for k in range(f_train.shape[1]):
        levels = len(np.unique(f_train[:, k]))
        if levels < 2:
            continue
        for j in range(z_train.shape[1]):
            if classifier == "threshold":
                model = DecisionTreeClassifier(max_leaf_nodes=levels, random_state=seed)
            else:
                model = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            model.fit(z_train[:, j:j + 1], f_train[:, k])
            scores[j, k] = model.score(z_test[:, j:j + 1], f_test[:, k])
    return scores


# ---------------------------------------------------------------------------
# all of them


METRICS = {
    "beta_vae": beta_vae_score,
    "factor_vae": factor_vae_score,
    "mig": mutual_information_gap,
    "dci": dci,
    "sap": sap_score,
}


def compute_all(representation_fn, ground_truth, rng, num_train=10000, num_eval=5000,
                num_variance_estimate=10000, batch_size=64, n_estimators=100, metrics=None):
    """Run the metrics (all of ``METRICS``, or the names in ``metrics``) and time each.

    Each metric draws from its own generator, spawned from ``rng`` in the fixed
    order of ``METRICS``, so a metric's scores do not depend on which others run.
    ``num_eval`` is also the test size of DCI and SAP; ``batch_size`` is BetaVAE's
    and FactorVAE's. Every metric runs with its defaults otherwise (SAP with
    disentanglement_lib's linear SVM, FactorVAE with its pruning rule). Returns
    ``{name: {**scores, "seconds": wall-clock seconds}}``. In a process group
    (:mod:`pyrovae.infer.distributed`) the metrics are divided among the ranks
    (metric i on rank i mod N) and every rank returns all the scores, the same
    as on one process since each metric has its own generator.
    """
    rng = _as_rng(rng)
    names = list(METRICS) if metrics is None else list(metrics)
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected names from {list(METRICS)}")
    seeds = dict(zip(METRICS, rng.integers(2**63 - 1, size=len(METRICS))))
    sizes = {
        "beta_vae": dict(num_train=num_train, num_eval=num_eval, batch_size=batch_size),
        "factor_vae": dict(num_train=num_train, num_eval=num_eval, batch_size=batch_size,
                           num_variance_estimate=num_variance_estimate),
        "mig": dict(num_train=num_train),
        "dci": dict(num_train=num_train, num_test=num_eval, n_estimators=n_estimators),
        "sap": dict(num_train=num_train, num_test=num_eval),
    }
    world, parts = distributed.current(), {}
    for i in world.units(len(names)):
        name, start = names[i], time.perf_counter()
        scores = METRICS[name](representation_fn, ground_truth, np.random.default_rng(seeds[name]),
                               **sizes[name])
        parts[i] = (name, {**scores, "seconds": time.perf_counter() - start})
    return dict(world.gather_in_order(parts))


# ---------------------------------------------------------------------------
# representations from a Pyro guide


def mean_representation(guide, sites=None, batch_size=256, device=None, seed=0, **guide_kwargs):
    """A ``representation_fn`` from any Pyro guide: the means of its latent sites given x.

    The guide runs once per batch of ``batch_size`` observations under
    :class:`AtMean`, which sets each latent site to the mean of its distribution as
    it is drawn, so the sites after it condition on that mean (for a top-down
    hierarchical guide q(z2 | x) q(z1 | x, z2), z1's code is the mean of
    q(z1 | x, z2 = E[z2 | x]), not of a noisy draw). The run is under
    ``torch.no_grad``, hidden from any enclosing Pyro handler, and with torch's
    random generator seeded to ``seed`` (restored after), so that randomness left
    in the guide (dropout, say) is reproducible too: the same observations give
    the same codes.

    ``sites`` picks the code: ``None`` (default) is every latent site of the guide,
    in the order the guide draws them; a site name; or a list of names, in that
    order. Each site's mean is flattened to ``[N, -1]`` with the data plate's dim
    first, and the sites are concatenated along the last dim, e.g. ``[N, d2 + d1]``
    for ``sites=None`` on a top-down two-level guide.

    Observations (tensor or array) are cast to torch's default dtype, and
    ``device`` moves them before the guide sees them; extra keyword arguments go
    to the guide. Returns ``[N, D]`` float NumPy arrays. KeyError for a name that
    is not a latent site; ValueError for a discrete site, a site without a finite
    mean or a site outside ``pyro.plate("data", N)`` (see :class:`AtMean`).
    """
    names = _site_names(sites)
    batch_size = positive_int("batch_size", batch_size)

    def representation_fn(observations):
        x = torch.as_tensor(observations).to(torch.get_default_dtype())
        codes = []
        with torch.no_grad(), poutine.block(), seeded(seed, device):
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size]
                if device is not None:
                    batch = batch.to(device)
                drawn = latent_sites(trace_program(AtMean()(guide), batch, **guide_kwargs))
                if not drawn:
                    raise ValueError("the guide has no latent sample sites: there is no code to read")
                codes.append(torch.cat([_flat_code(drawn, name, len(batch)) for name in names or drawn], -1).cpu())
        return torch.cat(codes).numpy()

    return representation_fn


def _site_names(sites):
    """``sites`` as a list of names (None stays None: every latent site)."""
    if sites is None:
        return None
    names = [sites] if isinstance(sites, str) else list(sites)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"sites must be None, a site name or a non-empty list of names, got {sites!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"sites names a site twice: {names}")
    return names


def _flat_code(drawn, name, num):
    """The value of latent site ``name`` of a run, as ``[num, -1]`` with the data plate's dim first."""
    if name not in drawn:
        raise KeyError(f"the guide has no latent sample site {name!r}; its latent sites are {list(drawn)} "
                       "(pass sites=...)")
    site = drawn[name]
    f = frame(site, DATA_PLATE)
    if f is None or f.dim is None:
        raise ValueError(f"latent site {name!r} is not inside pyro.plate({DATA_PLATE!r}, N): it has no code per "
                         "observation")
    value = site["value"]
    value = value.movedim(value.dim() - len(site["fn"].event_shape) + f.dim, 0)
    return value.reshape(num, -1)
