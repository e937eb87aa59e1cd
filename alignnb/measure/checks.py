"""Input checks shared by the metrics: two embedding matrices of the same sentences.

Every metric raises ``ValueError`` saying what is wrong (not 2-D, not numeric, NaN or
infinite rows, different numbers of sentences, k out of range, zero vectors).
"""

from __future__ import annotations

import numpy as np


def as_matrix(X, name: str = "X") -> np.ndarray:
    """X as a finite 2-D numeric array (float64 stays float64, anything else becomes float32), or a ValueError."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n_sentences, dim], got shape {X.shape}")
    if np.iscomplexobj(X):
        raise ValueError(f"{name} is complex ({X.dtype}): embeddings must be real; pass X.real or np.abs(X) "
                         "explicitly if that is what you mean")
    if not np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_:
        raise ValueError(f"{name} must be a real numeric array, got {X.dtype}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(1).sum())
        raise ValueError(f"{name} has NaN or infinite values in {bad} row(s): check the embeddings")
    return X.astype(np.float32 if X.dtype != np.float64 else np.float64, copy=False)


def check_pair(A, B, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate two embedding matrices of the same sentences (and k); return them as float arrays."""
    A, B = as_matrix(A, "A"), as_matrix(B, "B")
    if len(A) != len(B):
        raise ValueError(f"A has {len(A)} rows and B {len(B)}: both must embed the same sentences in the same order")
    if len(A) < 3:
        raise ValueError(f"need at least 3 sentences, got {len(A)}")
    if k is not None:
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        if k >= len(A):
            raise ValueError(f"k={k} must be smaller than the number of sentences n={len(A)} (each point's own "
                             f"index is excluded, so at most n-1={len(A) - 1} neighbours exist)")
    return A, B


def unit_rows(X: np.ndarray, name: str = "X") -> np.ndarray:
    """Rows scaled to unit L2 norm (one float32 copy); a zero row is a ValueError."""
    norms = row_norms(X, name)[:, None]
    if X.dtype == np.float64:  # divide first: rows near 1e200 would overflow float32
        return (X / norms).astype(np.float32)
    return np.divide(X, norms.astype(np.float32), dtype=np.float32)  # one float32 copy


def row_norms(X: np.ndarray, name: str = "X", block: int = 256) -> np.ndarray:
    """float64 L2 norm of each row, in blocks of rows (no copy of X); zero rows are a ValueError.

    Each row is divided by its largest absolute value first, so rows near the largest floats
    (1e20 in float32, 1e200 in float64) do not overflow when squared.
    """
    norms = np.empty(len(X))
    for s in range(0, len(X), block):
        rows = X[s:s + block].astype(np.float64)
        scale = np.abs(rows).max(axis=1) if rows.size else np.zeros(len(rows))
        norms[s:s + block] = scale * np.linalg.norm(rows / np.where(scale > 0, scale, 1.0)[:, None], axis=1)
    if (norms == 0).any():
        raise ValueError(f"{name} has {int((norms == 0).sum())} zero vector(s): cosine similarity is undefined")
    return norms
