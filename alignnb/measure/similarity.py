"""Whole-matrix similarity of two spaces: linear CKA (biased and unbiased) and RSA.

CKA  Linear centred kernel alignment (Kornblith et al. 2019, "Similarity of neural network
     representations revisited"): HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = A A^T,
     L = B B^T on centred features; the unbiased variant uses the HSIC estimator of Song et
     al. (2012).
RSA  Rank correlation of the two cosine-distance matrices' upper triangles (Kriegeskorte
     et al. 2008, "Representational similarity analysis"): :func:`rsa` is Spearman's rho
     (average ranks, tie-corrected), :func:`rsa_rho_a` is rho-a, rsatoolbox's
     ``compare_rho_a``: 12 sum((r_a - mean)(r_b - mean)) / (N^3 - N) over the N pairs, with
     average ranks and no tie correction, the expected Spearman rho under random tie breaking
     (Nili et al. 2014). rsatoolbox recommends rho-a when a space predicts tied
     dissimilarities, as bag-of-words, tf-idf and the bag of attributes do; Spearman then
     divides by the ties' smaller rank variance and reads higher.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

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


def cosine_dissimilarities(A: Any, B: Any) -> tuple[np.ndarray, np.ndarray]:
    """The upper triangles (row by row) of the cosine-distance matrices 1 - cos of A and of B; a
    ValueError if either is constant (a rank correlation is then undefined)."""
    A, B = check_pair(A, B)
    ua, ub = unit_rows(A, "A").astype(np.float64), unit_rows(B, "B").astype(np.float64)
    iu = np.triu_indices(len(A), 1)
    da, db = (1 - ua @ ua.T)[iu], (1 - ub @ ub.T)[iu]
    for name, d in (("A", da), ("B", db)):
        if np.ptp(d) == 0:
            raise ValueError(f"every pair of sentences in {name} is equally similar (a constant space, or all "
                             "vectors parallel): the rank correlation RSA is undefined")
    return da, db


def rsa(A: Any, B: Any) -> float:
    """Spearman correlation between the upper triangles of the cosine-distance matrices."""
    return float(spearmanr(*cosine_dissimilarities(A, B)).statistic)


def rho_a(x: np.ndarray, y: np.ndarray) -> float:
    """rho-a of two vectors: 12 sum((r_x - mean)(r_y - mean)) / (N^3 - N), average ranks, no tie
    correction (rsatoolbox.rdm.compare_rho_a). Equals Spearman's rho when neither has ties."""
    rx, ry = rankdata(x), rankdata(y)
    n = len(rx)
    return float(12 * np.dot(rx - rx.mean(), ry - ry.mean()) / (n ** 3 - n))


def rsa_rho_a(A: Any, B: Any) -> float:
    """rho-a (:func:`rho_a`) between the upper triangles of the cosine-distance matrices: RSA
    as rsatoolbox recommends it when a space predicts tied dissimilarities."""
    return rho_a(*cosine_dissimilarities(A, B))
