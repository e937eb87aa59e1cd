"""The metrics against the field's own libraries, on fixed random data, with stated tolerances.

- precision@k against scikit-learn's brute-force cosine neighbours: exact (no ties in
  continuous random data);
- RSA (Spearman and rho-a) against rsatoolbox.rdm.compare: 1e-6 (rsatoolbox works in float64;
  the tolerance covers its different summation order);
- unbiased CKA against an independent U-centring (Székely & Rizzo 2014) formulation: 1e-12;
- Procrustes against scipy.spatial.procrustes on zero-padded input: 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
import rsatoolbox
from scipy.spatial import procrustes as scipy_procrustes
from sklearn.neighbors import NearestNeighbors

from alignnb.measure import metrics, procrustes, similarity

N = 120


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """Two related spaces of unequal width: B is A, widened, rotated and noised."""
    rng = np.random.default_rng(2026)
    A = rng.standard_normal((N, 24))
    mix = rng.standard_normal((24, 40))
    return A, A @ mix + 2.0 * rng.standard_normal((N, 40))


def _sklearn_overlaps(A: np.ndarray, B: np.ndarray, k: int) -> np.ndarray:
    """Per-sentence mutual k-NN overlap from scikit-learn: each point's k nearest others by cosine distance."""
    sets = []
    for X in (A, B):
        index = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(X)
        neighbours = index.kneighbors(X, return_distance=False)
        sets.append([set(row[row != i][:k]) for i, row in enumerate(neighbours)])
    return np.array([len(a & b) / k for a, b in zip(*sets)])


def _near_tie_at_k(X: np.ndarray, k: int) -> np.ndarray:
    """Rows whose k-th and (k+1)-th cosine similarities are within the tie tolerance: there the
    neighbour set is not defined by the data, and alignnb counts the tie fractionally."""
    u = X / np.linalg.norm(X, axis=1, keepdims=True)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    top = -np.sort(-sim, axis=1)
    return top[:, k - 1] - top[:, k] <= metrics.TIE_TOLERANCE


@pytest.mark.parametrize("k", [1, 5, 15, 40])
def test_precision_at_k_equals_scikit_learn(pair, k):
    """Exact on every sentence without a near-tie at the k-th place (ties are a convention, not a value)."""
    A, B = pair
    ours, theirs = metrics.per_sentence_precision(A, B, k), _sklearn_overlaps(A, B, k)
    clear = ~(_near_tie_at_k(A, k) | _near_tie_at_k(B, k))
    assert clear.sum() >= 0.9 * N
    np.testing.assert_array_equal(ours[clear], theirs[clear])
    if clear.all():
        assert metrics.precision_at_k(A, B, k) == theirs.mean()


def _rsatoolbox_rdm(X: np.ndarray) -> rsatoolbox.rdm.RDMs:
    u = X / np.linalg.norm(X, axis=1, keepdims=True)
    iu = np.triu_indices(len(X), 1)
    return rsatoolbox.rdm.RDMs((1 - u @ u.T)[iu][None, :], dissimilarity_measure="cosine")


def test_rsa_equals_rsatoolbox_spearman_and_rho_a(pair):
    A, B = pair
    ra, rb = _rsatoolbox_rdm(A), _rsatoolbox_rdm(B)
    assert similarity.rsa(A, B) == pytest.approx(rsatoolbox.rdm.compare(ra, rb, method="spearman")[0, 0], abs=1e-6)
    assert similarity.rsa_rho_a(A, B) == pytest.approx(rsatoolbox.rdm.compare(ra, rb, method="rho-a")[0, 0], abs=1e-6)
    # without ties, rho-a is Spearman's rho
    assert similarity.rsa_rho_a(A, B) == pytest.approx(similarity.rsa(A, B), abs=1e-9)


