"""Stage 4 metrics against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import procrustes as scipy_procrustes
from scipy.stats import ortho_group

from alignnb.measure import metrics
from alignnb.measure import nulls


def brute_precision(A, B, k):
    """The definition, literally: cosine, self excluded, dense masks (platonic-rep mutual_knn)."""
    def knn(X):
        U = X / np.linalg.norm(X, axis=1, keepdims=True)
        S = U @ U.T
        np.fill_diagonal(S, -np.inf)
        return np.argsort(-S, axis=1, kind="stable")[:, :k]

    n = len(A)
    ma, mb = np.zeros((n, n)), np.zeros((n, n))
    rows = np.arange(n)[:, None]
    ma[rows, knn(A)] = 1
    mb[rows, knn(B)] = 1
    return float(((ma * mb).sum(1) / k).mean())


@pytest.mark.parametrize("n,k,da,db", [(30, 1, 5, 7), (60, 5, 16, 3), (200, 15, 32, 64), (101, 30, 8, 8)])
def test_precision_equals_brute_force(n, k, da, db):
    rng = np.random.default_rng(n + k)
    A = rng.normal(size=(n, da))
    B = A[:, :min(da, db)] @ rng.normal(size=(min(da, db), db)) + 0.5 * rng.normal(size=(n, db))
    assert metrics.precision_at_k(A, B, k) == pytest.approx(brute_precision(A, B, k), abs=1e-12)
    assert metrics.precision_at_k(A, B, k, chunk=7) == metrics.precision_at_k(A, B, k)


def test_identical_and_invariances():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(150, 20))
    Q = ortho_group.rvs(20, random_state=1)
    assert metrics.precision_at_k(A, A, 10) == 1.0
    assert metrics.precision_at_k(A, 3.5 * A @ Q, 10) == 1.0
    assert metrics.precision_at_k(A, A * rng.uniform(0.1, 10, size=(150, 1)), 10) == 1.0  # cosine: per-row scale
    assert metrics.procrustes_disparity(A, A) == pytest.approx(0, abs=1e-12)
    assert metrics.procrustes_disparity(A, 2 * A @ Q + 1.0) == pytest.approx(0, abs=1e-10)
    assert metrics.cka(A, 7 * A @ Q) == pytest.approx(1, abs=1e-10)
    assert metrics.cka(A, A @ Q, unbiased=True) == pytest.approx(1, abs=1e-10)
    assert metrics.rsa(A, 2 * A @ Q) == pytest.approx(1, abs=1e-10)


def test_random_spaces_give_chance_precision():
    rng = np.random.default_rng(3)
    n, k = 2000, 15
    vals = [metrics.precision_at_k(rng.normal(size=(n, 32)), rng.normal(size=(n, 32)), k) for _ in range(3)]
    chance = metrics.chance_precision(n, k)
    assert np.mean(vals) == pytest.approx(chance, rel=0.15)


def test_ties_are_broken_by_lower_index():
    X = np.array([[1.0, 0], [1, 0], [1, 0], [0, 1], [1, 0]])
    # rows 0, 1, 2, 4 are identical: each one's neighbours are the others, lowest index first
    assert metrics.knn_indices(X, 3).tolist()[0] == [1, 2, 4]
    assert metrics.knn_indices(X, 2).tolist()[4] == [0, 1]
    onehot = np.eye(6)[[0, 0, 1, 1, 2, 2, 3, 3, 4, 5]]
    assert metrics.precision_at_k(onehot, onehot + 0, 4) == 1.0
    np.testing.assert_array_equal(metrics.knn_indices(onehot, 4)[:, :2], metrics.knn_indices(onehot, 2))


def test_procrustes_matches_scipy_and_recovers_a_rotation():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(120, 10))
    Q = ortho_group.rvs(10, random_state=2)
    B = 0.3 * A @ Q + 0.05 * rng.normal(size=A.shape)
    ours = metrics.procrustes_disparity(A, B)
    assert ours == pytest.approx(scipy_procrustes(A, B)[2], rel=1e-9)
    assert ours == pytest.approx(scipy_procrustes(B, A)[2], rel=1e-9)
    res = metrics.procrustes(A, B, n_splits=4, seed=0)
    assert res.disparity == pytest.approx(ours)
    assert res.retrieval_top1 == 1.0 and res.retrieval_top5 == 1.0
    assert res.chance_top1 == pytest.approx(1 / 30)
    # unrelated spaces: retrieval near chance, disparity large
    C = rng.normal(size=(120, 10))
    bad = metrics.procrustes(A, C, n_splits=4, seed=0)
    assert bad.retrieval_top1 < 0.2 and bad.disparity > 0.5
    # different dimensions go through PCA to the common dimension
    D = np.hstack([A @ Q, np.zeros((120, 6))])
    assert metrics.procrustes_disparity(A, D) == pytest.approx(0, abs=1e-9)
    # the public map: A carried onto B's principal axes; its residual is the disparity
    mapped, Zb, s = metrics.procrustes_map(A, B)
    assert mapped.shape == Zb.shape == (120, 10)
    assert ((mapped - Zb) ** 2).sum() == pytest.approx(ours, rel=1e-9) and 1 - s**2 == pytest.approx(ours, rel=1e-9)


def test_cka_values():
    rng = np.random.default_rng(7)
    A, C = rng.normal(size=(300, 20)), rng.normal(size=(300, 20))
    assert 0 < metrics.cka(A, C) < 0.2
    assert abs(metrics.cka(A, C, unbiased=True)) < 0.05
    assert metrics.cka(A, C) == pytest.approx(metrics.cka(C, A))


def test_permutation_null_and_intervals():
    rng = np.random.default_rng(11)
    A = rng.normal(size=(200, 16))
    B = A + 0.3 * rng.normal(size=A.shape)
    fast = nulls.permutation_null("precision", A, B, k=10, n_perm=50, seed=1)
    slow = nulls.permutation_null(recomputing_precision(10), A, B, k=10, n_perm=50, seed=1)
    np.testing.assert_allclose(fast.null, slow.null, atol=1e-12)  # relabelling == recomputing
    assert fast.p_value == pytest.approx(1 / 51)
    assert fast.null_mean == pytest.approx(metrics.chance_precision(200, 10), rel=0.3)
    per = metrics.per_sentence_precision(A, B, 10)
    assert per.mean() == pytest.approx(fast.observed)
    ci = nulls.query_interval(per, n_boot=400, seed=0)
    assert ci.estimate == pytest.approx(fast.observed)
    assert ci.low < ci.estimate < ci.high  # the interval is about the same statistic as the estimate
    se = per.std(ddof=1) / np.sqrt(len(per))  # normal-theory width for a mean of 200 scores
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * se, rel=0.25)
    sub = nulls.subsample_interval(metrics.cka, A, B, n_boot=30, seed=0)  # no per-sentence score: subsampling
    assert sub.low <= sub.high and sub.estimate == pytest.approx(metrics.cka(A, B))
    C = rng.normal(size=(200, 16))
    assert nulls.permutation_null("cka", A, C, n_perm=30, seed=0).p_value > 0.05
    # lower is better for the disparity: a related pair has a small p-value
    assert nulls.permutation_null("procrustes_disparity", A, B, n_perm=30, seed=0).p_value == pytest.approx(1 / 31)
    with pytest.raises(ValueError, match="fraction"):
        nulls.subsample_interval(metrics.cka, A, B, fraction=0)


def recomputing_precision(k: int) -> metrics.Metric:
    """precision@k as a metric that recomputes neighbours for every permutation (the slow reference)."""
    return metrics.Metric("slow precision", "p@{k}", lambda X, _: X, lambda a, b: metrics.precision_at_k(a, b, k),
                          lambda X, perm: X[perm], uses_k=True)


def test_metric_registry():
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(40, 6)), rng.normal(size=(40, 5))
    assert set(metrics.METRICS) == {"precision", "cka", "cka_unbiased", "rsa", "rsa_rho_a", "procrustes_disparity"}
    assert metrics.get_metric("precision").score(A, B, 5) == metrics.precision_at_k(A, B, 5)
    assert metrics.get_metric("cka").score(A, B) == metrics.cka(A, B)
    # the fast forms used by permutation nulls equal the plain functions
    assert metrics.get_metric("cka_unbiased").score(A, B) == pytest.approx(metrics.cka(A, B, unbiased=True), rel=1e-9)
    assert metrics.get_metric("procrustes_disparity").score(A, B) == pytest.approx(metrics.procrustes_disparity(A, B),
                                                                                    rel=1e-9)
    C = A @ ortho_group.rvs(6, random_state=0)  # equal dimensions: no reduction
    assert metrics.get_metric("procrustes_disparity").score(A, C) == pytest.approx(0, abs=1e-9)
    assert metrics.get_metric("precision").display(7) == "precision@7"
    for m in metrics.METRICS.values():  # a space against itself scores the registered identity value
        assert m.score(A, A, 5) == pytest.approx(m.identical, abs=1e-9)
    with pytest.raises(ValueError, match="metric must be one of"):
        metrics.get_metric("cosine")


def test_bad_input_is_explained():
    A = np.zeros((10, 4)) + np.arange(4)
    A[:, 0] = np.arange(10)
    with pytest.raises(ValueError, match="smaller than the number of sentences"):
        metrics.precision_at_k(A, A, 10)
    with pytest.raises(ValueError, match="same sentences"):
        metrics.precision_at_k(A, A[:9], 3)
    bad = A.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.cka(A, bad)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.precision_at_k(bad, A, 3)
    with pytest.raises(ValueError, match="2-D"):
        metrics.rsa(A[0], A[0])
    with pytest.raises(ValueError, match="positive integer"):
        metrics.precision_at_k(A, A, 0)
    z = A.copy()
    z[3] = 0
    with pytest.raises(ValueError, match="zero vector"):
        metrics.precision_at_k(z, A, 3)


def _discrete_and_continuous(n=240, seed=0):
    """A tie-heavy space (one-hot attributes, like the bag-of-attributes control) and a noisy
    continuous space that depends on it."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, [3, 4, 5], size=(n, 3))
    bag = np.hstack([np.eye(m)[codes[:, i]] for i, m in enumerate((3, 4, 5))])
    cont = bag @ rng.normal(size=(12, 6)) + 0.6 * rng.normal(size=(n, 6))
    return bag, cont


