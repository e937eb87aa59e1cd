"""The tests over seeds: exact sign flips, Holm, block permutations, the hierarchical bootstrap,
and E1/E2 on planted effects (detected at the nominal rate; identical spaces are not)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from alignnb.extract.embeddings import Embeddings
from alignnb.measure import effects, inference
from alignnb.measure.intervals import attribute_bootstrap_ci, pigeonhole_weights


# ---------------------------------------------------------------- sign flips


def test_sign_flip_exact_p_on_known_patterns():
    # all five positive: only the identity pattern (and its mirror, two-sided) is as extreme
    assert inference.sign_flip_test([1, 2, 3, 4, 5], "greater") == pytest.approx(1 / 32)
    assert inference.sign_flip_test([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert inference.sign_flip_test([-1, -2, -3, -4, -5], "less") == pytest.approx(1 / 32)
    # equal magnitudes, four up and one down: mean 0.6; patterns with >= 4 of 5 positive: 1 + 5 = 6
    assert inference.sign_flip_test([1, 1, 1, 1, -1], "greater") == pytest.approx(6 / 32)
    assert inference.sign_flip_test([1, 1, 1, 1, -1]) == pytest.approx(12 / 32)
    # a zero difference: every pattern of the others is matched twice
    assert inference.sign_flip_test([0, 1, 1], "greater") == pytest.approx(2 / 8)
    assert inference.sign_flip_test([0.0, 0.0]) == 1.0


def test_sign_flip_refuses_bad_input():
    with pytest.raises(ValueError, match="alternative"):
        inference.sign_flip_test([1, 2], "bigger")
    with pytest.raises(ValueError, match="finite"):
        inference.sign_flip_test([1, np.nan])
    with pytest.raises(ValueError, match="at most"):
        inference.sign_flip_test(np.ones(17))


# ---------------------------------------------------------------- Holm


def test_holm_on_a_known_vector():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, max(0.04, 0.06)=0.06
    assert inference.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert inference.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = inference.holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and out[[0, 2]] == pytest.approx([0.02, 0.02])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inference.holm([1.5])


# ---------------------------------------------------------------- block permutations


def test_block_flips_stay_within_blocks():
    # d is +1 in block a and -1 in block b: any within-block flip gives a statistic in {-1, 0, 1} * 0.5 / ...
    blocks = np.array(["a"] * 3 + ["b"] * 5)
    d = np.where(blocks == "a", 1.0, -1.0)[None, :]
    _, null = inference.block_sign_flip_test(d, blocks, n_perm=2000)
    # a flip of whole blocks gives (±3 ± 5) / 8: only these four values are possible
    assert set(np.round(null * 8).astype(int)) <= {8, 2, -2, -8}
    assert set(np.round(null * 8).astype(int)) == {8, 2, -2, -8}
    # a sentence-level flip would give other values (e.g. 6 / 8): none appear


def test_block_flip_p_detects_a_planted_shift_and_not_noise():
    rng = np.random.default_rng(0)
    blocks = np.repeat(np.arange(40), 10)
    noise = rng.normal(0, 1, (3, 400)) + rng.normal(0, 1, 40)[blocks]  # block-correlated noise
    p_null, _ = inference.block_sign_flip_test(noise, blocks, n_perm=999)
    p_shift, _ = inference.block_sign_flip_test(noise + 1.0, blocks, n_perm=999)
    assert p_shift == pytest.approx(1 / 1000)
    assert p_null > 0.01


def test_block_flip_false_positive_rate_is_nominal():
    """Under H0 (symmetric block effects) the test rejects at about 5%."""
    rng = np.random.default_rng(1)
    blocks = np.repeat(np.arange(30), 6)
    trials, rejections = 300, 0
    for t in range(trials):
        d = rng.normal(0, 1, 30)[blocks][None, :] + rng.normal(0, 0.5, (2, 180))
        p, _ = inference.block_sign_flip_test(d, blocks, n_perm=199, seed=t)
        rejections += p < 0.05
    lo, hi = binom.ppf([0.001, 0.999], trials, 0.05)
    assert lo <= rejections <= hi


# ---------------------------------------------------------------- bootstrap


def test_pigeonhole_weights_are_products_of_level_weights():
    colour = np.array(list("rrggbb"))
    obj = np.array(list("xyxyxy"))
    W = pigeonhole_weights({"c": colour, "o": obj}, 50, np.random.default_rng(0))
    assert W.shape == (50, 6) and (W.sum(1) > 0).all()
    # sentences sharing a colour share its weight: W[r0]/W[r1] == W[r2]/W[r3] wherever defined
    for w in W:
        if w[0] and w[1]:
            assert w[2] * w[1] == pytest.approx(w[3] * w[0])


def test_attribute_interval_unchanged_by_the_shared_weights():
    """The refactor into pigeonhole_weights keeps the interval's draws (same stream, same order)."""
    rng = np.random.default_rng(4)
    y = rng.random(60)
    f = {"color": np.repeat(np.arange(6), 10), "object": np.tile(np.arange(10), 6)}
    ci = attribute_bootstrap_ci(y, f, n_boot=500, seed=7)
    W = pigeonhole_weights(f, 500, np.random.default_rng(7))
    assert ci.samples == pytest.approx((W @ y) / W.sum(1))


