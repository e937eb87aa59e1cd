"""Procrustes analysis: the orthogonal map (with scale) that best carries one space onto another.

Both spaces are centred, scaled to unit Frobenius norm and brought to a common dimension by
PCA; the orthogonal map R and scale s minimising ||s A R - B|| come from the SVD of A^T B
(Schönemann 1966). ``disparity`` is scipy.spatial.procrustes's: the sum of squared residuals,
1 - s^2, in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from alignnb.core import streams
from alignnb.measure.checks import check_pair, unit_rows


@dataclass
class ProcrustesResult:
    """Procrustes alignment of A onto B."""

    disparity: float  # sum of squared residuals after the best orthogonal map + scale (scipy's definition)
    retrieval_top1: float  # held-out sentences: share whose mapped A vector is nearest to its own B vector
    retrieval_top5: float
    chance_top1: float  # 1 / (held-out set size)
    dim: int  # common dimension used
    n_splits: int


def _standardize(X: np.ndarray) -> np.ndarray:
    X = X - X.mean(0)
    norm = np.linalg.norm(X)
    if norm == 0:
        raise ValueError("all rows are identical: Procrustes is undefined")
    return X / norm


def _pca(X: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Projection of centred X on its top ``dim`` principal axes, and the axes [d, dim]."""
    _, _, vt = np.linalg.svd(X, full_matrices=False)
    axes = vt[:dim].T
    return X @ axes, axes


def _common_dim(A: np.ndarray, B: np.ndarray, dim: int | None) -> int:
    limit = min(A.shape[1], B.shape[1], len(A) - 1)
    if dim is None:
        return limit
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= limit:
        raise ValueError(f"dim must be an integer from 1 to {limit} (the smaller dimension, at most n - 1), "
                         f"or None for {limit}; got {dim!r}")
    return int(dim)


def _orthogonal_map(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, float]:
    """R, s minimising ||s X R - Y||_F with R orthogonal (SVD of X^T Y)."""
    u, sig, vt = np.linalg.svd(X.T @ Y)
    return u @ vt, float(sig.sum())


def procrustes_disparity(A: Any, B: Any, dim: int | None = None) -> float:
    """scipy.spatial.procrustes's disparity after reducing both spaces to a common dimension.

    With equal dimensions and ``dim=None`` no reduction is made, and the value equals
    ``scipy.spatial.procrustes(A, B)[2]`` (the roles of A and B are symmetric).
    """
    A, B = check_pair(A, B)
    A, B = _standardize(A.astype(np.float64)), _standardize(B.astype(np.float64))
    if A.shape[1] != B.shape[1] or dim is not None:
        m = _common_dim(A, B, dim)
        A, B = _standardize(_pca(A, m)[0]), _standardize(_pca(B, m)[0])
    R, s = _orthogonal_map(B, A)
    return float(max(0.0, 1.0 - s**2))  # = sum((A - s B R)^2) for unit-norm A, B


def procrustes_map(A: Any, B: Any, dim: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """A mapped onto B by Procrustes, in B's principal axes: (s·Za·R, Zb, s).

    Both spaces are centred, projected on their top principal axes (a common dimension,
    ``dim`` or the largest possible) and scaled to unit Frobenius norm (Za, Zb); R and s are
    the orthogonal map and scale minimising ||s·Za·R - Zb||. The disparity is 1 - s².
    """
    A, B = check_pair(A, B)
    A, B = A.astype(np.float64), B.astype(np.float64)
    m = _common_dim(A, B, dim)
    Za, _ = _pca(A - A.mean(0), m)
    Zb, _ = _pca(B - B.mean(0), m)
    Za, Zb = Za / np.linalg.norm(Za), Zb / np.linalg.norm(Zb)
    R, s = _orthogonal_map(Za, Zb)
    return s * Za @ R, Zb, s


def procrustes(A: Any, B: Any, dim: int | None = None, n_splits: int = 5, seed: int = 0) -> ProcrustesResult:
    """Procrustes analysis of A onto B: disparity on all sentences, plus cross-validated retrieval.

    Retrieval: ``n_splits``-fold split of the sentences (seeded); PCA, centring, scaling and
    the orthogonal map are fitted on the training folds only; each held-out sentence's A vector
    is mapped into B's space and ranked against all held-out B vectors by cosine similarity.
    """
    A, B = check_pair(A, B)
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    disparity = procrustes_disparity(A64, B64, dim)
    n = len(A)
    if n_splits < 2 or n // n_splits < 5:
        raise ValueError(f"n_splits={n_splits} leaves fewer than 5 held-out sentences of {n}")
    folds = np.array_split(streams.rng("analysis", seed).permutation(n), n_splits)
    top1, top5, chance, dims = [], [], [], []
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        ma, mb = A64[train].mean(0), B64[train].mean(0)
        Xa, Xb = A64[train] - ma, B64[train] - mb
        m = _common_dim(Xa, Xb, dim)
        _, pa = _pca(Xa, m)
        _, pb = _pca(Xb, m)
        Za, Zb = Xa @ pa, Xb @ pb
        sa, sb = np.linalg.norm(Za), np.linalg.norm(Zb)
        R, _ = _orthogonal_map(Za / sa, Zb / sb)
        mapped = ((A64[test] - ma) @ pa / sa) @ R
        target = (B64[test] - mb) @ pb / sb
        sim = unit_rows(mapped) @ unit_rows(target).T
        rank = (sim > np.diag(sim)[:, None]).sum(1)  # how many candidates beat the right one
        top1.append(float((rank < 1).mean()))
        top5.append(float((rank < 5).mean()))
        chance.append(1 / len(test))
        dims.append(m)
    return ProcrustesResult(disparity, float(np.mean(top1)), float(np.mean(top5)), float(np.mean(chance)),
                            int(min(dims)), n_splits)


def principal_coordinates(X: np.ndarray, k: int) -> np.ndarray:
    """Centred X in its principal axes, by decreasing variance (a rotation: distances kept)."""
    X = X.astype(np.float64)
    X = X - X.mean(0)
    u, s, _ = np.linalg.svd(X, full_matrices=False)
    return u * s


def disparity_of_coordinates(Za: np.ndarray, Zb: np.ndarray) -> float:
    """Procrustes disparity of two spaces given in principal coordinates (as procrustes_disparity)."""
    m = min(Za.shape[1], Zb.shape[1], len(Za) - 1)
    A, B = _standardize(Za[:, :m]), _standardize(Zb[:, :m])
    return float(max(0.0, 1.0 - np.linalg.svd(B.T @ A, compute_uv=False).sum() ** 2))
