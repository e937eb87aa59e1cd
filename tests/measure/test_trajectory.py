"""E3: alignment along training on planted snapshots, and the learners at matched success."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alignnb.extract.embeddings import Embeddings
from alignnb.measure import calibration, effects, trajectory

N_COLOURS, N_OBJECTS, REPS, DIMS = 6, 8, 3, 16
#: snapshot -> the weight of the language model in each seed's space (noise has weight 1)
SIGNAL = {"untrained": 0.0, "step 1000": 0.6, "step 2000": 1.2, "final": 3.0}
SUCCESS = {"untrained": np.nan, "step 1000": 0.55, "step 2000": 0.82, "final": 0.97}


def _design():
    rows = [(f"c{c}", f"o{o}", r) for c in range(N_COLOURS) for o in range(N_OBJECTS) for r in range(REPS)]
    sentences = [f"pick up the {c} {o} {r}" for c, o, r in rows]
    attrs = pd.DataFrame({"color": [r[0] for r in rows], "object": [r[1] for r in rows]}, index=sentences)
    return sentences, attrs


def _space(name, sentences, X, **meta):
    return Embeddings(name, sentences, np.asarray(X, np.float32), meta)


def _planted(seeds=(0, 1, 2, 3), learners=("transformer",), shift=None):
    """Snapshots whose alignment with the language model "lm" grows with training; a control "noise" never aligns.

    ``shift`` {learner: success offset} moves a learner's successes (its snapshots' signal stays)."""
    sentences, attrs = _design()
    rng = np.random.default_rng(0)
    n = len(sentences)
    lm = rng.normal(size=(n, DIMS))
    refs = {"lm": _space("lm", sentences, lm), "noise": _space("noise", sentences, rng.normal(size=(n, DIMS)))}
    snaps, rows = {}, []
    for learner in learners:
        for s in seeds:
            base = rng.normal(size=(n, DIMS))
            for name, w in SIGNAL.items():
                # each snapshot is the seed's own noise plus w * lm plus a little fresh noise
                X = base + w * lm + 0.3 * rng.normal(size=(n, DIMS))
                snaps[(learner, s, name, "embedding")] = _space(f"{learner}{s}{name}", sentences, X)
                step = {"untrained": 0, "final": 3000}[name] if " " not in name else int(name.split()[1])
                rows.append({"learner": learner, "seed": s, "snapshot": name, "step": step,
                             "success": SUCCESS[name] + (shift or {}).get(learner, 0.0),
                             "success_source": "planted"})
    inf = effects.inference_draws(attrs, sentences, n_boot=300, n_perm=99)
    return snaps, refs, inf, pd.DataFrame(rows)


def test_snapshots_sort_in_training_order():
    assert trajectory.snapshot_order(["final", "step 1500", "untrained", "step 500", "step 1500"]) == [
        "untrained", "step 500", "step 1500", "final"]
    assert trajectory.snapshot_name(1500) == "step 1500"


def test_alignment_rises_with_a_planted_signal_and_the_control_stays_at_chance():
    snaps, refs, inf, steps = _planted()
    per_seed, pooled = trajectory.alignment_over_training(snaps, refs, ["embedding"], inf, k=10, steps=steps)
    assert set(per_seed.columns) == set(trajectory.SEED_COLUMNS)
    assert len(per_seed) == 4 * len(SIGNAL) * len(refs) and len(pooled) == len(SIGNAL) * len(refs)
    lm = pooled[pooled["model"] == "lm"].set_index("snapshot").loc[list(SIGNAL)]
    assert lm["precision"].is_monotonic_increasing and lm["precision"].iloc[-1] > 0.3
    # the twin against itself: no effect; the finished agent: an effect whose interval excludes 0
    assert lm.loc["untrained", "estimate"] == 0 and lm.loc["untrained", "precision"] == lm.loc["untrained", "twin_precision"]
    assert lm.loc["final", "ci_low"] > 0 and lm.loc["final", "seeds_up"] == 4
    assert lm.loc["final", "p_sign_flip"] == pytest.approx(2 / 16)
    n = len(snaps[("transformer", 0, "final", "embedding")].sentences)
    assert lm["rnx"].to_numpy() == pytest.approx(calibration.rnx(lm["precision"].to_numpy(), n, 10))
    noise = pooled[pooled["model"] == "noise"]
    chance = 10 / (n - 1)
    assert (noise["precision"] - chance).abs().max() < 0.05
    # each row carries its snapshot's step and success (the twin's success is not played)
    rows = per_seed[(per_seed["model"] == "lm") & (per_seed["seed"] == 2)].set_index("snapshot")
    assert rows.loc["step 2000", "step"] == 2000 and rows.loc["step 2000", "success"] == pytest.approx(0.82)
    assert np.isnan(rows.loc["untrained", "success"])
    # the per-seed effect is the snapshot minus the seed's own twin
    assert (rows["twin_effect"] == rows["precision"] - rows["twin_precision"]).all()
    assert pooled.set_index(["model", "snapshot"]).loc[("lm", "final"), "estimate"] == pytest.approx(
        per_seed.query("model == 'lm' and snapshot == 'final'")["twin_effect"].mean())


def test_matched_success_picks_each_seeds_nearest_snapshot_and_compares_the_learners():
    # the GRU succeeds less at every snapshot (success shifted by -0.15) but its spaces are the same draws' kind
    snaps, refs, inf, steps = _planted(learners=("transformer", "gru-film-lstm"), shift={"gru-film-lstm": -0.15})
    per_seed, _ = trajectory.alignment_over_training(snaps, refs, ["embedding"], inf, k=10, steps=steps)
    table = trajectory.matched_success(per_seed, levels=(0.8,), n_boot=500)
    lm = table[table["model"] == "lm"].set_index("learner")
    # transformer: 0.82 at step 2000 is nearest 0.8; GRU: 0.82 at final (0.97 - 0.15) is
    assert lm.loc["transformer", "snapshots"] == ", ".join(["step 2000"] * 4)
    assert lm.loc["transformer", "success"] == pytest.approx(0.82) and lm.loc["transformer", "seeds"] == 4
    assert lm.loc["gru-film-lstm", "snapshots"].count("final") == 4
    assert lm.loc["gru-film-lstm", "success"] == pytest.approx(0.82)
    # at matched success the GRU's snapshots are later ones (more signal): it is the more aligned, and the gap says so
    gap = lm.loc["gru-film-lstm - transformer"]
    assert gap["precision"] == pytest.approx(lm.loc["gru-film-lstm", "precision"] - lm.loc["transformer", "precision"])
    assert gap["ci_low"] > 0
    for learner in ("transformer", "gru-film-lstm"):
        assert lm.loc[learner, "ci_low"] <= lm.loc[learner, "precision"] <= lm.loc[learner, "ci_high"]
    assert gap["matched"] and gap["distance"] == pytest.approx(0.02)


def test_learners_without_a_snapshot_near_a_level_are_not_matched_there():
    snaps, refs, inf, steps = _planted(learners=("transformer", "gru-film-lstm"), shift={"gru-film-lstm": -0.15})
    per_seed, _ = trajectory.alignment_over_training(snaps, refs, ["embedding"], inf, k=10, steps=steps)
    table = trajectory.matched_success(per_seed, levels=(0.95,), n_boot=200)
    lm = table[table["model"] == "lm"].set_index("learner")
    # the transformer's final 0.97 is near 0.95; the GRU's best, 0.82, is 0.13 away
    assert lm.loc["transformer", "matched"] and not lm.loc["gru-film-lstm", "matched"]
    gap = lm.loc["gru-film-lstm - transformer"]
    assert gap["distance"] == pytest.approx(0.13) and not gap["matched"]
    assert np.isnan(gap["precision"]) and np.isnan(gap["ci_low"]) and np.isnan(gap["ci_high"])
    # one seed: its mean, but no interval
    one = trajectory.matched_success(per_seed[per_seed["seed"] == 0], levels=(0.8,), n_boot=200)
    assert len(one) == 2 * 3 and one["ci_low"].isna().all() and one["precision"].notna().all()  # 2 models x (2 learners, gap)


def test_the_trend_rises_along_both_segments_of_a_planted_signal_and_not_for_noise():
    snaps, refs, inf, steps = _planted()
    assert trajectory.first_check(snaps, "transformer") == "step 1000"
    trend = trajectory.competence_trend(snaps, refs, ["embedding"], inf, k=10, steps=steps)
    assert set(trend["segment"]) == {"untrained to step 1000", "step 1000 to final"}
    lm = trend[trend["model"] == "lm"].set_index("segment")
    assert (lm["change"] == trajectory.ABOVE).all() and (lm["estimate"] > 0).all()
    assert lm.loc["step 1000 to final", "from_success"] == pytest.approx(0.55)
    assert lm.loc["step 1000 to final", "to_success"] == pytest.approx(0.97)
    # the segment's change is the later snapshot's precision minus the earlier one's
    per_seed, pooled = trajectory.alignment_over_training(snaps, refs, ["embedding"], inf, k=10, steps=steps)
    at = pooled[pooled["model"] == "lm"].set_index("snapshot")["precision"]
    assert lm.loc["step 1000 to final", "estimate"] == pytest.approx(at["final"] - at["step 1000"])
    assert (trend[trend["model"] == "noise"]["change"] == trajectory.INCLUDES).all()
    lines = trajectory.trend_lines(trend, ["lm"])
    assert lines == [lines[0]] and "untrained to step 1000 (success not played to 0.55, 4 seeds): mean change +" in lines[0]
    assert "of 1 models' intervals 1 lie above 0 and 0 below; sign-flip p 0.125" in lines[0]


def test_a_falling_signal_is_called_falling():
    snaps, refs, inf, steps = _planted()
    # reverse the training order of the snapshots' spaces: alignment now falls as success grows
    names = list(SIGNAL)
    flipped = {(ln, s, names[len(names) - 1 - names.index(n)], x): e for (ln, s, n, x), e in snaps.items()}
    trend = trajectory.competence_trend(flipped, refs, ["embedding"], inf, k=10, steps=steps)
    assert (trend[trend["model"] == "lm"]["change"] == trajectory.BELOW).all()
