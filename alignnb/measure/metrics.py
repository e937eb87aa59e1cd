"""Representational alignment metrics: pure functions over two embedding matrices.

``A`` [n, d_A] and ``B`` [n, d_B] embed the same n sentences in the same order. Every function
checks its inputs (2-D, same n, finite, k < n) and raises ``ValueError`` saying what is wrong.

precision@k  Mutual k-nearest-neighbour overlap (Huh et al. 2024, "The Platonic Representation
             Hypothesis", ``mutual_knn``; the measure of Milano & Nolfi 2026): with cosine
             similarity and each point's own index excluded,
                 p@k = mean_i |NN_A(i) ∩ NN_B(i)| / k.
             Chance level for unrelated spaces is k / (n - 1). Where several sentences tie
             for the k-th place (a discrete space such as the bag-of-attributes control ties
             at every row), NN(i) is not defined by the similarities alone. By default
             (``ties="fractional"``) each tied sentence is a fractional neighbour, with its
             chance of a place under random tie-breaking, and the overlap is
             sum_j min(M_A[i, j], M_B[i, j]): against a space without ties this is the
             expected overlap under random tie-breaking, identical spaces still give 1, and
             no value depends on the order of the sentences. Without ties it is exactly
             the definition above.
Procrustes   Centre, scale to unit Frobenius norm, bring to a common dimension, then the
             orthogonal map (with scale) that best maps A onto B (Schönemann 1966). ``disparity``
             is scipy.spatial.procrustes's: the sum of squared residuals, in [0, 1]
             (:mod:`alignnb.measure.procrustes`, re-exported here).
CKA          Linear centred kernel alignment (Kornblith et al. 2019); unbiased variant with the
             HSIC estimator of Song et al. (2012).
RSA          Spearman correlation of the two cosine-distance matrices' upper triangles
             (Kriegeskorte et al. 2008).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse
from scipy.stats import spearmanr

# the checks and Procrustes live in their own modules and are re-exported: one metrics namespace
from alignnb.measure.checks import as_matrix, check_pair, row_norms, unit_rows  # noqa: F401
from alignnb.measure.procrustes import (ProcrustesResult, disparity_of_coordinates, principal_coordinates, procrustes,  # noqa: F401
                         procrustes_disparity, procrustes_map)


# --------------------------------------------------------------------------------------
# k nearest neighbours and precision@k
# --------------------------------------------------------------------------------------


def cosine_blocks(X: np.ndarray, chunk: int = 2048, name: str = "X"):
    """Yield (start, stop, S) with S = cos(X[start:stop], X), a [stop - start, n] torch block, itself at -inf.

    The rows are normalised on the fly: each block's rows are scaled by their inverse norms
    and its columns after the product, so no unit-normalised copy of X is ever made (memory
    beyond X is one [chunk, d] and one [chunk, n] block). Equal to the product of unit rows
    within float32 rounding; float64 input is multiplied in float64 and returned as float32.
    """
    dtype = np.float64 if X.dtype == np.float64 else np.float32
    inv = (1.0 / row_norms(X, name)).astype(dtype)
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=dtype))
    inv_cols = torch.from_numpy(inv)
    for s in range(0, len(X), chunk):
        e = min(s + chunk, len(X))
        rows = torch.from_numpy(np.multiply(X[s:e], inv[s:e, None], dtype=dtype))  # [c, d], the only copy
        sim = (rows @ Xt.T).mul_(inv_cols).to(torch.float32)  # [c, n]
        r = torch.arange(e - s)
        sim[r, r + s] = -torch.inf
        yield s, e, sim


def knn_indices(X, k: int, chunk: int = 2048) -> np.ndarray:
    """Indices [n, k] of each row's k nearest neighbours by cosine similarity, itself excluded.

    Exact, in order of decreasing similarity; ties are broken by the lower index. Memory is
    O(n*k) plus one [chunk, n] block of similarities.
    """
    X = as_matrix(X, "X")
    n = len(X)
    if not 1 <= k < n:
        raise ValueError(f"k={k} must be in 1..n-1 = 1..{n - 1}")
    out = np.empty((n, k), dtype=np.int64)
    for s, e, sim in cosine_blocks(X, chunk):
        vals, idx = torch.topk(sim, k, dim=1, largest=True, sorted=True)
        # ties at the k-th value: the top-k must be the lowest indices among equal values
        kth = vals[:, -1:]
        n_eq_all = (sim == kth).sum(1)
        n_eq_in = (vals == kth).sum(1)
        tied = torch.nonzero(n_eq_all > n_eq_in).flatten()
        # also order equal values inside the top-k by index
        needs_sort = torch.nonzero((vals[:, 1:] == vals[:, :-1]).any(1)).flatten()
        for r in torch.unique(torch.cat([tied, needs_sort])).tolist():
            row = sim[r]
            order = np.lexsort((np.arange(n), -row.numpy().astype(np.float64)))
            idx[r] = torch.from_numpy(order[:k])
        out[s:e] = idx.numpy()
    return out


def overlap_from_knn(knn_a: np.ndarray, knn_b: np.ndarray) -> np.ndarray:
    """Per-point |NN_A(i) ∩ NN_B(i)| / k from two [n, k] neighbour index arrays."""
    if knn_a.shape != knn_b.shape:
        raise ValueError(f"neighbour arrays differ in shape: {knn_a.shape} vs {knn_b.shape}")
    k = knn_a.shape[1]
    hits = np.zeros(len(knn_a), dtype=np.int64)
    for s in range(0, len(knn_a), 4096):
        a, b = knn_a[s:s + 4096], knn_b[s:s + 4096]
        hits[s:s + 4096] = (a[:, :, None] == b[:, None, :]).any(2).sum(1)
    return hits / k


#: How ties at the k-th neighbour are resolved: "fractional" (each tied point a fractional
#: neighbour, its chance under random tie-breaking; order-free) or "index" (the lower sentence
#: index wins, as in :func:`knn_indices`).
TIES = ("fractional", "index")

#: Two cosine similarities closer than this count as tied: float32 rounding of a d-dimensional
#: dot product is about 1e-7 * sqrt(d), so closer values have no reliable order. Random
#: continuous spaces have such near-ties at the k-th place in about 1 row in 1,000.
TIE_TOLERANCE = 1e-6


def knn_membership(X, k: int, ties: str = "fractional", chunk: int = 2048, tol: float = TIE_TOLERANCE):
    """Sparse [n, n] matrix M: M[i, j] is the probability that j is one of i's k nearest neighbours.

    With ``ties="fractional"``, neighbours strictly closer than the k-th get 1 and the t points
    tied (within ``tol``) with the k-th each get (k - a) / t, where a is the number strictly
    closer: the chance of being picked when ties are broken uniformly at random. With
    ``ties="index"`` M is the indicator of :func:`knn_indices`. Every row sums to k, and without
    ties both give the indicator. Memory O(n*k + tied pairs) plus one [chunk, n] block.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    X = as_matrix(X, "X")
    n = len(X)
    if not 1 <= k < n:
        raise ValueError(f"k={k} must be in 1..n-1 = 1..{n - 1}")
    if ties == "index":
        idx = knn_indices(X, k, chunk)
        return sparse.csr_matrix((np.ones(n * k), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    rows, cols, weights = [], [], []
    for s, e, sim in cosine_blocks(X, chunk):
        vals, idx = torch.topk(sim, k + 1, dim=1, largest=True, sorted=True)  # k + 1 <= n: self is last
        kth = vals[:, k - 1]
        spills = vals[:, k] >= kth - tol  # the tie for the k-th place reaches beyond the top k
        # rows whose tie set fits in the top k (all rows of a space without ties): the indicator
        keep = torch.nonzero(~spills).flatten()
        rows.append(np.repeat(keep.numpy() + s, k))
        cols.append(idx[keep, :k].reshape(-1).numpy())
        weights.append(np.ones(len(keep) * k))
        # the others: scan the whole row for the tied points
        tied_rows = torch.nonzero(spills).flatten()
        if len(tied_rows):
            sub, t = sim[tied_rows], kth[tied_rows, None]
            strict = sub > t + tol
            candidate = sub >= t - tol  # the strictly closer ones and the tied ones
            n_strict = strict.sum(1)
            share = (k - n_strict).double() / (candidate.sum(1) - n_strict).double()  # a tied point's chance
            rr, cc = torch.nonzero(candidate, as_tuple=True)
            rows.append(tied_rows[rr].numpy() + s)
            cols.append(cc.numpy())
            weights.append(torch.where(strict[rr, cc], torch.ones((), dtype=torch.float64), share[rr]).numpy())
    rows, cols, weights = (np.concatenate(v) for v in (rows, cols, weights))
    return sparse.csr_matrix((weights, (rows, cols)), shape=(n, n))


def overlap_from_membership(ma, mb) -> np.ndarray:
    """Per-point |NN_A(i) ∩ NN_B(i)| / k from two :func:`knn_membership` matrices, ties fractional.

    sum_j min(M_A[i, j], M_B[i, j]) / k: the overlap of indicator sets where there are no
    ties; where only one space ties, the expected overlap under random tie-breaking
    (min(p, 1) = p * 1); where both tie on the same points, they are counted as agreeing.
    """
    if ma.shape != mb.shape:
        raise ValueError(f"membership matrices differ in shape: {ma.shape} vs {mb.shape}")
    k = round(float(ma.sum()) / ma.shape[0])  # every row sums to k
    return np.asarray(ma.minimum(mb).sum(axis=1)).ravel() / k


def relabel_membership(m, perm: np.ndarray):
    """Membership of the space whose row i is the original row ``perm[i]`` (B' = B[perm])."""
    return m[perm][:, perm]


def per_sentence_precision(A, B, k: int = 15, ties: str = "fractional") -> np.ndarray:
    """Per-sentence overlap |NN_A(i) ∩ NN_B(i)| / k (ties as in :func:`knn_membership`); its mean is precision@k."""
    A, B = check_pair(A, B, k)
    return overlap_from_membership(knn_membership(A, k, ties), knn_membership(B, k, ties))


def precision_at_k(A, B, k: int = 15, chunk: int = 2048, ties: str = "fractional") -> float:
    """Mutual k-NN overlap: mean over i of |NN_A(i) ∩ NN_B(i)| / k (cosine, self excluded).

    1 for identical neighbourhoods; about k / (n - 1) for unrelated spaces. ``ties``: how a
    tie for the k-th neighbour is resolved (see :func:`knn_membership`); it changes nothing
    when there are no ties.
    """
    A, B = check_pair(A, B, k)
    if ties == "index":  # the integer fast path
        return float(overlap_from_knn(knn_indices(A, k, chunk), knn_indices(B, k, chunk)).mean())
    return float(overlap_from_membership(knn_membership(A, k, ties, chunk), knn_membership(B, k, ties, chunk)).mean())


def chance_precision(n: int, k: int) -> float:
    """Expected precision@k of two unrelated spaces: k / (n - 1)."""
    return k / (n - 1)


# --------------------------------------------------------------------------------------
# CKA and RSA
# --------------------------------------------------------------------------------------


def _unbiased_hsic(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al.'s (2012) unbiased HSIC estimator of two Gram matrices, in O(n^2)."""
    n = len(K)
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    k1, l1 = K.sum(1), L.sum(1)
    term = (K * L).sum() + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 * (k1 @ l1) / (n - 2)
    return float(term / (n * (n - 3)))


def cka(A, B, unbiased: bool = False) -> float:
    """Linear CKA: HSIC(A, B) / sqrt(HSIC(A, A) HSIC(B, B)) with linear kernels on centred features.

    Invariant to orthogonal transforms and isotropic scaling of either space; 1 for A = B Q.
    """
    A, B = check_pair(A, B)
    A = A.astype(np.float64) - A.mean(0)
    B = B.astype(np.float64) - B.mean(0)
    if unbiased:
        if len(A) < 4:
            raise ValueError("unbiased CKA needs at least 4 sentences")
        K, L = A @ A.T, B @ B.T
        xy, xx, yy = _unbiased_hsic(K, L), _unbiased_hsic(K, K), _unbiased_hsic(L, L)
    else:
        xy = np.linalg.norm(B.T @ A) ** 2
        xx = np.linalg.norm(A.T @ A) ** 2
        yy = np.linalg.norm(B.T @ B) ** 2
    if xx <= 0 or yy <= 0:
        raise ValueError("a space has no variance: CKA is undefined")
    return float(xy / np.sqrt(xx * yy))


def rsa(A, B) -> float:
    """Spearman correlation between the upper triangles of the cosine-distance matrices."""
    A, B = check_pair(A, B)
    ua, ub = unit_rows(A, "A").astype(np.float64), unit_rows(B, "B").astype(np.float64)
    iu = np.triu_indices(len(A), 1)
    da, db = (1 - ua @ ua.T)[iu], (1 - ub @ ub.T)[iu]
    for name, d in (("A", da), ("B", db)):
        if np.ptp(d) == 0:
            raise ValueError(f"every pair of sentences in {name} is equally similar (a constant space, or all "
                             "vectors parallel): the rank correlation RSA is undefined")
    return float(spearmanr(da, db).statistic)




# --------------------------------------------------------------------------------------
# the metric registry
# --------------------------------------------------------------------------------------


def _same(X: np.ndarray, k: int) -> np.ndarray:
    return X


def _rows(X: np.ndarray, perm: np.ndarray) -> np.ndarray:
    return X[perm]


def _gram(X: np.ndarray, k: int) -> np.ndarray:
    X = X.astype(np.float64)
    X = X - X.mean(0)
    return X @ X.T


def _rows_and_columns(K: np.ndarray, perm: np.ndarray) -> np.ndarray:
    return K[np.ix_(perm, perm)]


def _unbiased_cka_of_grams(K: np.ndarray, L: np.ndarray) -> float:
    xx, yy = _unbiased_hsic(K, K), _unbiased_hsic(L, L)
    if xx <= 0 or yy <= 0:
        raise ValueError("a space has no variance: CKA is undefined")
    return float(_unbiased_hsic(K, L) / np.sqrt(xx * yy))


def _mean_overlap(ma: Any, mb: Any) -> float:
    return float(overlap_from_membership(ma, mb).mean())


@dataclass(frozen=True)
class Metric:
    """One alignment metric: how to score two spaces, and how to do it fast under permutations.

    ``prepare(X, k)`` precomputes what the score needs from one space (the k-NN membership
    for precision@k, the matrix itself otherwise); ``compare(pa, pb)`` scores two prepared
    spaces; ``relabel(pb, perm)`` is the prepared form of ``B[perm]``, so a permutation null
    never recomputes neighbours. ``per_sentence`` (precision@k only) gives one score per
    sentence, whose mean is the score.
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

    def score(self, A, B, k: int = 15) -> float:
        """The metric of A against B (k is used by k-NN metrics only)."""
        A, B = check_pair(A, B, k if self.uses_k else None)
        return float(self.compare(self.prepare(A, k), self.prepare(B, k)))

    def display(self, k: int) -> str:
        """The metric's name for a reader, with k filled in."""
        return self.label.format(k=k)


#: Every metric of the study, by name: what analysis tables, nulls and the explorer offer.
METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("precision", "precision@{k}", lambda X, k: knn_membership(X, k), _mean_overlap, relabel_membership,
           uses_k=True, per_sentence=overlap_from_membership),
    Metric("cka", "linear CKA", _same, cka, _rows),
    Metric("cka_unbiased", "unbiased linear CKA", _gram, _unbiased_cka_of_grams, _rows_and_columns),
    Metric("rsa", "RSA (Spearman)", _same, rsa, _rows),
    # principal coordinates once per space: a permutation null needs one small SVD per draw
    Metric("procrustes_disparity", "Procrustes disparity", principal_coordinates, disparity_of_coordinates, _rows,
           higher_is_better=False, identical=0.0),
]}


def get_metric(metric: str | Metric) -> Metric:
    """The registered metric called ``metric`` (or the Metric itself)."""
    if isinstance(metric, Metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    return METRICS[metric]
