"""Whole-matrix similarity of two spaces: linear CKA (biased and unbiased) and RSA.

CKA  Linear centred kernel alignment (Kornblith et al. 2019, "Similarity of neural network
     representations revisited"): HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = A A^T,
     L = B B^T on centred features; the unbiased variant uses the HSIC estimator of Song et
     al. (2012).
RSA  Spearman correlation of the two cosine-distance matrices' upper triangles (Kriegeskorte
     et al. 2008, "Representational similarity analysis").
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import spearmanr

from alignnb.measure.checks import check_pair, unit_rows


def unbiased_hsic(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al.'s (2012) unbiased HSIC estimator of two Gram matrices, in O(n^2)."""
    n = len(K)
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    k1, l1 = K.sum(1), L.sum(1)
    term = (K * L).sum() + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 * (k1 @ l1) / (n - 2)
    return float(term / (n * (n - 3)))


def cka(A: Any, B: Any, unbiased: bool = False) -> float:
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
        xy, xx, yy = unbiased_hsic(K, L), unbiased_hsic(K, K), unbiased_hsic(L, L)
    else:
        xy = np.linalg.norm(B.T @ A) ** 2
        xx = np.linalg.norm(A.T @ A) ** 2
        yy = np.linalg.norm(B.T @ B) ** 2
    if xx <= 0 or yy <= 0:
        raise ValueError("a space has no variance: CKA is undefined")
    return float(xy / np.sqrt(xx * yy))


def centred_gram(X: np.ndarray) -> np.ndarray:
    """K = Xc Xc^T with Xc = X in float64 minus its float64 column means."""
    X = X.astype(np.float64)
    X = X - X.mean(0)
    return X @ X.T


def unbiased_cka_of_grams(K: np.ndarray, L: np.ndarray) -> float:
    """Unbiased linear CKA from two centred Gram matrices: HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L))."""
    xx, yy = unbiased_hsic(K, K), unbiased_hsic(L, L)
    if xx <= 0 or yy <= 0:
        raise ValueError("a space has no variance: CKA is undefined")
    return float(unbiased_hsic(K, L) / np.sqrt(xx * yy))


def cka_unbiased(A: Any, B: Any) -> float:
    """Unbiased linear CKA (Song et al.'s 2012 HSIC estimator; n >= 4), from float64-centred Gram matrices.

    The same estimator as ``cka(A, B, unbiased=True)``, computed as the registry's permutation
    null computes it (:func:`centred_gram`, which centres in float64, then
    :func:`unbiased_cka_of_grams`), so the headline's value and its null agree to the last bit.
    """
    A, B = check_pair(A, B)
    if len(A) < 4:
        raise ValueError("unbiased CKA needs at least 4 sentences")
    return unbiased_cka_of_grams(centred_gram(A), centred_gram(B))


def rsa(A: Any, B: Any) -> float:
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