def test_hierarchical_bootstrap_covers_the_seed_mean_and_widens_with_seed_spread():
    rng = np.random.default_rng(2)
    f = {"color": np.repeat(np.arange(7), 12), "object": np.tile(np.arange(12), 7)}
    base = rng.normal(0, 0.05, 84)
    tight = np.stack([base + 0.10 + rng.normal(0, 0.01) for _ in range(5)])
    loose = np.stack([base + 0.10 + rng.normal(0, 0.08) for _ in range(5)])
    dt = inference.hierarchical_bootstrap(tight, f, 2000, seed=0)
    dl = inference.hierarchical_bootstrap(loose, f, 2000, seed=0)
    lo, hi = inference.percentile_interval(dt)
    assert lo < tight.mean() < hi
    assert np.std(dl) > 2 * np.std(dt)
    assert inference.bootstrap_p(dt) == pytest.approx(1 / 2000)  # every draw above 0: p at its floor
    assert inference.bootstrap_p(np.array([-1.0, 1.0])) == 1.0


def test_format_p_and_null_z():
    assert inference.format_p(1 / 1001, 1000) == "p <= 1/1001"
    assert inference.format_p(0.0312, 1000) == "p = 0.031"
    null = np.random.default_rng(0).normal(0.1, 0.01, 5000)
    assert inference.null_z(0.15, null) == pytest.approx(5.0, rel=0.05)


# ---------------------------------------------------------------- E1 and E2 on planted spaces


def _design(n_colours=6, n_objects=8, reps=3):
    rows = [(f"c{c}", f"o{o}", r) for c in range(n_colours) for o in range(n_objects) for r in range(reps)]
    sentences = [f"pick up the {c} {o} {r}" for c, o, r in rows]
    attrs = pd.DataFrame({"color": [r[0] for r in rows], "object": [r[1] for r in rows]}, index=sentences)
    return sentences, attrs


def _space(name, sentences, X):
    return Embeddings(name, sentences, np.asarray(X, np.float32), {"family": "control"})


def _planted(rng, sentences, signal, trained_signal, n_seeds=5, dims=16):
    """A 'language model' L; each seed's trained agent mixes L (weight trained_signal) with noise,
    its untrained twin mixes L with weight signal."""
    n = len(sentences)
    L = rng.normal(size=(n, dims))
    variants = {}
    for s in range(n_seeds):
        variants[("transformer", s, "embedding")] = _space(f"t{s}", sentences,
                                                            trained_signal * L + rng.normal(size=(n, dims)))
        variants[("transformer-untrained", s, "embedding")] = _space(f"u{s}", sentences,
                                                                      signal * L + rng.normal(size=(n, dims)))
    refs = {"lm": _space("lm", sentences, L), "bag-of-words": _space("bag-of-words", sentences, rng.normal(size=(n, dims)))}
    return variants, refs


def test_e1_detects_a_planted_training_effect():
    sentences, attrs = _design()
    variants, refs = _planted(np.random.default_rng(0), sentences, signal=0.3, trained_signal=1.5)
    rng = np.random.default_rng(9)
    inits = {("transformer-init", 100 + i, "embedding"): _space(f"i{i}", sentences,
                                                               0.3 * refs["lm"].vectors + rng.normal(size=(len(sentences), 16)))
             for i in range(20)}
    out = effects.seed_tests(variants, refs, ["lm"], attrs, k=10, n_boot=500, n_perm=999, inits=inits)
    row = out.training_effect.query("model == 'lm' and metric == 'precision@10'").iloc[0]
    assert row.estimate > 0.1 and row.ci_low > 0 and row.seeds_up == 5
    # the inits are drawn like the twins: the twins sit inside their spread, the trained agents above it
    assert row.inits == 20 and row.init_low <= row.untrained <= row.init_high < row.trained
    assert row.inits_below_trained == 1.0
    assert row.p_sign_flip == pytest.approx(2 / 32)
    assert row.verdict == "higher after training"
    # the whole-space metrics are exploratory rows
    assert set(out.training_effect["metric"]) >= {"unbiased linear CKA", "Procrustes disparity"}
    assert (out.training_effect.query("metric != 'precision@10'")["verdict"] == "exploratory").all()


