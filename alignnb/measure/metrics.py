"""The metric registry: every alignment metric of the study, the single way in.

``A`` [n, d_A] and ``B`` [n, d_B] embed the same n sentences in the same order. Each entry of
:data:`METRICS` states, once:

- its **definition**, a plain function ``definition(A, B, k)`` whose docstring gives the
  formula and its source (:mod:`~alignnb.measure.neighbours`, :mod:`~alignnb.measure.similarity`,
  :mod:`~alignnb.measure.procrustes`);
- whether it **uses k**, and then its valid range, 1 <= k <= n - 2
  (:func:`alignnb.measure.checks.check_k`, via :meth:`Metric.check_k`);
- the **kind of null** it takes: ``"relabel"`` (the prepared form of B is relabelled, O(n k)
  per draw, so a null has as many draws as asked) or ``"rescore"`` (each draw recomputes a
  decomposition or a correlation, so callers draw fewer: :meth:`Metric.null_draws`);
- its **display name** (``label``) and its columns in the headline table (``headline``,
  ``headline_p``).

===========================  ==========================================================  =========
metric                       definition                                                   null
===========================  ==========================================================  =========
precision (precision@k)      mean_i |NN_A(i) ∩ NN_B(i)| / k, cosine, self excluded,        relabel
                             ties fractional (Huh et al. 2024; Milano & Nolfi 2026)
cka (linear CKA)             HSIC(AA^T, BB^T) / sqrt(HSIC(AA^T,AA^T) HSIC(BB^T,BB^T)),     rescore
                             centred features (Kornblith et al. 2019)
cka_unbiased                 the same with Song et al.'s (2012) unbiased HSIC              rescore
rsa (RSA, Spearman)          Spearman rho of the cosine-distance upper triangles           rescore
                             (Kriegeskorte et al. 2008)
rsa_rho_a (RSA, rho-a)       rho-a of the same triangles: average ranks without tie        rescore
                             correction (rsatoolbox's compare_rho_a; Nili et al. 2014),
                             the one to read for spaces with tied dissimilarities
procrustes_disparity         1 - s^2 after centring, unit Frobenius norm, zero-padding of   rescore
                             the narrower space and the best orthogonal map (Schönemann
                             1966; scipy.spatial.procrustes's disparity); lower is better
===========================  ==========================================================  =========

The names of the k-NN, CKA/RSA and Procrustes modules are re-exported here, so that
``metrics.precision_at_k``, ``metrics.knn_membership``, ``metrics.cka`` and so on stay one
namespace for the notebooks, the explorer and the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# one metrics namespace: the checks, k-NN, CKA/RSA and Procrustes are re-exported
from alignnb.measure.checks import as_matrix, check_k, check_pair, row_norms, unit_rows  # noqa: F401
from alignnb.measure.neighbours import (TIE_TOLERANCE, TIES, chance_precision, cosine_blocks, knn_indices,  # noqa: F401
                                        knn_membership, overlap_from_knn, overlap_from_membership,
                                        per_sentence_precision, precision_at_k, relabel_membership,
                                        overlap_with_dense, relabelled_overlap)
from alignnb.measure.procrustes import (ProcrustesResult, disparity_of_coordinates, principal_coordinates,  # noqa: F401
                                        procrustes, procrustes_disparity, procrustes_map)
from alignnb.measure.similarity import (centred_gram, cka, cka_unbiased, rsa, rsa_rho_a, unbiased_cka_of_grams,  # noqa: F401
                                        unbiased_hsic)


# --------------------------------------------------------------------------------------
# how each metric is prepared once per space and relabelled under a permutation
# --------------------------------------------------------------------------------------


def _same(X: np.ndarray, k: int) -> np.ndarray:
    return X


def _rows(X: np.ndarray, perm: np.ndarray) -> np.ndarray:
    return X[perm]


def _rows_and_columns(K: np.ndarray, perm: np.ndarray) -> np.ndarray:
    return K[np.ix_(perm, perm)]


def _mean_overlap(ma: Any, mb: Any) -> float:
    return float(overlap_from_membership(ma, mb).mean())


#: The kinds of permutation null (see the module docstring).
NULL_KINDS = ("relabel", "rescore")


@dataclass(frozen=True)
class Metric:
    """One alignment metric: its definition, k, null kind and names, and how to score it fast.

    ``definition(A, B, k)`` is the metric itself (k ignored unless ``uses_k``), ``null`` its
    kind of permutation null (:data:`NULL_KINDS`). For speed,
    ``prepare(X, k)`` precomputes what the score needs from one space (the k-NN membership for
    precision@k, a Gram matrix, principal coordinates, or the matrix itself);
    ``compare(pa, pb)`` scores two prepared spaces; ``relabel(pb, perm)`` is the prepared form
    of ``B[perm]``, so a permutation null never recomputes neighbours. ``per_sentence``
    (precision@k only) gives one score per sentence, whose mean is the score.
    """

    name: str
    label: str  # display name; "{k}" is replaced by k
    prepare: Callable[[np.ndarray, int], Any]
    compare: Callable[[Any, Any], float]
    relabel: Callable[[Any, np.ndarray], Any]
    uses_k: bool = False
    higher_is_better: bool = True
    identical: float = 1.0  # the score of a space against itself
    per_sentence: Callable[[Any, Any], np.ndarray] | None = None
    headline: str | None = None  # its column in the headline table (analysis.summary_table)
    headline_p: str | None = None  # the column of its permutation p-value there, if it has one
    definition: Callable[[Any, Any, int], float] | None = None  # the plain function (None: score via prepare)
    null: str = "rescore"  # one of NULL_KINDS
    # optional fast path of a null: relabelled(pa, pb) is a function perm -> compare(pa, relabel(pb, perm))
    relabelled: Callable[[Any, Any], Callable[[np.ndarray], float]] | None = None

    def __post_init__(self) -> None:
        if self.null not in NULL_KINDS:
            raise ValueError(f"null must be one of {NULL_KINDS}, got {self.null!r}")

    def check_k(self, k: Any, n: int) -> int | None:
        """k checked against n (:func:`~alignnb.measure.checks.check_k`) for a k-NN metric; None otherwise."""
        return check_k(k, n) if self.uses_k else None

    def value(self, A: Any, B: Any, k: int = 15) -> float:
        """The metric of A against B by its plain ``definition`` (by :meth:`score` if it has none)."""
        return float(self.definition(A, B, k)) if self.definition is not None else self.score(A, B, k)

    def score(self, A: Any, B: Any, k: int = 15) -> float:
        """The metric of A against B (k is used by k-NN metrics only), from prepared spaces."""
        A, B = check_pair(A, B, k if self.uses_k else None)
        return float(self.compare(self.prepare(A, k), self.prepare(B, k)))

    def display(self, k: Any) -> str:
        """The metric's name for a reader, with k filled in."""
        return self.label.format(k=k)

    def null_draws(self, n_perm: int, divisor: int, floor: int) -> int:
        """Permutations to draw for a null of nominally ``n_perm`` draws: all of them for a
        ``"relabel"`` null, ``max(floor, n_perm // divisor)`` for a ``"rescore"`` one."""
        return int(n_perm) if self.null == "relabel" else max(floor, int(n_perm) // divisor)


def _precision(A: Any, B: Any, k: int = 15) -> float:
    return precision_at_k(A, B, k)


def _ignore_k(fn: Callable[[Any, Any], float]) -> Callable[[Any, Any, int], float]:
    def definition(A: Any, B: Any, k: int = 15) -> float:
        return fn(A, B)
    definition.__doc__, definition.__name__ = fn.__doc__, fn.__name__
    return definition


_precision.__doc__ = precision_at_k.__doc__


#: Every metric of the study, by name: what the analysis tables, the nulls and the explorer offer,
#: in the order the explorer shows them.
METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("precision", "precision@{k}", lambda X, k: knn_membership(X, k), _mean_overlap, relabel_membership,
           uses_k=True, per_sentence=overlap_from_membership, headline="precision", headline_p="p_value",
           definition=_precision, null="relabel", relabelled=relabelled_overlap),
    Metric("cka", "linear CKA", _same, cka, _rows, headline="cka_biased", definition=_ignore_k(cka)),
    Metric("cka_unbiased", "unbiased linear CKA", lambda X, k: centred_gram(X), unbiased_cka_of_grams,
           _rows_and_columns, headline="cka", headline_p="cka_p", definition=_ignore_k(cka_unbiased)),
    Metric("rsa", "RSA (Spearman)", _same, rsa, _rows, headline="rsa", definition=_ignore_k(rsa)),
    Metric("rsa_rho_a", "RSA (rho-a)", _same, rsa_rho_a, _rows, headline="rsa_rho_a", definition=_ignore_k(rsa_rho_a)),
    # principal coordinates once per space (all of them: zero-padding reduces nothing), so a
    # permutation null needs one SVD of A^T B per draw
    Metric("procrustes_disparity", "Procrustes disparity", principal_coordinates, disparity_of_coordinates, _rows,
           higher_is_better=False, identical=0.0, headline="procrustes_disparity", headline_p="procrustes_p",
           definition=_ignore_k(procrustes_disparity)),
]}


def get_metric(metric: str | Metric) -> Metric:
    """The registered metric called ``metric`` (or the Metric itself)."""
    if isinstance(metric, Metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    return METRICS[metric]


def k_metrics() -> list[Metric]:
    """The registered metrics that use k (whose valid k is :func:`~alignnb.measure.checks.check_k`'s)."""
    return [m for m in METRICS.values() if m.uses_k]