def test_rho_a_is_below_spearman_with_tied_dissimilarities_as_rsatoolbox_says():
    """A model with few distinct dissimilarities (a bag-of-words-like space): rho-a, as
    rsatoolbox computes it, is smaller than the tie-corrected Spearman."""
    rng = np.random.default_rng(3)
    tied = np.hstack([np.eye(4)[rng.integers(0, 4, N)], np.ones((N, 1))])  # 4 distinct rows: 2 distances
    B = tied + 0.5 * rng.standard_normal((N, 5))
    ra, rb = _rsatoolbox_rdm(tied), _rsatoolbox_rdm(B)
    rho_a = similarity.rsa_rho_a(tied, B)
    assert rho_a == pytest.approx(rsatoolbox.rdm.compare(ra, rb, method="rho-a")[0, 0], abs=1e-6)
    assert rho_a < similarity.rsa(tied, B) - 0.01


def _u_centred(D: np.ndarray) -> np.ndarray:
    """Székely & Rizzo's U-centring of a symmetric matrix (zero diagonal after centring)."""
    n = len(D)
    D = D - np.diag(np.diag(D))
    rows = D.sum(1, keepdims=True) / (n - 2)
    U = D - rows - rows.T + D.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(U, 0.0)
    return U


def _unbiased_hsic_u_centred(K: np.ndarray, L: np.ndarray) -> float:
    n = len(K)
    return float((_u_centred(K) * _u_centred(L)).sum() / (n * (n - 3)))


def test_unbiased_cka_equals_a_u_centring_formulation(pair):
    A, B = pair
    K, L = A @ A.T, B @ B.T
    expected = _unbiased_hsic_u_centred(K, L) / np.sqrt(_unbiased_hsic_u_centred(K, K) * _unbiased_hsic_u_centred(L, L))
    assert similarity.cka_unbiased(A, B) == pytest.approx(expected, abs=1e-12)


def test_procrustes_equals_scipy_on_zero_padded_input(pair):
    A, B = pair
    padded = procrustes.zero_pad(A, B)
    assert padded[0].shape == padded[1].shape == (N, 40)
    expected = scipy_procrustes(*padded)[2]
    assert procrustes.procrustes_disparity(A, B) == pytest.approx(expected, abs=1e-12)
    assert procrustes.procrustes_disparity(B, A) == pytest.approx(expected, abs=1e-12)  # symmetric
    fast = metrics.METRICS["procrustes_disparity"]
    assert fast.score(A, B) == pytest.approx(expected, abs=1e-12)  # the registry's principal-coordinate path
    same_width = B[:, :24]
    assert procrustes.procrustes_disparity(A, same_width) == pytest.approx(scipy_procrustes(A, same_width)[2], abs=1e-12)


def test_the_issue_s_fixed_random_pair_pca_against_zero_padding():
    """The numbers of issue 28: the PCA reduction, kept as an option, is not scipy's convention."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((200, 32)), rng.standard_normal((200, 48))
    assert procrustes.procrustes_disparity(A, B) == pytest.approx(0.8687, abs=5e-5)
    assert procrustes.procrustes_disparity(A, B, reduce="pca") == pytest.approx(0.8815, abs=5e-5)
    assert procrustes.procrustes_disparity(A, B) == pytest.approx(scipy_procrustes(*procrustes.zero_pad(A, B))[2])
    with pytest.raises(ValueError, match="reduce='pca'"):
        procrustes.procrustes_disparity(A, B, dim=10)
    with pytest.raises(ValueError, match="reduce must be one of"):
        procrustes.procrustes_disparity(A, B, reduce="truncate")


def test_procrustes_map_and_retrieval_agree_with_the_disparity(pair):
    A, B = pair
    mapped, Zb, s = procrustes.procrustes_map(A, B)
    assert ((mapped - Zb) ** 2).sum() == pytest.approx(procrustes.procrustes_disparity(A, B), abs=1e-10)
    variances = Zb.var(0)
    assert np.all(np.diff(variances) <= 1e-12)  # in B's principal axes, largest variance first
    fit = procrustes.procrustes(A, B, seed=0)
    assert fit.dim == 40 and fit.retrieval_top1 > 5 * fit.chance_top1  # related spaces: a map recovers sentences
