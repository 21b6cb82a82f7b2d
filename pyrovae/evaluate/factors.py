r"""Which latent dimensions carry which inputs of the script that drew the data.

For data drawn by a script with known inputs (``rivers``: grass colour, heading,
width, tree count, eight left/right turns and their summaries, see
:mod:`pyrovae.data.rivers`), the question is not only how disentangled a code is
but which input each dimension follows -- for example whether the dimension that
bends the river follows the *net* curvature, which no single input of the script
sets, or one of the turns.

:func:`factor_latent_information` estimates the mutual information between every
code dimension and every input as MIG does (Chen et al. 2018, arXiv 1802.04942;
:func:`pyrovae.evaluate.disentangle.mutual_information_gap`): codes cut into
equal-width histogram bins, the plug-in estimate in nats. The plug-in estimate is
biased upward by about :math:`(|Z| - 1)(|V| - 1) / 2N` nats (Miller 1955; Paninski
2003, "Estimation of entropy and mutual information"), with :math:`|Z|, |V|` the
numbers of occupied bins or levels; the bias grows with the number of levels of
the input, so comparisons between inputs of different sizes subtract it.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import mutual_info_score

from pyrovae.evaluate.disentangle import discretize, mutual_information
from pyrovae.util import positive_int

__all__ = ["FactorInformation", "curvature_vs_turns", "factor_latent_information", "most_informative_dims"]


@dataclass
class FactorInformation:
    """Mutual information between code dimensions and named inputs.

    ``mi`` ``[D, F]``: plug-in I(z_j; v_k) in nats. ``bias`` ``[D, F]``: its
    first-order upward bias (|Z_j| - 1)(|V_k| - 1) / 2N. ``entropy`` ``[F]``: H(v_k)
    of the (discretised) inputs. ``factor_names``: the F names. ``num_points``: N.
    """

    mi: np.ndarray
    bias: np.ndarray
    entropy: np.ndarray
    factor_names: tuple
    num_points: int

    def column(self, name):
        if name not in self.factor_names:
            raise KeyError(f"no input named {name!r}; the inputs are {list(self.factor_names)}")
        return self.factor_names.index(name)


def factor_latent_information(codes, factors, factor_names, num_bins=20):
    """Mutual information of every code dimension with every input: a :class:`FactorInformation`.

    ``codes`` ``[N, D]`` are cut into ``num_bins`` equal-width bins per dimension
    (as MIG does). ``factors`` ``[N, F]`` holds the inputs, named by
    ``factor_names``: a column of integers (a count, a turn, a grid cell) is used
    level by level; any other column (a continuous input) is cut into
    ``num_bins`` equal-width bins too.
    """
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors, dtype=np.float64)
    factor_names = tuple(factor_names)
    num_bins = positive_int("num_bins", num_bins)
    if codes.ndim != 2 or factors.ndim != 2 or codes.shape[0] != factors.shape[0]:
        raise ValueError(f"codes [N, D] and factors [N, F] must share N, got shapes {list(codes.shape)} and "
                         f"{list(factors.shape)}")
    if codes.shape[0] < 2:
        raise ValueError(f"need at least 2 points, got {codes.shape[0]}")
    if len(factor_names) != factors.shape[1] or len(set(factor_names)) != len(factor_names):
        raise ValueError(f"factor_names must name the {factors.shape[1]} factor columns once each, "
                         f"got {list(factor_names)}")
    if not (np.isfinite(codes).all() and np.isfinite(factors).all()):
        raise ValueError("codes and factors must be finite (no NaN or inf)")
    discrete_codes = discretize(codes, num_bins)
    discrete_factors = _discretize_factors(factors, num_bins)
    mi = mutual_information(discrete_codes, discrete_factors)
    n = codes.shape[0]
    code_levels = np.array([len(np.unique(z)) for z in discrete_codes.T])
    factor_levels = np.array([len(np.unique(v)) for v in discrete_factors.T])
    bias = np.outer(code_levels - 1, factor_levels - 1) / (2 * n)
    entropy = np.array([mutual_info_score(v, v) for v in discrete_factors.T])
    return FactorInformation(mi, bias, entropy, factor_names, n)


def _discretize_factors(factors, num_bins):
    out = np.empty(factors.shape, dtype=np.int64)
    for k, column in enumerate(factors.T):
        if np.array_equal(column, np.round(column)):
            out[:, k] = np.unique(column, return_inverse=True)[1]
        else:
            out[:, k] = discretize(column[:, None], num_bins)[:, 0]
    return out


def most_informative_dims(info, names):
    """For each input in ``names``: the dimension most informative about it and the runner-up.

    Returns ``{name: {"dim", "mi", "runner_up_dim", "runner_up_mi", "normalized_gap"}}``
    with MI in nats; ``normalized_gap`` is (mi - runner_up_mi) / H(v), that input's
    term of MIG (0 when H(v) = 0).
    """
    if info.mi.shape[0] < 2:
        raise ValueError("most_informative_dims needs a code with at least 2 dimensions")
    out = {}
    for name in names:
        k = info.column(name)
        order = np.argsort(-info.mi[:, k], kind="stable")
        first, second = info.mi[order[0], k], info.mi[order[1], k]
        gap = (first - second) / info.entropy[k] if info.entropy[k] > 0 else 0.0
        out[name] = {"dim": int(order[0]), "mi": float(first), "runner_up_dim": int(order[1]),
                     "runner_up_mi": float(second), "normalized_gap": float(gap)}
    return out


def curvature_vs_turns(info, curvature="net_curvature", turns=None):
    """Is the dimension that best follows the net curvature better explained by it than by any single turn?

    Takes the dimension j with the largest I(z_j; ``curvature``) and compares that
    MI with I(z_j; turn) for every turn (``turns``: names, by default every input
    whose name starts with ``"turn_"``). For one dimension, a larger I(z_j; v)
    means v removes more of z_j's entropy, so the MIs compare directly; each is
    first corrected by its plug-in bias, which is larger for the curvature's 9
    levels than for a turn's 2. Returns ``{"dim", "mi_curvature", "best_turn",
    "mi_best_turn", "corrected_mi_curvature", "corrected_mi_best_turn",
    "curvature_explains_better"}``.
    """
    turns = [n for n in info.factor_names if n.startswith("turn_")] if turns is None else list(turns)
    if not turns:
        raise ValueError(f"no turn inputs to compare with: pass turns=[...] (inputs: {list(info.factor_names)})")
    c = info.column(curvature)
    dim = int(np.argmax(info.mi[:, c]))
    corrected = info.mi[dim] - info.bias[dim]
    columns = [info.column(t) for t in turns]
    best = columns[int(np.argmax(corrected[columns]))]
    return {"dim": dim, "mi_curvature": float(info.mi[dim, c]), "best_turn": info.factor_names[best],
            "mi_best_turn": float(info.mi[dim, best]), "corrected_mi_curvature": float(corrected[c]),
            "corrected_mi_best_turn": float(corrected[best]),
            "curvature_explains_better": bool(corrected[c] > corrected[best])}
