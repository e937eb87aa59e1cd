"""Procrustes analysis: the orthogonal map (with scale) that best carries one space onto another.

Both spaces are centred and scaled to unit Frobenius norm; the orthogonal map R and scale s
minimising ||s A R - B|| come from the SVD of A^T B (Schönemann 1966), and the disparity is
the sum of squared residuals, 1 - s^2 with s the nuclear norm of A^T B, in [0, 1].

Spaces of unequal width are brought to one width in one of two ways (``reduce``):

- ``"zero_pad"`` (the default): the narrower space gets zero columns, as
  ``scipy.spatial.procrustes``'s documentation, netrep (``LinearMetric(zero_pad=True)``) and
  ReSi do. The disparity is then exactly scipy's on the padded input; padding adds only zero
  singular values to A^T B, so nothing is reduced.
- ``"pca"``: both spaces are projected on their top ``dim`` principal axes (default the
  smaller width, at most n - 1). This discards the wider space's remaining variance, and its
  disparity differs from scipy's; it is kept as a named option.
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
    dim: int  # the common width: the larger width (zero-padding) or the PCA dimension
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


REDUCTIONS = ("zero_pad", "pca")


def _check_reduce(reduce: str, dim: int | None) -> None:
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if reduce == "zero_pad" and dim is not None:
        raise ValueError(f"dim={dim!r} is a PCA dimension: use it with reduce='pca' (zero-padding reduces nothing)")


def zero_pad(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A and B with zero columns appended to the narrower, so that both have the larger width."""
    width = max(A.shape[1], B.shape[1])
    return (np.pad(A, ((0, 0), (0, width - A.shape[1]))), np.pad(B, ((0, 0), (0, width - B.shape[1]))))


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


def procrustes_disparity(A: Any, B: Any, dim: int | None = None, reduce: str = "zero_pad") -> float:
    """The Procrustes disparity of A and B, 1 - s^2 (module docstring), in [0, 1]; lower is closer.

    With ``reduce="zero_pad"`` (default) it equals ``scipy.spatial.procrustes(A', B')[2]`` on
    the zero-padded A', B' (on A, B themselves when their widths are equal); it is symmetric in
    A and B. ``reduce="pca"`` first projects both on ``dim`` principal axes.
    """
    _check_reduce(reduce, dim)
    A, B = check_pair(A, B)
    A, B = _standardize(A.astype(np.float64)), _standardize(B.astype(np.float64))
    if reduce == "pca" and (A.shape[1] != B.shape[1] or dim is not None):
        m = _common_dim(A, B, dim)
        A, B = _standardize(_pca(A, m)[0]), _standardize(_pca(B, m)[0])
    s = float(np.linalg.svd(A.T @ B, compute_uv=False).sum())  # zero columns add only zero singular values
    return float(max(0.0, 1.0 - s**2))  # = sum((A - s B R)^2) for unit-norm A, B


def procrustes_map(A: Any, B: Any, dim: int | None = None, reduce: str = "zero_pad",
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """A mapped onto B by Procrustes, in B's principal axes: (s·Za·R, Zb, s).

    Both spaces are centred, brought to one width (``reduce``: zero-padded, or projected on
    ``dim`` principal axes), and scaled to unit Frobenius norm (Za, Zb); R and s minimise
    ||s·Za·R - Zb||, and 1 - s² is :func:`procrustes_disparity`. Both results are then rotated
    into B's principal axes (a rotation: distances and the fit are unchanged), so their first
    two columns are the plane of B's largest variance.
    """
    _check_reduce(reduce, dim)
    A, B = check_pair(A, B)
    A, B = A.astype(np.float64), B.astype(np.float64)
    A, B = A - A.mean(0), B - B.mean(0)
    if reduce == "pca":
        m = _common_dim(A, B, dim)
        Za, Zb = _pca(A, m)[0], _pca(B, m)[0]
    else:
        Za, Zb = zero_pad(A, B)
    Za, Zb = Za / np.linalg.norm(Za), Zb / np.linalg.norm(Zb)
    R, s = _orthogonal_map(Za, Zb)
    axes = np.linalg.svd(Zb, full_matrices=False)[2].T  # B's principal axes
    return s * Za @ R @ axes, Zb @ axes, s


def procrustes(A: Any, B: Any, dim: int | None = None, n_splits: int = 5, seed: int = 0,
               reduce: str = "zero_pad") -> ProcrustesResult:
    """Procrustes analysis of A onto B: disparity on all sentences, plus cross-validated retrieval.

    Retrieval: ``n_splits``-fold split of the sentences (seeded); centring, scaling, the
    reduction to one width (``reduce``: zero-padding, or PCA to ``dim``) and the orthogonal map
    are fitted on the training folds only; each held-out sentence's A vector is mapped into
    B's space and ranked against all held-out B vectors by cosine similarity.
    """
    _check_reduce(reduce, dim)
    A, B = check_pair(A, B)
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    disparity = procrustes_disparity(A64, B64, dim, reduce)
    n = len(A)
    if n_splits < 2 or n // n_splits < 5:
        raise ValueError(f"n_splits={n_splits} leaves fewer than 5 held-out sentences of {n}")
    folds = np.array_split(streams.rng("analysis", seed).permutation(n), n_splits)
    width = max(A.shape[1], B.shape[1])
    top1, top5, chance, dims = [], [], [], []
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        ma, mb = A64[train].mean(0), B64[train].mean(0)
        Xa, Xb = A64[train] - ma, B64[train] - mb
        if reduce == "pca":
            m = _common_dim(Xa, Xb, dim)
            pa, pb = _pca(Xa, m)[1], _pca(Xb, m)[1]
        else:  # zero-padding as a map: the identity into the larger width
            m = width
            pa, pb = np.eye(A.shape[1], width), np.eye(B.shape[1], width)
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


def disparity_of_coordinates(Za: np.ndarray, Zb: np.ndarray, reduce: str = "zero_pad") -> float:
    """Procrustes disparity of two spaces given in principal coordinates (as procrustes_disparity).

    Zero-padding: all coordinates are kept (a rotation of each space leaves the singular values
    of A^T B unchanged, so this equals the zero-padded disparity exactly). PCA: the first
    min(widths, n - 1) coordinates of each.
    """
    if reduce == "pca":
        m = min(Za.shape[1], Zb.shape[1], len(Za) - 1)
        Za, Zb = Za[:, :m], Zb[:, :m]
    else:
        _check_reduce(reduce, None)
    A, B = _standardize(Za), _standardize(Zb)
    return float(max(0.0, 1.0 - np.linalg.svd(B.T @ A, compute_uv=False).sum() ** 2))
