"""Stage 4 analysis tables and the stage 5 explorer, on planted structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alignnb.measure import analysis
from alignnb.measure import metrics
from alignnb.measure import sensitivity
from alignnb.extract.embeddings import Embeddings
from alignnb.collect.instructions import SentenceSet


@pytest.fixture(scope="module")
def planted():
    """An 'agent', a rotated noisy copy (a 'language model'), and an unrelated control."""
    rng = np.random.default_rng(0)
    sentences = [f"go to the {c} {o}" for c in ("red", "green", "blue", "purple", "yellow", "grey")
                 for o in ("ball", "box", "key")]
    sentences += [f"pick up a {c} {o}" for c in ("red", "green", "blue", "purple", "yellow", "grey")
                  for o in ("ball", "box", "key")]
    levels = ["BabyAI-GoToLocal-v0"] * 18 + ["BabyAI-PickupLoc-v0"] * 18
    sset = SentenceSet(sentences, levels)
    attrs = sset.attributes
    onehot = pd.get_dummies(attrs[["verb", "color", "object"]]).to_numpy(float)
    agent = onehot @ rng.normal(size=(onehot.shape[1], 24)) + 0.3 * rng.normal(size=(36, 24))
    q, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    lm = 2 * agent @ q + 0.2 * rng.normal(size=(36, 24))
    spaces = {"agent": Embeddings("agent", sentences, agent.astype(np.float32)),
              "smollm2-135m": Embeddings("smollm2-135m", sentences, lm.astype(np.float32)),
              "agent-untrained": Embeddings("agent-untrained", sentences, rng.normal(size=(36, 16)).astype(np.float32))}
    layers = Embeddings("smollm2-135m", sentences, np.stack([rng.normal(size=(36, 24)), lm]).astype(np.float32))
    return sset, spaces, layers


def test_pairwise_matrix(planted):
    _, spaces, _ = planted
    m = analysis.pairwise_matrix(spaces, "precision", 5)
    assert np.allclose(m.to_numpy(), m.to_numpy().T) and (np.diag(m) == 1).all()
    assert m.loc["agent", "smollm2-135m"] > 0.7 > m.loc["agent", "agent-untrained"]
    assert m.loc["agent", "smollm2-135m"] == metrics.precision_at_k(spaces["agent"].vectors,
                                                                    spaces["smollm2-135m"].vectors, 5)
    d = analysis.pairwise_matrix(spaces, "procrustes_disparity")
    assert (np.diag(d) == 0).all() and d.loc["agent", "smollm2-135m"] < d.loc["agent", "agent-untrained"]
    with pytest.raises(ValueError, match="metric"):
        analysis.pairwise_matrix(spaces, "cosine")
    bad = dict(spaces, other=Embeddings("other", spaces["agent"].sentences[::-1], spaces["agent"].vectors))
    with pytest.raises(ValueError, match="differ at sentence"):
        analysis.pairwise_matrix(bad)


CONTRACT = ["model", "family", "k", "n", "precision", "chance", "rnx", "calibrated", "ci_low", "ci_high", "null_q95",
            "p_value", "precision_centred", "rnx_centred", "procrustes_disparity", "procrustes_p", "retrieval_top1",
            "cka", "cka_p"]


def test_summary_and_curves(planted):
    sset, spaces, _ = planted
    s = analysis.summary_table(spaces, "agent", k=5, n_perm=99, n_boot=200, attributes=sset.attributes)
    assert set(CONTRACT) <= set(s.columns) and {"p_within_level", "p_within_verb", "level_balanced", "rnx_auc",
                                                "cka_deconfounded", "rsa_deconfounded"} <= set(s.columns)
    s = s.set_index("model")
    assert (s["k"] == 5).all() and (s["n"] == 36).all() and s["chance"].eq(5 / 35).all()
    assert s.loc["smollm2-135m", "p_value"] == pytest.approx(0.01)
    assert s.loc["smollm2-135m", "family"] == "decoder LLM" and s.loc["agent-untrained", "family"] == "control"
    # R_NX and the calibrated score are the chance-corrected readings of the same precision
    assert s.loc["smollm2-135m", "rnx"] == pytest.approx((35 * s.loc["smollm2-135m", "precision"] - 5) / 30)
    assert s.loc["smollm2-135m", "calibrated"] > 0.5 and s.loc["agent-untrained", "calibrated"] < 0.2
    assert abs(s.loc["agent-untrained", "rnx"]) < 0.15
    assert s.loc["smollm2-135m", "cka_p"] == pytest.approx(1 / 100) and s.loc["smollm2-135m", "procrustes_p"] == pytest.approx(1 / 100)
    for model in s.index:  # intervals around their estimate; the crossed-design one is the wider
        assert s.loc[model, "ci_low_iid"] <= s.loc[model, "precision"] <= s.loc[model, "ci_high_iid"]
        assert s.loc[model, "ci_high"] - s.loc[model, "ci_low"] >= 0.8 * (s.loc[model, "ci_high_iid"] - s.loc[model, "ci_low_iid"])
    lines = analysis.headline_lines(s.reset_index(), pd.DataFrame({"comparison": ["x"], "metric": ["rnx"],
                                                                   "survives_every_choice": [True]}))
    assert "**smollm2-135m**" in lines[0] and "precision@5" in lines[0] and "chance 0.143" in lines[0]
    assert any(line.startswith("- Control agent-untrained (floor") for line in lines) and lines[-1].endswith("x (rnx).")
    paper = analysis.paper_comparison(s.reset_index()).set_index("model")
    assert paper.loc["smollm2-135m", "paper_family"] == "LLaMA" and paper.loc["smollm2-135m", "k"] == 5
    assert analysis.spaces_to_picture(["agent-untrained", "smollm2-135m", "agent"], "agent", limit=2) == [
        "agent", "smollm2-135m"]
    c = analysis.precision_vs_k(spaces, "agent", ks=[1, 5, 10], n_perm=30)
    assert set(c["model"]) == {"smollm2-135m", "agent-untrained"}
    row = c[(c["model"] == "smollm2-135m") & (c["k"] == 10)].iloc[0]
    assert row["chance"] == pytest.approx(10 / 35) and row["null_low"] <= row["chance"] + 0.1 < row["precision"]


def test_layer_sweep_sensitivity_and_conclusions(planted):
    sset, spaces, layers = planted
    sweep = analysis.layer_sweep(layers, spaces["agent"], 5)
    assert sweep["precision"].iloc[1] > sweep["precision"].iloc[0]
    others = {k: v for k, v in spaces.items() if k != "agent"}
    sens = sensitivity.sensitivity_table(spaces["agent"], others, {("smollm2-135m", "mean"): layers}, sset.levels,
                                         k=5, ks=(3, 5), n_perm=39, subset_sizes=(20,), draws=3)
    assert {"k", "sentences", "N", "hygiene", "pooling", "layer"} <= set(sens["choice"])
    assert set(sens.loc[sens["choice"] == "sentences", "setting"]) == {"GoToLocal", "PickupLoc", "all levels"}
    assert set(sens.loc[sens["choice"] == "hygiene", "setting"]) == {"raw", "centred", "zscore", "clip95"}
    best = sens[(sens["choice"] == "layer") & sens["setting"].str.startswith("best")].iloc[0]
    last = sens[(sens["choice"] == "layer") & (sens["setting"] == "last")].iloc[0]
    assert best["setting"].startswith("best (1 of 1") and best["precision"] >= last["precision"]
    assert best["null_q95"] >= last["null_q95"] - 0.02  # the null of a maximum is not lower
    n_rows = sens[sens["choice"] == "N"]
    assert (n_rows["n"] == 20).all() and n_rows["null_q95"].isna().all()
    assert np.allclose(sens["chance"], sens["k"] / (sens["n"] - 1))
    concl = sensitivity.robust_conclusions(sens)
    assert set(concl["metric"]) == {"precision", "rnx", "calibrated"}
    row = concl[(concl["comparison"] == "smollm2-135m > control agent-untrained") & (concl["metric"] == "rnx")].iloc[0]
    # each distinct setting once: k=3, k=5 and three hygienes; both levels (18 sentences, k=5: chance 0.29)
    # and the N=20 subsets are too small to decide, the rest repeat the headline setting
    assert row["survives_every_choice"] and row["holds_in"] == row["settings"] == 5 and row["too_small"] == 3
    repeats = sens[sensitivity.repeats_headline(sens, 5)]
    assert set(repeats["choice"]) == {"sentences", "hygiene", "pooling", "layer"}
    headline = sens[(sens["choice"] == "k") & (sens["setting"] == "k=5")].set_index("model")["precision"]
    for r in repeats.itertuples():  # a repeat is the very same number as the headline's
        assert r.precision == pytest.approx(headline[r.model], abs=1e-12), (r.choice, r.setting)
    above = concl[concl["comparison"].str.contains("above chance")]
    assert set(above["metric"]) == {"precision"} and (above["settings"] <= 6).all()  # only rows with a null
    summary = pd.DataFrame({"model": ["smollm2-135m"], "p_value": [0.01], "p_within_level": [0.01],
                            "p_within_verb": [0.3]})
    nulls_row = sensitivity.robust_conclusions(sens, summary).query("metric == 'permutation null'").iloc[0]
    assert nulls_row["holds_in"] == 2 and nulls_row["settings"] == 3 and not nulls_row["survives_every_choice"]


def test_size_dependence(planted):
    sset, spaces, _ = planted
    pairs = sensitivity.default_pairs(list(spaces), "agent")
    assert ("agent", "agent-untrained") in pairs and len(pairs) == 2  # one language model: no LM pair
    table = sensitivity.precision_vs_n(spaces, pairs, sset.levels, k=5, sizes=(12, 24), draws=4)
    assert {"model_a", "model_b", "n", "subset", "k", "precision", "chance", "rnx"} <= set(table.columns)
    assert set(table["n"]) == {12, 24, 36} and set(table["subset"]) == {"random", "level-balanced"}
    full = table[(table["n"] == 36) & (table["subset"] == "random")].set_index("model_b")
    assert full.loc["smollm2-135m", "precision"] == pytest.approx(
        metrics.precision_at_k(spaces["agent"].vectors, spaces["smollm2-135m"].vectors, 5))
    assert np.allclose(table["chance"], 5 / (table["n"] - 1))
    # chance rises as N falls, R_NX removes it: the unrelated pair stays near 0 at every N
    untrained = table[(table["model_b"] == "agent-untrained") & (table["subset"] == "random")]
    assert untrained["precision"].iloc[0] > untrained["precision"].iloc[-1] and (untrained["rnx"].abs() < 0.25).all()
    rng = np.random.default_rng(0)
    idx = sensitivity.balanced_subset(["a"] * 30 + ["b"] * 4, 20, rng)
    assert len(idx) == 20 and (idx >= 30).sum() == 4  # the small level gives all it has


def test_attribute_order_example():
    from alignnb.collect.instructions import SentenceSet

    sentences = [f"go to {d} {c}{o}" for d in ("the", "a") for c in ("red ", "green ", "blue ", "grey ", "")
                 for o in ("ball", "box", "key")]
    attrs = SentenceSet(sentences, ["L"] * len(sentences)).attributes
    ex = sensitivity.attribute_order_example(attrs, k=10)
    assert ex["n"] == 30 and ex["precision"] > 2 * ex["chance"]  # a small set: they share many neighbours...
    assert ex["rnx"] < ex["precision"]  # ...which R_NX discounts


def test_neighbour_attribute_share(planted):
    sset, spaces, _ = planted
    attrs = sset.attributes
    verb_space = Embeddings("v", sset.sentences, np.array([[1.0, 0.01 * i] if s.startswith("go") else [0.01 * i, 1.0]
                                                           for i, s in enumerate(sset.sentences)]))
    share = analysis.neighbour_attribute_share(verb_space, attrs, k=5).set_index("attribute")
    assert share.loc["verb", "share"] == 1.0
    assert share.loc["verb", "chance"] == pytest.approx(17 / 35)
    assert share.loc["color", "chance"] == pytest.approx(5 / 35)


def test_explorer_callbacks_update_outputs(planted):
    pytest.importorskip("ipywidgets")
    from alignnb.show.explorer import Explorer

    _, spaces, _ = planted
    ex = Explorer(spaces, "agent", "smollm2-135m", k=5, n_perm=20)
    first = ex.score_html.value
    assert "precision@5" in first and "agent" in first
    ex.k.value = 3  # a callback, as a click on the slider would fire it
    assert "precision@3" in ex.score_html.value and ex.score_html.value != first
    table = ex.neighbours()
    assert len(table) == 3
    knn_a, knn_b = ex.knn("agent", 3)[0], ex.knn("smollm2-135m", 3)[0]
    assert table["shared_agent"].sum() == len(set(knn_a) & set(knn_b))
    ex.sentence.value = ex.sentences[7]
    assert ex.sentences[7] in ex.neighbours_html.value
    ex.metric.value = "cka"
    assert "CKA" in ex.score_html.value
    png = bytes(ex.heatmap_png.value)
    ex.model_b.value = "agent-untrained"
    assert "agent-untrained" in ex.score_html.value
    assert bytes(ex.heatmap_png.value).startswith(b"\x89PNG") and bytes(ex.heatmap_png.value) != png  # outline moved
    fig = ex.static()
    assert len(fig.axes) == 2


def test_explorer_says_why_an_impossible_k_cannot_be_shown(planted):
    pytest.importorskip("ipywidgets")
    from alignnb.show.explorer import Explorer

    _, spaces, _ = planted
    ex = Explorer(spaces, "agent", "smollm2-135m", k=5, n_perm=20)
    n = len(ex.sentences)
    png = bytes(ex.heatmap_png.value)
    for bad in (n, n + 10, 0, -3):
        ex.k.value = bad  # typed into the box: a message, no exception
        assert "alignnb-message" in ex.score_html.value and f"k = {bad} is not possible" in ex.score_html.value
        assert ex.neighbours_html.value == "" and bytes(ex.heatmap_png.value) == png
        with pytest.raises(ValueError, match="not possible"):
            ex.static()
    ex.k.value = n - 1  # every other sentence a neighbour in every space: no information (check_k's bound)
    assert "alignnb-message" in ex.score_html.value and f"n-2 = {n - 2}" in ex.score_html.value
    ex.k.value = n - 2  # the largest k that works: each sentence leaves out one other
    assert f"precision@{n - 2}" in ex.score_html.value and "alignnb-message" not in ex.score_html.value


def test_tie_table_and_order_free_attribute_shares(planted):
    sset, spaces, _ = planted
    from alignnb.collect.instructions import attribute_onehot

    bag, _ = attribute_onehot(sset)  # one-hot attributes: every sentence's 5th place is tied
    with_bag = dict(spaces, **{"bag-of-attributes": Embeddings("bag-of-attributes", sset.sentences, bag)})
    t = analysis.tie_table(with_bag, "agent", k=5).set_index("model")
    assert t.loc["bag-of-attributes", "rows_with_ties"] == 1.0 and t.loc["bag-of-attributes", "tied_mean"] > 1
    assert t.loc["smollm2-135m", "rows_with_ties"] == 0.0
    assert t.loc["smollm2-135m", "precision"] == t.loc["smollm2-135m", "precision_index_ties"]  # no ties, no change
    # the attribute shares of a tied space do not depend on the order of the sentences
    order = np.random.default_rng(1).permutation(len(sset))
    shuffled = Embeddings("bag-of-attributes", [sset.sentences[i] for i in order], bag[order])
    a = analysis.neighbour_attribute_share(with_bag["bag-of-attributes"], sset.attributes, k=5)
    b = analysis.neighbour_attribute_share(shuffled, sset.attributes, k=5)
    np.testing.assert_allclose(a["share"], b["share"], atol=1e-12)


def test_summary_over_seeds_has_a_block_per_seed_and_their_mean(planted):
    from alignnb.measure import headline

    sset, spaces, _ = planted
    rng = np.random.default_rng(3)
    base = spaces["agent"].vectors
    variants = {}
    for s in range(3):
        variants[("transformer", s, "embedding")] = Embeddings("t", sset.sentences,
                                                               (base + 0.3 * s * rng.normal(size=base.shape)).astype(np.float32))
        variants[("transformer-untrained", s, "embedding")] = Embeddings("u", sset.sentences,
                                                                         rng.normal(size=(36, 16)).astype(np.float32))
    spaces = {**spaces, "agent-replicate": spaces["agent"]}
    table = headline.summary_over_seeds(spaces, variants, "agent", k=5, n_perm=19, n_boot=50,
                                        attributes=sset.attributes)
    assert list(table["seed"].astype(str).unique()) == ["0", "1", "2", "mean"]
    mean = headline.over_seeds(table).set_index("model")
    for model in ("smollm2-135m", "agent-untrained", "agent-replicate"):
        per = table[(table["model"] == model) & (table["seed"].astype(str) != "mean")]["precision"]
        assert mean.loc[model, "precision"] == pytest.approx(per.mean())
        assert mean.loc[model, "precision_sd"] == pytest.approx(per.std(ddof=1))
        assert mean.loc[model, "ci_low"] <= mean.loc[model, "precision"] <= mean.loc[model, "ci_high"]
        assert mean.loc[model, "p_value"] == table[table["model"] == model]["p_value"].max()
    # the slow whole-space nulls are drawn for the first seed only, and the mean block shows its p
    assert headline.of_seed(table, 1)["cka_p"].isna().all()
    assert (mean["cka_p"].to_numpy() == headline.of_seed(table, 0).set_index("model").loc[mean.index, "cka_p"]).all()
    # seed s is compared with its own twin and the next seed as the replicate
    s1 = headline.of_seed(table, 1).set_index("model")
    own = metrics.precision_at_k(variants[("transformer", 1, "embedding")].vectors,
                                 variants[("transformer-untrained", 1, "embedding")].vectors, 5)
    nxt = metrics.precision_at_k(variants[("transformer", 1, "embedding")].vectors,
                                 variants[("transformer", 2, "embedding")].vectors, 5)
    assert s1.loc["agent-untrained", "precision"] == pytest.approx(own)
    assert s1.loc["agent-replicate", "precision"] == pytest.approx(nxt)


def test_headline_setting_is_counted_once_even_without_its_k_row(planted):
    sset, spaces, layers = planted
    others = {k: v for k, v in spaces.items() if k != "agent"}
    sens = sensitivity.sensitivity_table(spaces["agent"], others, {}, sset.levels, k=5, ks=(3,), n_perm=19,
                                         subset_sizes=(), draws=2)
    # no k=5 row: the "all levels" row stays the headline's one representative
    kept = sens[~sensitivity.repeats_headline(sens, 5)]
    assert ((kept["choice"] == "sentences") & (kept["setting"] == "all levels")).sum() == len(others)
    assert not ((kept["choice"] == "hygiene") & (kept["setting"] == "raw")).any()


def test_a_seed_without_its_twin_is_an_error_not_another_seeds_twin(planted):
    from alignnb.measure import headline

    sset, spaces, _ = planted
    variants = {("transformer", s, "embedding"): spaces["agent"] for s in (0, 1)}
    variants[("transformer-untrained", 0, "embedding")] = spaces["agent-untrained"]
    with pytest.raises(ValueError, match="seed 1"):
        headline.seed_spaces(spaces, variants, 1, [0, 1])
