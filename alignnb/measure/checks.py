"""Input checks shared by the measure stage: two embedding matrices of the same sentences, and k.

Every metric raises ``ValueError`` saying what is wrong (not 2-D, not numeric, NaN or
infinite rows, different numbers of sentences, k out of range, zero vectors). The bound on
k is written once, in :func:`check_k`; everything that takes a k (the metrics, R_NX, the
tables, the explorer, the study settings) calls it. This module needs numpy only, so that the
settings (which must not import torch) can call it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def check_k(k: Any, n: int) -> int:
    """k as an int, if precision@k with k neighbours among ``n`` sentences is informative; else a ValueError.

    The valid range is 1 <= k <= n - 2, that is ``k < n - 1``:

    - A sentence's neighbours exclude the sentence itself, so only n - 1 candidates exist and
      :func:`~alignnb.measure.neighbours.knn_membership` can hold at most k = n - 1 of them.
    - At k = n - 1 every sentence's neighbourhood is *all* other sentences, in every space:
      each membership matrix is the all-ones matrix off the diagonal, whatever the space.
      precision@k is then 1 for any two spaces, its chance level k / (n - 1) is 1, the
      permutation null is 1 at every draw (p = 1), and R_NX = ((n-1)p - k) / (n-1-k) is 0/0.
      Counting ties fractionally changes nothing there: with no one left out there is no
      k-th place to tie for.
    - At k = n - 2 each sentence still leaves out one other, so two spaces can disagree.

    So k = n - 1 is computable but carries no information, and the study reports every
    precision beside R_NX, which is undefined there. ``k`` must be a Python or numpy integer:
    True, None, 2.0 or a numpy bool is an error (``int(True) == 1`` would otherwise pass).
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer (the number of nearest neighbours), got {k!r} "
                         f"({type(k).__name__})")
    n = int(n)
    if not 1 <= k <= n - 2:
        raise ValueError(f"k={int(k)} is out of range for n={n} sentences: k must be a positive integer smaller than "
                         f"the number of sentences minus one, 1 <= k <= n-2 = {n - 2}. A sentence's neighbours "
                         f"exclude itself, so at most n-1 = {n - 1} exist, and at k = n-1 every space has the same "
                         "neighbourhoods (precision 1, R_NX undefined): choose a smaller k")
    return int(k)


def usable_ks(ks: Iterable[Any], n: int) -> list[int]:
    """The values of ``ks`` that :func:`check_k` accepts for ``n`` sentences, in order."""
    out = []
    for k in ks:
        try:
            out.append(check_k(k, n))
        except ValueError:
            continue
    return out


def as_matrix(X: Any, name: str = "X") -> np.ndarray:
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


def check_pair(A: Any, B: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate two embedding matrices of the same sentences (and k, unless None); return them as float arrays."""
    A, B = as_matrix(A, "A"), as_matrix(B, "B")
    if len(A) != len(B):
        raise ValueError(f"A has {len(A)} rows and B {len(B)}: both must embed the same sentences in the same order")
    if len(A) < 3:
        raise ValueError(f"need at least 3 sentences, got {len(A)}")
    if k is not None:
        check_k(k, len(A))
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


def check_count(value: Any, name: str, least: int = 1) -> int:
    """``value`` as an int of at least ``least`` (a number of permutations, resamples, draws), or a ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
    return int(value)


# labels and per-sentence scores

#: The level that sentences without a value for a factor (None, NaN, "none", "") belong to.
MISSING_LEVEL = "<none>"


def is_missing(v: Any) -> bool:
    """Whether a label counts as missing (None, NaN, \"none\", \"nan\", \"\")."""
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip().lower() in ("", "none", "nan")


def level_codes(values: Any, name: str) -> tuple[np.ndarray, list]:
    """Integer codes 0..L-1 for a 1-D array of labels; missing values form the level MISSING_LEVEL."""
    v = np.asarray(values, dtype=object)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sentence), got shape {v.shape}")
    labels = [MISSING_LEVEL if is_missing(x) else str(x) for x in v]
    uniq, codes = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    return codes.astype(np.int64), list(uniq)


def as_scores(x: Any, name: str) -> np.ndarray:
    """x as a finite, non-empty 1-D float64 array (one value per sentence), or a ValueError."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per sentence), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has {int((~np.isfinite(x)).sum())} NaN or infinite value(s)")
    return x


def check_level(level: float) -> float:
    """A confidence level in (0, 1), or a ValueError."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)
