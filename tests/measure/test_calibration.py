"""alignnb.measure.calibration: chance correction, restricted nulls, calibration, hygiene, deconfounding, crossed CIs.

Small, seeded simulations (n <= 200 sentences, few permutations): the whole file runs in seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignnb.measure import calibration as cal
from alignnb.measure import preprocessing
from alignnb.measure import nulls
from alignnb.measure import metrics

# --------------------------------------------------------------------------------------
# R_NX
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k", [(40, 3), (100, 10), (150, 5)])
def test_rnx_is_zero_in_expectation_for_independent_spaces(n, k):
    rng = np.random.default_rng(n + k)
    draws = 30
    values = np.array([cal.rnx(metrics.precision_at_k(rng.normal(size=(n, 8)), rng.normal(size=(n, 8)), k), n, k)
                       for _ in range(draws)])
    se = values.std(ddof=1) / math.sqrt(draws)
    assert abs(values.mean()) < 4 * se + 1e-12, (values.mean(), se)
    # and the raw precision is not 0: R_NX removes the chance level k / (n - 1)
    assert metrics.chance_precision(n, k) > 0


def test_rnx_is_one_for_identical_neighbourhoods_and_handles_arrays():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(60, 6))
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for k in (1, 5, 20):
        assert cal.rnx(metrics.precision_at_k(A, 3 * A @ Q, k), 60, k) == 1.0
    n, k = 60, 5
    out = cal.rnx(np.array([1.0, k / (n - 1), 0.0]), n, k)
    np.testing.assert_allclose(out, [1.0, 0.0, -k / (n - 1 - k)], atol=1e-12)
    ks = np.array([1, 5, 10])
    np.testing.assert_allclose(cal.rnx(np.ones(3), n, ks), np.ones(3))


def test_rnx_rejects_bad_k():
    with pytest.raises(ValueError, match="n-1"):
        cal.rnx(0.5, 10, 9)
    with pytest.raises(ValueError, match="positive integer"):
        cal.rnx(0.5, 10, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cal.rnx(1.5, 10, 2)


def test_rnx_auc_weights_by_one_over_k():
    assert cal.rnx_auc([1, 2, 5, 10, 50], np.ones(5)) == pytest.approx(1.0)
    assert cal.rnx_auc([1, 2], [1.0, 0.0]) == pytest.approx(2 / 3)  # (1/1) / (1/1 + 1/2)
    assert cal.rnx_auc([3], [0.4]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="one R_NX value per k"):
        cal.rnx_auc([1, 2, 3], [1.0, 0.5])
    with pytest.raises(ValueError, match="repeated"):
        cal.rnx_auc([2, 2], [1.0, 0.5])


# --------------------------------------------------------------------------------------
# restricted permutations and nulls
# --------------------------------------------------------------------------------------


def test_restricted_permutation_stays_in_strata_and_mixes_within():
    strata = np.array(["a"] * 5 + ["solo"] + ["b"] * 7 + ["c"] * 3)
    rng = np.random.default_rng(1)
    sources = {i: set() for i in range(len(strata))}
    for _ in range(700):
        perm = nulls.restricted_permutation(strata, rng)
        assert sorted(perm.tolist()) == list(range(len(strata)))  # a permutation
        assert (strata[perm] == strata).all()  # nobody leaves their stratum
        for i, j in enumerate(perm):
            sources[i].add(int(j))
    for i, s in enumerate(strata):
        members = set(np.flatnonzero(strata == s).tolist())
        assert sources[i] == members  # every member of the stratum reaches every place in it
    assert sources[5] == {5}  # a stratum of one stays put


def test_single_stratum_null_is_the_global_null():
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(80, 5)), rng.normal(size=(80, 5))
    glob = nulls.permutation_null("precision", A, B, 5, strata=None, n_perm=30, seed=4)
    one = nulls.permutation_null("precision", A, B, 5, strata=np.zeros(80), n_perm=30, seed=4)
    np.testing.assert_array_equal(glob.null, one.null)
    assert not glob.stratified and one.stratified


def test_stratified_null_absorbs_structure_shared_only_through_strata():
    """A and B agree only on which stratum a sentence is in: the global shuffle calls that alignment,
    the stratified null does not."""
    rng = np.random.default_rng(3)
    strata = np.repeat(np.arange(4), 30)
    A = 3 * rng.normal(size=(4, 6))[strata] + rng.normal(size=(120, 6))
    B = 3 * rng.normal(size=(4, 6))[strata] + rng.normal(size=(120, 6))
    glob = nulls.permutation_null("precision", A, B, 10, n_perm=60, seed=0)
    strat = nulls.permutation_null("precision", A, B, 10, strata=strata, n_perm=60, seed=0)
    assert glob.observed == strat.observed == pytest.approx(metrics.precision_at_k(A, B, 10))
    assert glob.p_value == pytest.approx(1 / 61)  # "significant" against the global shuffle
    assert strat.null_mean > glob.null_q95
    assert abs(strat.observed - strat.null_mean) < 3 * strat.null.std()  # a typical draw of its null
    assert strat.p_value > 0.05


def test_metric_permutation_null_counts_the_right_tail():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(60, 4))
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    B = A @ Q + 0.1 * rng.normal(size=A.shape)
    disp = nulls.permutation_null("procrustes_disparity", A, B, n_perm=40, seed=0)  # lower is better
    assert disp.observed < disp.null_q05 and disp.p_value == pytest.approx(1 / 41)
    assert nulls.p_value(disp.observed, disp.null, greater_is_better=True) == pytest.approx(1.0)  # the wrong tail
    ck = nulls.permutation_null("cka", A, B, n_perm=40, seed=0, strata=np.repeat([0, 1], 30))
    assert ck.observed > ck.null_q95 and ck.p_value == pytest.approx(1 / 41) and ck.stratified


# --------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------


def test_calibrated_known_values():
    null = np.arange(1, 20) / 100  # K = 19
    # calibrated_similarity's tau: the ceil(0.95 * 20) = 19th smallest of null ∪ {0.5}, i.e. 0.19
    assert cal.calibrated(0.5, null) == pytest.approx((0.5 - 0.19) / (1 - 0.19))
    # the plain null quantile: 0.01 + 0.95 * 0.18
    tau = 0.01 + 0.95 * 0.18
    assert cal.calibrated(0.5, null, include_observed=False) == pytest.approx((0.5 - tau) / (1 - tau))
    assert cal.calibrated(0.1, null) == 0.0
    assert cal.calibrated(1.0, null) == 1.0
    assert cal.calibrated(0.5, null, smax=None) == pytest.approx(0.31)
    with pytest.raises(ValueError, match="alpha"):
        cal.calibrated(0.5, null, alpha=1.5)


def test_calibrate_precision_agrees_with_our_null_and_with_calibrated():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(100, 8))
    B = A + 1.5 * rng.normal(size=A.shape)
    res = cal.calibrate_precision(A, B, k=10, n_perm=40, seed=7)
    ref = nulls.permutation_null("precision", A, B, 10, n_perm=40, seed=7)  # same seed -> same permutations
    assert res.score == pytest.approx(metrics.precision_at_k(A, B, 10))
    np.testing.assert_allclose(res.null, ref.null)
    assert res.p_value == pytest.approx(ref.p_value, rel=1e-6)
    assert res.calibrated == pytest.approx(cal.calibrated(res.score, res.null), abs=1e-6)
    assert 0 < res.calibrated < 1 and res.tau < res.score
    # the package's own float32 results agree with the float64 values returned
    np.testing.assert_allclose(res.package, (res.calibrated, res.p_value, res.tau), atol=2e-6)


def test_calibrated_precision_is_zero_under_the_null_about_95_percent_of_the_time():
    rng = np.random.default_rng(6)
    draws, zeros, small_p = 100, 0, 0
    for i in range(draws):
        A, B = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
        res = cal.calibrate_precision(A, B, k=5, n_perm=19, seed=i)
        zeros += res.calibrated == 0.0
        small_p += res.p_value <= 0.05
    tol = 3 * math.sqrt(0.95 * 0.05 / draws)
    assert abs(zeros / draws - 0.95) <= tol, zeros / draws
    assert small_p / draws <= 0.05 + tol


def test_layer_calibration_pays_for_the_max_over_layers():
    rng = np.random.default_rng(7)
    A = rng.normal(size=(90, 6))
    B = A + 1.0 * rng.normal(size=A.shape)
    single = cal.calibrate_precision(A, B, k=8, n_perm=30, seed=3)
    others = [rng.normal(size=(90, 6)) for _ in range(3)]
    layers = cal.calibrate_precision_layers([A, others[0]], [B, others[1], others[2]], k=8, n_perm=30, seed=3)
    assert layers.layer_scores.shape == (2, 3)
    assert layers.score == pytest.approx(layers.layer_scores.max()) == pytest.approx(single.score)
    assert (layers.null >= single.null - 1e-12).all()  # the same permutations; a max over more pairs
    assert layers.null.mean() > single.null.mean()
    assert layers.tau >= single.tau - 1e-7
    assert layers.calibrated <= single.calibrated + 1e-7
    np.testing.assert_allclose(layers.package, (layers.calibrated, layers.p_value, layers.tau), atol=2e-6)
    # the SAME permutation for every layer: duplicating B adds nothing to the max
    dup = cal.calibrate_precision_layers(A, [B, B.copy()], k=8, n_perm=30, seed=3)
    np.testing.assert_allclose(dup.null, single.null)
    mean = cal.calibrate_precision_layers([A], [B, others[1]], k=8, n_perm=10, seed=3, agg="mean")
    assert mean.score == pytest.approx(mean.layer_scores.mean())
    with pytest.raises(ValueError, match="agg"):
        cal.calibrate_precision_layers(A, B, k=8, n_perm=5, agg="median")


# --------------------------------------------------------------------------------------
# hygiene
# --------------------------------------------------------------------------------------


def test_preprocess_invariances():
    rng = np.random.default_rng(8)
    X = rng.normal(loc=3.0, scale=[1.0, 5.0, 0.1, 2.0], size=(50, 4))
    X[:, 2] = 7.0  # a constant dimension
    assert preprocessing.preprocess(X, "raw") is X
    np.testing.assert_allclose(preprocessing.preprocess(X, "centred").mean(0), 0, atol=1e-12)
    Z = preprocessing.preprocess(X, "zscore")
    np.testing.assert_allclose(np.delete(Z.std(0), 2), 1, atol=1e-12)
    np.testing.assert_array_equal(Z[:, 2], 0)
    np.testing.assert_allclose(np.linalg.norm(preprocessing.preprocess(X, "clip95"), axis=1), 1, atol=1e-12)
    assert set(preprocessing.HYGIENES) == {"raw", "centred", "zscore", "clip95"}
    with pytest.raises(ValueError, match="hygiene"):
        preprocessing.preprocess(X, "whiten")


def test_clip95_follows_the_platonic_rep_rule():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    X = rng.normal(size=(40, 30))
    X[3, 7] = 80.0  # an outlier dimension
    # measure_alignment.py's default (exact=False): mean over rows of each row's 0.95 quantile of |x|
    c = float(torch.quantile(torch.from_numpy(np.abs(X)), 0.95, dim=1).mean())
    expected = torch.nn.functional.normalize(torch.from_numpy(X).clamp(-c, c), p=2, dim=-1).numpy()
    np.testing.assert_allclose(preprocessing.preprocess(X, "clip95"), expected, atol=1e-12)
    # exact=True: one sorted quantile of the whole tensor
    c_exact = np.sort(np.abs(X).ravel())[int(0.95 * X.size)]
    clipped = np.clip(X, -c_exact, c_exact)
    np.testing.assert_allclose(preprocessing.preprocess(X, "clip95", exact=True),
                               clipped / np.linalg.norm(clipped, axis=1, keepdims=True), atol=1e-12)
    assert preprocessing.preprocess(X, "clip95")[3, 7] < 0.5  # the outlier no longer dominates its row


# --------------------------------------------------------------------------------------
# deconfounding
# --------------------------------------------------------------------------------------


def test_deconfounded_similarity_removes_what_only_the_confounder_explains():
    rng = np.random.default_rng(3)
    n, d = 150, 10
    C = rng.normal(size=(n, d))
    A, B = C + 0.5 * rng.normal(size=(n, d)), C + 0.5 * rng.normal(size=(n, d))
    assert metrics.rsa(A, B) > 0.4 and metrics.cka(A, B) > 0.4  # they agree, through C
    assert abs(preprocessing.deconfounded_rsa(A, B, C)) < 0.1
    assert abs(preprocessing.deconfounded_cka(A, B, C)) < 0.1
    # structure shared beyond C survives
    S = rng.normal(size=(n, d))
    A2 = np.hstack([C, S]) + 0.5 * rng.normal(size=(n, 2 * d))
    B2 = np.hstack([C, S]) + 0.5 * rng.normal(size=(n, 2 * d))
    assert preprocessing.deconfounded_rsa(A2, B2, C) > 0.3
    assert preprocessing.deconfounded_cka(A2, B2, C) > 0.3


def test_deconfounded_similarity_of_a_space_with_itself_is_one():
    rng = np.random.default_rng(10)
    B, C = rng.normal(size=(80, 6)), rng.normal(size=(80, 4))
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert preprocessing.deconfounded_rsa(B, B, C) == pytest.approx(1.0)
    assert preprocessing.deconfounded_cka(B, 2 * B @ Q, C) == pytest.approx(1.0)
    assert preprocessing.deconfounded_cka(B, B, C, psd=True) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="confounder C has"):
        preprocessing.deconfounded_rsa(B, B, C[:50])


# --------------------------------------------------------------------------------------
# crossed-design intervals
# --------------------------------------------------------------------------------------


def _crossed(rng, R=12, C=12):
    colour, obj = np.repeat(np.arange(R), C), np.tile(np.arange(C), R)
    y = rng.normal(size=R)[colour] + rng.normal(size=C)[obj] + rng.normal(size=R * C)
    return y, colour, obj


def test_attribute_intervals_cover_a_crossed_design_where_an_iid_bootstrap_does_not():
    """score = colour effect + object effect + noise, effects redrawn per simulation; true mean 0."""
    rng = np.random.default_rng(11)
    sims, boot, jack, naive = 200, 0, 0, 0
    for s in range(sims):
        y, colour, obj = _crossed(rng)
        factors = {"colour": colour, "object": obj}
        b = nulls.attribute_bootstrap_ci(y, factors, n_boot=300, seed=s)
        j = nulls.attribute_jackknife_ci(y, factors)
        iid = y[rng.integers(0, len(y), size=(300, len(y)))].mean(1)
        lo, hi = np.quantile(iid, [0.025, 0.975])
        boot += b.low <= 0 <= b.high
        jack += j.low <= 0 <= j.high
        naive += lo <= 0 <= hi
    # nominal 0.95; 12 levels per factor leave the interval slightly short (about 0.93-0.94)
    assert 0.88 <= boot / sims <= 0.99, boot / sims
    assert 0.88 <= jack / sims <= 0.99, jack / sims
    assert naive / sims < 0.7, naive / sims


def test_attribute_bootstrap_basics():
    rng = np.random.default_rng(12)
    y, colour, obj = _crossed(rng, 6, 4)
    res = nulls.attribute_bootstrap_ci(y, {"colour": colour, "object": obj}, n_boot=200, seed=0)
    assert res.low < res.estimate < res.high and res.estimate == pytest.approx(y.mean())
    assert res.n_levels == {"colour": 6, "object": 4}
    again = nulls.attribute_bootstrap_ci(y, {"colour": colour, "object": obj}, n_boot=200, seed=0)
    np.testing.assert_array_equal(res.samples, again.samples)
    expo = nulls.attribute_bootstrap_ci(y, {"colour": colour}, n_boot=200, seed=0, weights="exponential")
    assert expo.low < expo.estimate < expo.high
    with pytest.raises(ValueError, match="one value per sentence"):
        nulls.attribute_bootstrap_ci(y, {"colour": colour[:-1]})
    with pytest.raises(ValueError, match="non-empty dict"):
        nulls.attribute_bootstrap_ci(y, {})


def test_missing_attribute_values_form_their_own_level():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    obj = ["ball", None, "none", "key", float("nan"), "ball"]
    res = nulls.attribute_jackknife_ci(y, {"object": obj})
    assert res.n_levels == {"object": 3}  # ball, key, <none>
    # leave-one-level-out means: without ball (2,3,4,5), without key (1,2,3,5,6), without <none> (1,4,6)
    theta = np.array([3.5, 17 / 5, 11 / 3])
    expected = math.sqrt(2 / 3 * ((theta - theta.mean()) ** 2).sum())
    assert res.se == pytest.approx(expected)


def test_jackknife_with_one_sentence_per_level_is_the_ordinary_jackknife():
    rng = np.random.default_rng(13)
    y = rng.normal(size=25)
    res = nulls.attribute_jackknife_ci(y, {"id": np.arange(25)})
    assert res.se == pytest.approx(y.std(ddof=1) / math.sqrt(25))
    assert res.high - res.estimate == pytest.approx(1.959964 * res.se, rel=1e-5)


def test_level_balanced_mean():
    assert nulls.level_balanced_mean([1, 1, 1, 4], ["a", "a", "a", "b"]) == pytest.approx(2.5)
    assert nulls.level_balanced_mean([1, 2, 3], ["x", "x", "x"]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="one label per sentence"):
        nulls.level_balanced_mean([1, 2, 3], ["a", "b"])