def test_membership_without_ties_is_the_knn_indicator():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(90, 7))
    m = metrics.knn_membership(A, 6).toarray()
    ref = np.zeros((90, 90))
    ref[np.arange(90)[:, None], metrics.knn_indices(A, 6)] = 1
    np.testing.assert_array_equal(m, ref)
    np.testing.assert_array_equal(metrics.knn_membership(A, 6, ties="index").toarray(), ref)


def test_fractional_ties_are_the_expectation_over_random_tie_breaks():
    bag, cont = _discrete_and_continuous()
    n, k = len(bag), 10
    m = metrics.knn_membership(bag, k)
    np.testing.assert_allclose(np.asarray(m.sum(1)).ravel(), k)  # k neighbours' worth per row
    assert (m.data < 1).any()  # the one-hot space does tie
    fractional = metrics.precision_at_k(bag, cont, k)
    # the index rule picks one arbitrary tie-break; over random sentence orders its mean is the expectation
    orders = [np.random.default_rng(r).permutation(n) for r in range(300)]
    by_index = np.array([metrics.precision_at_k(bag[p], cont[p], k, ties="index") for p in orders])
    assert fractional == pytest.approx(by_index.mean(), abs=4 * by_index.std() / np.sqrt(len(by_index)))
    assert by_index.std() > 0  # the index rule does depend on the order of the sentences
    # the fractional value does not
    for p in orders[:5]:
        assert metrics.precision_at_k(bag[p], cont[p], k) == pytest.approx(fractional, abs=1e-12)
    # identical tied spaces agree fully; the permutation null still relabels exactly
    assert metrics.precision_at_k(bag, bag + 0, k) == pytest.approx(1.0)
    fast = nulls.permutation_null("precision", bag, cont, k=k, n_perm=20, seed=3)
    slow = nulls.permutation_null(recomputing_precision(k), bag, cont, k=k, n_perm=20, seed=3)
    np.testing.assert_allclose(fast.null, slow.null, atol=1e-12)
    with pytest.raises(ValueError, match="ties must be one of"):
        metrics.precision_at_k(bag, cont, k, ties="random")


