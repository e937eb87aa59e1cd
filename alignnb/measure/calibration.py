"""Chance correction and null calibration of precision@k.

R_NX(k)        Rescaled neighbourhood agreement (Lee & Verleysen, Neurocomputing 72, 2009;
               Lee, Peluffo-Ordóñez & Verleysen, Neurocomputing 169, 2015): with Q_NX(k) the
               mean share of each point's k nearest neighbours that the two spaces have in
               common (= precision@k),
                   R_NX(k) = ((n - 1) Q_NX(k) - k) / (n - 1 - k).
               Q_NX of unrelated spaces is k / (n - 1) in expectation, so R_NX is 0 in
               expectation for unrelated spaces and 1 for identical neighbourhoods; unlike
               precision@k it can be compared across n and k. Its area under a log-k axis,
               AUC = sum_k R_NX(k) / k / sum_k 1 / k (Lee et al. 2015), weights small k most.
Calibration    Gröger, Wen & Brbić (ICML 2026, "Revisiting the Platonic Representation
               Hypothesis: An Aristotelian View"; package ``calibrated-similarity``):
                   s_cal = max(0, (s - tau) / (s_max - tau)),
               tau the (1 - alpha) critical value of the permutation null, so that s_cal is 0
               under the null with probability >= 1 - alpha and 1 for a perfect score. The
               package takes tau as the ceil((1 - alpha)(K + 1))-th smallest of the K null
               values *and the observed one* (the identity permutation is one of the
               permutations), which makes the level exact for any K; :func:`calibrated` does
               the same by default. When several layer pairs are compared and the best one is
               kept, the null must be the distribution of that *maximum* under one permutation
               applied to every layer (their Algorithm 2): :func:`calibrate_precision_layers`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from calibrated_similarity import calibrate, calibrate_layers

from alignnb.measure.checks import as_scores, check_count, check_k, check_pair
from alignnb.measure.metrics import METRICS, knn_membership
from alignnb.measure.nulls import NullResult, p_value, permutation_test, prepared_null


def _check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)


# --------------------------------------------------------------------------------------
# R_NX: chance-corrected neighbourhood agreement
# --------------------------------------------------------------------------------------


def rnx(precision: Any, n: int, k: Any) -> float | np.ndarray:
    """R_NX(k) = ((n - 1) p - k) / (n - 1 - k) for precision@k ``p`` among ``n`` sentences.

    0 in expectation for unrelated spaces, 1 for identical neighbourhoods, negative when the
    spaces agree less than chance. Works on floats and numpy arrays (``k`` may be an integer
    array of the same shape as ``precision``, e.g. a precision curve); returns a float for
    scalar input. Every k is checked by :func:`~alignnb.measure.checks.check_k` (at k = n - 1
    the formula is 0/0).
    """
    p = np.asarray(precision, dtype=np.float64)
    if isinstance(n, bool) or int(n) != n or n < 3:
        raise ValueError(f"n must be an integer >= 3, got {n}")
    for value in np.unique(np.asarray(k)).tolist() if np.ndim(k) else [k]:
        check_k(value, n)
    kk = np.asarray(k, dtype=np.float64)
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"precision must be in [0, 1], got {precision}")
    out = ((n - 1) * p - kk) / (n - 1 - kk)
    return float(out) if out.ndim == 0 else out


def rnx_auc(ks: Sequence[int], rnx_values: Any) -> float:
    """Area under R_NX over log k (Lee et al. 2015): sum_k R_NX(k) / k / sum_k 1 / k over ``ks``.

    Lee et al. sum over every k = 1..n-2; over a subset of ks this is the same weighting
    restricted to those ks. 1 if R_NX = 1 at every k, 0 in expectation for unrelated spaces.
    """
    ks = np.asarray(ks, dtype=np.float64)
    r = np.asarray(rnx_values, dtype=np.float64)
    if ks.ndim != 1 or len(ks) == 0:
        raise ValueError(f"ks must be a non-empty 1-D sequence, got shape {ks.shape}")
    if r.shape != ks.shape:
        raise ValueError(f"rnx_values has shape {r.shape} but ks has {ks.shape}: give one R_NX value per k")
    if (ks < 1).any():
        raise ValueError(f"every k must be >= 1, got {ks.tolist()}")
    if len(np.unique(ks)) != len(ks):
        raise ValueError(f"ks has repeated values: {ks.tolist()}")
    if not np.isfinite(r).all():
        raise ValueError("rnx_values has NaN or infinite values")
    w = 1.0 / ks
    return float((r * w).sum() / w.sum())


# --------------------------------------------------------------------------------------
# null calibration (Gröger, Wen & Brbić 2026)
# --------------------------------------------------------------------------------------


def _critical_value(score: float, null: np.ndarray, alpha: float, include_observed: bool) -> float:
    if include_observed:  # calibrated-similarity's rule: an order statistic of {score} ∪ null
        combined = np.sort(np.append(null, score))
        K = len(null)
        idx = min(max(math.ceil((1.0 - alpha) * (K + 1)) - 1, 0), K)
        return float(combined[idx])
    return float(np.quantile(null, 1.0 - alpha))


def calibrated(score: float, null: Any, alpha: float = 0.05, smax: float | None = 1.0,
               include_observed: bool = True) -> float:
    """Null-calibrated score (s - tau) / (smax - tau), clipped to [0, 1]; tau the null's critical value.

    tau is the (1 - alpha) quantile of the permutation null. With ``include_observed=True`` (the
    default, as in ``calibrated_similarity.calibrate``) it is the ceil((1 - alpha)(K + 1))-th
    smallest of the K null values together with ``score``, which makes P(score > tau) <= alpha
    exactly under the null for any K; with ``False`` it is ``np.quantile(null, 1 - alpha)``,
    which is slightly liberal for small K. ``smax=None`` returns the unnormalised max(0, s - tau).
    """
    null = as_scores(null, "null")
    alpha = _check_alpha(alpha)
    if not np.isfinite(score):
        raise ValueError(f"score must be finite, got {score}")
    tau = _critical_value(float(score), null, alpha, include_observed)
    if smax is None:
        return max(0.0, float(score) - tau)
    if smax <= tau:
        raise ValueError(f"smax={smax} must exceed the null's critical value tau={tau:.4g}")
    return float(min(1.0, max(0.0, (float(score) - tau) / (smax - tau))))


@dataclass
class CalibratedScore:
    """A score and its null calibration."""

    score: float  # the observed score (the aggregate over layer pairs for calibrate_precision_layers)
    calibrated: float  # max(0, (score - tau) / (smax - tau)), in [0, 1]
    tau: float  # the (1 - alpha) critical value of the null (calibrated_similarity's rule)
    p_value: float  # (1 + #{null >= score}) / (1 + n_perm)
    null: np.ndarray = field(repr=False)  # the (aggregated) score under each permutation
    layer_scores: np.ndarray | None = field(default=None, repr=False)  # [L_A, L_B] observed, for layers
    package: tuple = field(default=(), repr=False)  # calibrated_similarity's own (calibrated, p, tau), float32
    test: NullResult | None = field(default=None, repr=False)  # the engine's result: band, q95, p-value

    @property
    def null_q95(self) -> float:
        """The 95th percentile of the (aggregated) null (np.percentile, as everywhere)."""
        return float(np.percentile(self.null, 95)) if self.test is None else float(self.test.null_q95)


def _from_null(res: NullResult, alpha: float, pkg: Any, layer_scores: np.ndarray | None = None) -> CalibratedScore:
    """The package's definitions evaluated in float64 on the engine's null (see calibrate_precision)."""
    score, null = float(res.observed), res.null
    tau = _critical_value(score, null, alpha, include_observed=True)
    value = min(1.0, max(0.0, (score - tau) / max(1.0 - tau, 1e-12)))
    return CalibratedScore(score, value, tau, p_value(score, null), null, layer_scores,
                           tuple(float(v) for v in pkg), res)


def _replay(values: Sequence[float]) -> Any:
    """A similarity function for ``calibrated_similarity`` that returns ``values`` in turn, whatever it is given."""
    it = iter(values)
    return lambda x, y: next(it)


def _dummy_data(n: int) -> tuple[Any, Any]:
    """Index columns [n, 1] for the package: it only needs shapes, the scores are replayed."""
    idx = torch.arange(n, dtype=torch.int64)[:, None]
    return idx, lambda n_, device: torch.arange(n_)


def calibrate_precision(A: Any, B: Any, k: int = 15, n_perm: int = 200, seed: int = 0, alpha: float = 0.05,
                        strata: Any = None, ties: str = "fractional") -> CalibratedScore:
    """precision@k calibrated against its permutation null (Gröger, Wen & Brbić 2026).

    The null is drawn by the engine (:func:`alignnb.measure.nulls.prepared_null`: k-NN
    memberships computed once and relabelled, permutations from the ``analysis`` stream,
    within ``strata`` if given). ``calibrated_similarity.calibrate`` is then run on the same
    scores (its similarity function replays them: observed first, then each draw), so the
    package's own definitions of tau, the p-value and the calibrated score are applied to
    exactly this null; its float32 triple is kept in ``.package``.

    The package casts every score to float32: its smallest p-value with K = 19 is float32(1/20)
    = 0.0500000007 > 0.05, and near-equal scores tie or not by float32 rounding. The returned
    values apply the package's definitions in float64 (ties within ``TIE_TOLERANCE``).
    """
    A, B = check_pair(A, B, k)
    n_perm, alpha = check_count(n_perm, "n_perm"), _check_alpha(alpha)
    m = METRICS["precision"]
    ma, mb = knn_membership(A, k, ties), knn_membership(B, k, ties)
    res = prepared_null(m, ma, mb, len(A), n_perm, seed, strata)
    idx, perm_fn = _dummy_data(len(A))
    pkg = calibrate(idx, idx, _replay([res.observed, *res.null.tolist()]), K=n_perm, alpha=alpha, smax=1.0,
                    perm_fn=perm_fn)
    return _from_null(res, alpha, pkg)


AGGREGATIONS = ("max", "mean")


def calibrate_precision_layers(A_layers: Any, B_layers: Any, k: int = 15, n_perm: int = 200, seed: int = 0,
                               agg: str = "max", alpha: float = 0.05, strata: Any = None,
                               ties: str = "fractional") -> CalibratedScore:
    """Aggregation-aware calibration (``calibrated_similarity.calibrate_layers``) of precision@k.

    ``A_layers`` / ``B_layers``: lists of [n, d_l] arrays (or one array) embedding the same
    sentences. The observed statistic is ``agg`` ("max": the best layer pair; "mean") of the
    [L_A, L_B] precision matrix; the null is the same aggregate under each permutation, the SAME
    permutation applied to every B layer, so taking the best pair is paid for (their
    Algorithm 2). The engine (:func:`alignnb.measure.nulls.permutation_test`) draws the
    [L_A, L_B] matrix under each permutation from memberships computed once per layer; the
    package is run on the same scores, replayed, as in :func:`calibrate_precision`.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    A_layers = [A_layers] if isinstance(A_layers, np.ndarray) or hasattr(A_layers, "shape") else list(A_layers)
    B_layers = [B_layers] if isinstance(B_layers, np.ndarray) or hasattr(B_layers, "shape") else list(B_layers)
    if not A_layers or not B_layers:
        raise ValueError("A_layers and B_layers must each hold at least one layer")
    n_perm, alpha = check_count(n_perm, "n_perm"), _check_alpha(alpha)
    n = len(A_layers[0])
    for name, layers in (("A_layers", A_layers), ("B_layers", B_layers)):
        for i, X in enumerate(layers):
            if len(X) != n:
                raise ValueError(f"{name}[{i}] has {len(X)} rows but A_layers[0] has {n}: every layer must embed "
                                 f"the same sentences")
    checked = [check_pair(A_layers[0], X, k)[1] for X in list(A_layers) + list(B_layers)]
    m = METRICS["precision"]
    ma = [knn_membership(X, k, ties) for X in checked[:len(A_layers)]]
    mb = [knn_membership(X, k, ties) for X in checked[len(A_layers):]]
    LA, LB = len(ma), len(mb)

    relabelled = [[m.relabelled(a, b) for b in mb] for a in ma]  # the engine's fast path, as in prepared_null

    def matrix(perm: np.ndarray | None) -> np.ndarray:
        if perm is None:
            return np.array([[m.compare(a, b) for b in mb] for a in ma], dtype=float).ravel()
        return np.array([[score(perm) for score in row] for row in relabelled], dtype=float).ravel()

    S0 = matrix(None)
    res = permutation_test(matrix, S0, n, n_perm, seed, strata)
    S = np.concatenate([S0[None], res.null]).reshape(n_perm + 1, LA, LB)
    aggregate = S.reshape(n_perm + 1, -1).max(1) if agg == "max" else S.reshape(n_perm + 1, -1).mean(1)
    X_idx, perm_fn = _dummy_data(n)
    pkg = calibrate_layers([X_idx] * LA, [X_idx] * LB, _replay(S.ravel().tolist()), agg=agg, K=n_perm, alpha=alpha,
                           smax=1.0, perm_fn=perm_fn)
    return _from_null(NullResult(aggregate[0], aggregate[1:], True, strata is not None), alpha, pkg, S[0])
