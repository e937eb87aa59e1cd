"""k nearest neighbours and precision@k (mutual k-NN overlap), exact and memory-bounded.

precision@k (Huh et al. 2024, "The Platonic Representation Hypothesis", ``mutual_knn`` in
github.com/minyoungg/platonic-rep; the measure of Milano & Nolfi 2026): with cosine similarity
and each point's own index excluded,

    p@k = mean_i |NN_A(i) ∩ NN_B(i)| / k,      chance k / (n - 1),      1 <= k <= n - 2.

A sentence tied for the k-th place counts fractionally, with its chance of a place under random
tie-breaking (:func:`knn_membership`), so no value depends on the order of the sentences;
without ties this is exactly the definition above. The bound on k is
:func:`alignnb.measure.checks.check_k`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from scipy import sparse

from alignnb.measure.checks import as_matrix, check_k, check_pair, row_norms


def cosine_blocks(X: np.ndarray, chunk: int = 2048, name: str = "X") -> Iterator[tuple[int, int, Any]]:
    """Yield (start, stop, S) with S = cos(X[start:stop], X), a [stop - start, n] torch block, itself at -inf.

    The rows are normalised on the fly: each block's rows are scaled by their inverse norms
    and its columns after the product, so no unit-normalised copy of X is ever made (memory
    beyond X is one [chunk, d] and one [chunk, n] block). Equal to the product of unit rows
    within float32 rounding; float64 input is multiplied in float64 and returned as float32.
    """
    import torch  # here: importing the metric registry stays light

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


def knn_indices(X: Any, k: int, chunk: int = 2048) -> np.ndarray:
    """Indices [n, k] of each row's k nearest neighbours by cosine similarity, itself excluded.

    Exact, in order of decreasing similarity; ties are broken by the lower index. Memory is
    O(n*k) plus one [chunk, n] block of similarities.
    """
    import torch  # here: importing the metric registry stays light

    X = as_matrix(X, "X")
    n = len(X)
    k = check_k(k, n)
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


def knn_membership(X: Any, k: int, ties: str = "fractional", chunk: int = 2048,
                   tol: float = TIE_TOLERANCE) -> sparse.csr_matrix:
    """Sparse [n, n] matrix M: M[i, j] is the probability that j is one of i's k nearest neighbours.

    With ``ties="fractional"``, neighbours strictly closer than the k-th get 1 and the t points
    tied (within ``tol``) with the k-th each get (k - a) / t, where a is the number strictly
    closer: the chance of being picked when ties are broken uniformly at random. With
    ``ties="index"`` M is the indicator of :func:`knn_indices`. Every row sums to k, and without
    ties both give the indicator. Memory O(n*k + tied pairs) plus one [chunk, n] block.
    """
    import torch  # here: importing the metric registry stays light

    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    X = as_matrix(X, "X")
    n = len(X)
    k = check_k(k, n)
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


def overlap_from_membership(ma: sparse.spmatrix, mb: sparse.spmatrix) -> np.ndarray:
    """Per-point |NN_A(i) ∩ NN_B(i)| / k from two :func:`knn_membership` matrices, ties fractional.

    sum_j min(M_A[i, j], M_B[i, j]) / k: the overlap of indicator sets where there are no
    ties; where only one space ties, the expected overlap under random tie-breaking
    (min(p, 1) = p * 1); where both tie on the same points, they are counted as agreeing.
    """
    if ma.shape != mb.shape:
        raise ValueError(f"membership matrices differ in shape: {ma.shape} vs {mb.shape}")
    k = round(float(ma.sum()) / ma.shape[0])  # every row sums to k
    return np.asarray(ma.minimum(mb).sum(axis=1)).ravel() / k


def relabel_membership(m: sparse.spmatrix, perm: np.ndarray) -> sparse.csr_matrix:
    """Membership of the space whose row i is the original row ``perm[i]`` (B' = B[perm])."""
    return m[perm][:, perm]


#: Up to this many sentences a permutation null may hold one dense [n, n] membership (200 MB at 5,000).
DENSE_LIMIT = 5000


def relabelled_overlap(ma: sparse.spmatrix, mb: sparse.spmatrix) -> Callable[[np.ndarray], float]:
    """A function ``score(perm)`` equal to ``overlap_from_membership(ma, relabel_membership(mb, perm)).mean()``.

    For permutation nulls: A's membership is made dense once, and each call gathers B's stored
    entries under the relabelling (row i of B' is row perm[i] of B, its column c moves to
    inv[c]) instead of building the relabelled sparse matrix; O(n k) per call. Above
    :data:`DENSE_LIMIT` sentences (where a dense [n, n] copy would cost too much memory) it
    relabels the sparse matrix instead.
    """
    n = ma.shape[0]
    if n > DENSE_LIMIT:
        return lambda perm: float(overlap_from_membership(ma, relabel_membership(mb, perm)).mean())
    dense = ma.toarray()
    k = round(float(ma.sum()) / n)
    mb = sparse.csr_matrix(mb)
    indptr, indices, data = mb.indptr, mb.indices, mb.data
    lengths = np.diff(indptr)
    rows_all = np.arange(n)

    def score(perm: np.ndarray) -> float:
        perm = np.asarray(perm)
        inv = np.empty(n, dtype=np.int64)
        inv[perm] = rows_all
        counts = lengths[perm]
        ends = np.cumsum(counts)
        src = np.repeat(indptr[perm] - (ends - counts), counts) + np.arange(ends[-1])
        rows = np.repeat(rows_all, counts)
        return float(np.minimum(dense[rows, inv[indices[src]]], data[src]).sum() / (n * k))

    return score


def overlap_with_dense(ma: sparse.spmatrix, dense_b: np.ndarray) -> np.ndarray:
    """:func:`overlap_from_membership` of ``ma`` against a membership given as a dense [n, n] array
    (``mb.toarray()``, made once when one space is compared with many): sum_j min(M_A, M_B) / k."""
    ma = sparse.csr_matrix(ma)
    n = ma.shape[0]
    k = round(float(ma.data.sum()) / n)
    rows = np.repeat(np.arange(n), np.diff(ma.indptr))
    return np.bincount(rows, weights=np.minimum(ma.data, dense_b[rows, ma.indices]), minlength=n) / k


def per_sentence_precision(A: Any, B: Any, k: int = 15, ties: str = "fractional") -> np.ndarray:
    """Per-sentence overlap |NN_A(i) ∩ NN_B(i)| / k (ties as in :func:`knn_membership`); its mean is precision@k."""
    A, B = check_pair(A, B, k)
    return overlap_from_membership(knn_membership(A, k, ties), knn_membership(B, k, ties))


def precision_at_k(A: Any, B: Any, k: int = 15, chunk: int = 2048, ties: str = "fractional") -> float:
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
    """Expected precision@k of two unrelated spaces: k / (n - 1) (k checked by :func:`check_k`)."""
    return check_k(k, n) / (n - 1)