def test_cosine_blocks_equal_unit_rows_within_float32_rounding():
    """Rows are normalised on the fly, block by block: the same similarities as a unit-row copy."""
    rng = np.random.default_rng(3)
    for X in (rng.normal(size=(300, 40)).astype(np.float32), rng.normal(size=(300, 40))):
        U = X / np.linalg.norm(X, axis=1, keepdims=True)
        full = (U @ U.T).astype(np.float32)
        np.fill_diagonal(full, -np.inf)
        blocks = np.concatenate([sim.numpy() for _, _, sim in metrics.cosine_blocks(X, chunk=64)])
        assert blocks.dtype == np.float32 and blocks.shape == (300, 300)
        assert np.array_equal(np.isinf(blocks), np.isinf(full))
        finite = np.isfinite(full)
        assert np.abs(blocks[finite] - full[finite]).max() < 1e-6
    with pytest.raises(ValueError, match="zero vector"):
        next(metrics.cosine_blocks(np.vstack([X, np.zeros((1, 40))])))


def test_precision_is_scale_free_up_to_the_largest_floats():
    """Rows scaled by 1e20 (float32) or 1e200 (float64) have the same neighbours: no overflow."""
    rng = np.random.default_rng(4)
    A = rng.normal(size=(200, 16)).astype(np.float32)
    B = A + 0.5 * rng.normal(size=A.shape).astype(np.float32)
    base = metrics.precision_at_k(A, B, 10)
    # the same up to a near-tie or two at float32 rounding (one neighbour of one sentence is 0.0005)
    assert metrics.precision_at_k(A * np.float32(1e20), B, 10) == pytest.approx(base, abs=1e-3)
    big = A.astype(np.float64) * 1e200
    assert metrics.precision_at_k(big, B.astype(np.float64), 10) == pytest.approx(base, abs=1e-3)
    assert metrics.precision_at_k(A, A * np.float32(1e-30), 10) == 1.0