def test_e1_false_positive_rate_on_identical_recipes():
    """Trained and untrained drawn from the same distribution: the registered test rejects at about 5% or less."""
    sentences, attrs = _design(5, 6, 2)
    trials, rejections = 60, 0
    for t in range(trials):
        variants, refs = _planted(np.random.default_rng(100 + t), sentences, signal=0.8, trained_signal=0.8)
        out = effects.seed_tests(variants, refs, ["lm"], attrs, k=5, n_boot=300, n_perm=199, seed=t)
        rejections += bool((out.training_effect.query("metric == 'precision@5'")["p"] < 0.05).any())
    assert rejections <= binom.ppf(0.999, trials, 0.05)


def test_e2_contrasts_a_decoder_with_a_control_and_the_twin():
    sentences, attrs = _design()
    rng = np.random.default_rng(5)
    variants, refs = _planted(rng, sentences, signal=0.3, trained_signal=1.5)
    refs = {"smollm2-135m": refs["lm"], "bag-of-words": refs["bag-of-words"]}
    out = effects.seed_tests(variants, refs, ["smollm2-135m"], attrs, k=10, n_boot=300, n_perm=999)
    e2 = out.model_contrasts.set_index("versus")
    assert set(e2.index) == {"bag-of-words", effects.TWIN}
    assert e2.loc["bag-of-words", "estimate"] > 0.1
    assert e2.loc["bag-of-words", "verdict"] == "smollm2-135m higher"
    assert e2.loc["bag-of-words", "p"] == pytest.approx(1 / 1000)


def test_behaviour_probe_resampling_reweighs_whole_probe_blocks():
    X = np.arange(12, dtype=float).reshape(2, 6) + 1  # 2 sentences, 3 probes x 2 actions
    out = effects.reweigh_probes(X, np.array([0, 1, 4]))
    assert out[:, :2] == pytest.approx(0)
    assert out[:, 2:4] == pytest.approx(X[:, 2:4])
    assert out[:, 4:] == pytest.approx(2 * X[:, 4:])
    counts = effects.probe_weights(np.array(["a", "a", "b", "b", "b"]), 100, np.random.default_rng(0))
    assert (counts[:, :2].sum(1) == 2).all() and (counts[:, 2:].sum(1) == 3).all()


def test_deconfounded_nulls_relabel_the_residuals():
    """The fast nulls equal the scores recomputed on permuted residuals, and a planted shared
    residual is detected while an unrelated space is not."""
    from alignnb.measure import analysis, preprocessing

    rng = np.random.default_rng(0)
    C = rng.normal(size=(60, 5))
    shared = rng.normal(size=(60, 4))
    A = np.hstack([C, shared]) + 0.1 * rng.normal(size=(60, 9))
    B = np.hstack([C, shared @ rng.normal(size=(4, 4))]) + 0.1 * rng.normal(size=(60, 9))
    U = rng.normal(size=(60, 9))  # shares nothing with A beyond chance
    planted = analysis.deconfounded_nulls(A, B, C, n_perm=99)
    unrelated = analysis.deconfounded_nulls(A, U, C, n_perm=99)
    assert planted["cka_deconfounded_p"] == pytest.approx(0.01) and planted["rsa_deconfounded_p"] == pytest.approx(0.01)
    assert unrelated["cka_deconfounded_p"] > 0.05 and unrelated["rsa_deconfounded_p"] > 0.05
    assert unrelated["cka_deconfounded_null_low"] < preprocessing.deconfounded_cka(A, U, C) < 1
    # the observed statistics of the fast path are the definitions
    RA, RB = preprocessing.cka_residuals(A, B, C)
    assert float((RA * RB).sum() / np.linalg.norm(RA) / np.linalg.norm(RB)) == pytest.approx(
        preprocessing.deconfounded_cka(A, B, C))
    ra, rb = preprocessing.rsa_residual_ranks(A, B, C)
    iu = np.triu_indices(60, 1)
    assert np.corrcoef(ra[iu], rb[iu])[0, 1] == pytest.approx(preprocessing.deconfounded_rsa(A, B, C))