def test_the_fast_relabelled_overlap_equals_relabelling_the_membership():
    """The permutation engine's fast path for precision@k gives the relabelled sparse matrix's score,
    with and without tied neighbours."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(80, 6))
    for B in (rng.normal(size=(80, 5)), rng.integers(0, 2, size=(80, 4)).astype(float) + 0.01):  # ties in the 2nd
        ma, mb = metrics.knn_membership(A, 7), metrics.knn_membership(B, 7)
        fast = metrics.relabelled_overlap(ma, mb)
        for _ in range(20):
            perm = rng.permutation(80)
            slow = metrics.overlap_from_membership(ma, metrics.relabel_membership(mb, perm)).mean()
            assert fast(perm) == pytest.approx(slow, abs=1e-12)
        assert fast(np.arange(80)) == pytest.approx(metrics.precision_at_k(A, B, 7), abs=1e-12)


def test_overlap_with_a_dense_membership_equals_the_sparse_one():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(50, 4)), rng.integers(0, 2, size=(50, 3)).astype(float) + 0.01
    ma, mb = metrics.knn_membership(A, 6), metrics.knn_membership(B, 6)
    for x, y in ((ma, mb), (mb, ma)):
        assert metrics.overlap_with_dense(x, y.toarray()) == pytest.approx(metrics.overlap_from_membership(x, y))
