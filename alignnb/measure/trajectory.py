"""Stage 4, E3: alignment along training, and the two learners compared at matched success.

A *snapshot* is one agent's extraction points at one moment of its training:

- ``"untrained"`` (step 0): the seed's own untrained twin;
- ``"step N"``: the weights kept at the success check of step N (on fresh validation layouts);
- ``"final"``: the finished agent (its test on ``eval_episodes`` fresh layouts per level).

At each snapshot, each learner, point and reference space (language models and controls):

    precision@k(snapshot_s, M)                       per seed s, with R_NX(k) beside it
    Δ_s = precision@k(snapshot_s, M) − precision@k(twin_s, M)
    mean_s Δ_s with the hierarchical bootstrap interval of E1 (seeds resampled, colour and
    object values by pigeonhole weights; probe states kept fixed), its bootstrap p and the
    exact sign-flip p over seeds

Success is the snapshot's own: the mean over levels of the check's rate (200 validation episodes
per level) or of the final test's; the untrained twin's is not played (NaN). Everything here is
exploratory (the registered tests are E1 and E2 of :mod:`alignnb.measure.effects`); no p is
corrected. Tidy DataFrames; nothing here draws or writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from alignnb.core import streams
from alignnb.extract.embeddings import Embeddings
from alignnb.extract.models import family_of
from alignnb.measure import calibration, effects

#: (learner, seed, snapshot, extraction): one agent's extraction point at one moment of training.
Snapshot = tuple[str, int, str, str]
UNTRAINED, FINAL = "untrained", "final"
#: The success levels at which :func:`matched_success` compares the learners, and how far (in
#: mean success) a seed's nearest snapshot may be from a level for the learner to count as matched there.
MATCH_LEVELS = (0.6, 0.8, 0.95)
MATCH_TOLERANCE = 0.05
#: Where a segment's interval lies (:func:`competence_trend`).
ABOVE, BELOW, INCLUDES = "interval above 0", "interval below 0", "interval includes 0"

SEED_COLUMNS = ("learner", "seed", "snapshot", "step", "extraction", "model", "family", "k", "precision", "rnx",
                "twin_precision", "twin_effect", "success", "success_source")
POOLED_COLUMNS = ("learner", "snapshot", "step", "extraction", "model", "family", "k", "seeds", "precision",
                  "rnx", "twin_precision", "estimate", "ci_low", "ci_high", "p", "p_sign_flip", "seeds_up",
                  "per_seed", "success")


def snapshot_name(step: int) -> str:
    """The name of the snapshot kept at success check ``step``."""
    return f"step {int(step)}"


def snapshot_order(names: Sequence[str]) -> list[str]:
    """Snapshots in training order: untrained, the checks by step, final."""
    def rank(name: str) -> tuple[int, int]:
        if name == UNTRAINED:
            return (0, 0)
        if name == FINAL:
            return (2, 0)
        return (1, int(name.split()[1]))
    return sorted(dict.fromkeys(names), key=rank)


def _at(snapshots: Mapping[Snapshot, Embeddings], learner: str, snapshot: str, baseline: str = UNTRAINED) -> dict:
    """Two snapshots of ``learner`` as E1's variants: ``snapshot`` as trained, ``baseline`` (default: the
    twin) as untrained, for the seeds that have both."""
    out: dict = {}
    for (ln, seed, name, x), emb in snapshots.items():
        if ln != learner:
            continue
        if name == snapshot:
            out[(learner, seed, x)] = emb
        if name == baseline:
            out[(f"{learner}-untrained", seed, x)] = emb
    return out


def alignment_over_training(snapshots: Mapping[Snapshot, Embeddings], references: Mapping[str, Embeddings],
                            extractions: Sequence[str], inf: effects.Inference, k: int = 15,
                            steps: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-seed table, pooled table) of precision@k along training (see the module).

    ``steps`` (columns learner, seed, snapshot, step, success, success_source) gives each
    snapshot's training step and success; without it they are NaN.
    """
    seed_rows, pooled_rows = [], []
    n = len(next(iter(references.values())).sentences)
    models = list(references)
    info = steps.set_index(["learner", "seed", "snapshot"]) if steps is not None else None
    learners = list(dict.fromkeys(ln for ln, *_ in snapshots))
    for learner in learners:
        names = snapshot_order([name for ln, _, name, _ in snapshots if ln == learner])
        for name in names:
            variants = _at(snapshots, learner, name)
            for x in extractions:
                if not effects.paired_seeds(variants, learner, x):
                    continue
                po = effects.point_overlaps(variants, references, learner, x, k)
                rows = effects.training_effect_rows(po, models, inf, k)
                for row in rows:
                    m = row["model"]
                    t, u = po.overlaps[("trained", m)].mean(1), po.overlaps[("untrained", m)].mean(1)
                    successes, step_values = [], []
                    for s_i, seed in enumerate(po.seeds):
                        step, success, source = np.nan, np.nan, ""
                        if info is not None and (learner, seed, name) in info.index:
                            r = info.loc[(learner, seed, name)]
                            step, success, source = r["step"], r["success"], r["success_source"]
                        successes.append(success)
                        step_values.append(step)
                        seed_rows.append({"learner": learner, "seed": seed, "snapshot": name, "step": step,
                                          "extraction": x, "model": m, "family": family_of(m), "k": k,
                                          "precision": float(t[s_i]), "rnx": float(calibration.rnx(t[s_i], n, k)),
                                          "twin_precision": float(u[s_i]), "twin_effect": float(t[s_i] - u[s_i]),
                                          "success": success, "success_source": source})
                    pooled_rows.append({
                        "learner": learner, "snapshot": name, "step": _mean(step_values), "extraction": x,
                        "model": m, "family": row["family"], "k": k, "seeds": row["seeds"],
                        "precision": row["trained"], "rnx": float(calibration.rnx(row["trained"], n, k)),
                        "twin_precision": row["untrained"], **{c: row[c] for c in (
                            "estimate", "ci_low", "ci_high", "p", "p_sign_flip", "seeds_up", "per_seed")},
                        "success": _mean(successes)})
    return (pd.DataFrame(seed_rows, columns=list(SEED_COLUMNS)),
            pd.DataFrame(pooled_rows, columns=list(POOLED_COLUMNS)))


TREND_COLUMNS = ("learner", "extraction", "model", "family", "segment", "from_success", "to_success", "seeds",
                 "from_precision", "to_precision", "estimate", "ci_low", "ci_high", "p", "p_sign_flip", "seeds_up",
                 "per_seed", "change")


def first_check(snapshots: Mapping[Snapshot, Embeddings], learner: str) -> str | None:
    """The earliest success-check snapshot that every seed of ``learner`` has (None if there is none)."""
    seeds = {s for ln, s, _, _ in snapshots if ln == learner}
    names = [n for n in snapshot_order([n for ln, _, n, _ in snapshots if ln == learner]) if n not in (UNTRAINED, FINAL)]
    for name in names:
        if {s for ln, s, n, _ in snapshots if ln == learner and n == name} == seeds:
            return name
    return None


def competence_trend(snapshots: Mapping[Snapshot, Embeddings], references: Mapping[str, Embeddings],
                     extractions: Sequence[str], inf: effects.Inference, k: int = 15,
                     steps: pd.DataFrame | None = None) -> pd.DataFrame:
    """Does alignment change as competence grows? For each learner, point and reference space, the
    paired change over seeds along two segments of training: the untrained twin to the first
    success check, and the first check to the finished agent.

    Each segment is E1's computation with the later snapshot as "trained" and the earlier as
    "untrained": the mean over seeds of the per-seed change, its hierarchical-bootstrap interval,
    bootstrap p and exact sign-flip p. ``change`` says only where the interval lies: "interval
    above 0", "interval below 0" or "interval includes 0". The interval resamples few seeds and
    under-covers (see :mod:`alignnb.measure.effects`); the exact sign-flip p beside it is what the
    seeds alone support (at least 2/2^S: 0.0625 with 5 seeds, 0.25 with 3). Exploratory: nothing
    is corrected.
    """
    info = steps.set_index(["learner", "seed", "snapshot"])["success"] if steps is not None else None
    models = list(references)
    rows = []
    for learner in dict.fromkeys(ln for ln, *_ in snapshots):
        check = first_check(snapshots, learner)
        if check is None:
            continue
        for a, b in ((UNTRAINED, check), (check, FINAL)):
            variants = _at(snapshots, learner, b, baseline=a)
            for x in extractions:
                if not effects.paired_seeds(variants, learner, x):
                    continue
                po = effects.point_overlaps(variants, references, learner, x, k)

                def success(name: str) -> float:
                    if info is None:
                        return float("nan")
                    return _mean([info.get((learner, s, name), np.nan) for s in po.seeds])

                for r in effects.training_effect_rows(po, models, inf, k):
                    change = (ABOVE if r["ci_low"] > 0 else BELOW if r["ci_high"] < 0 else INCLUDES)
                    rows.append({"learner": learner, "extraction": x, "model": r["model"], "family": r["family"],
                                 "segment": f"{a} to {b}", "from_success": success(a), "to_success": success(b),
                                 "seeds": r["seeds"], "from_precision": r["untrained"], "to_precision": r["trained"],
                                 **{c: r[c] for c in ("estimate", "ci_low", "ci_high", "p", "p_sign_flip", "seeds_up",
                                                      "per_seed")}, "change": change})
    return pd.DataFrame(rows, columns=list(TREND_COLUMNS))


def trend_lines(trend: pd.DataFrame, models: Sequence[str]) -> list[str]:
    """Markdown sentences, one per learner and point: how precision@k with ``models`` moved along
    each segment of :func:`competence_trend`: the mean of the per-model changes, how many of the
    models' intervals lie above or below 0, and the range of their sign-flip p. The models are
    correlated spaces: several intervals on the same side are not independent confirmations."""
    lines = []
    sel = trend[trend["model"].isin(list(models))]
    for (learner, x), rows in sel.groupby(["learner", "extraction"], sort=False):
        parts = []
        for segment, r in rows.groupby("segment", sort=False):
            up, down = int((r["change"] == ABOVE).sum()), int((r["change"] == BELOW).sum())
            p_lo, p_hi = r["p_sign_flip"].min(), r["p_sign_flip"].max()
            p = f"{p_lo:.3f}" if p_lo == p_hi else f"{p_lo:.3f}-{p_hi:.3f}"
            parts.append(f"{segment} (success {_rate(r['from_success'].iloc[0])} to {_rate(r['to_success'].iloc[0])}, "
                         f"{int(r['seeds'].iloc[0])} seeds): mean change {r['estimate'].mean():+.3f}; of {len(r)} "
                         f"models' intervals {up} lie above 0 and {down} below; sign-flip p {p}")
        lines.append(f"- **{learner}, {x}**: " + "; ".join(parts) + ".")
    return lines


def _rate(value: float) -> str:
    return "not played" if np.isnan(value) else f"{value:.2f}"


def _mean(values: Sequence[float]) -> float:
    x = np.asarray(values, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def matched_success(per_seed: pd.DataFrame, levels: Sequence[float] = MATCH_LEVELS,
                    n_boot: int = 2000, seed: int = 0, tolerance: float = MATCH_TOLERANCE) -> pd.DataFrame:
    """The learners compared at matched success: for each learner, seed and target level, the
    snapshot whose success is closest to it; then, per learner, level, point and model, the mean
    precision@k over seeds with a 95% bootstrap interval over seeds, and the gap between the
    learners (second minus first) with the interval of the two independent seed resamples.

    ``per_seed`` is the first table of :func:`alignment_over_training`. ``distance`` is how far
    the farthest seed's nearest snapshot is from the level (on the gap row: the larger of the two
    learners'); ``matched`` says whether it is within ``tolerance``. A gap whose learners are not
    both matched, and an interval over fewer than 2 seeds, is NaN. The intervals resample seeds
    only (3-5 here): they say how far another draw of these few seeds could move the mean, and
    ignore the sentences' own variation.
    """
    rng = streams.rng("analysis", seed, 28, 1)  # two numbers: never a subset size's stream
    have = per_seed.dropna(subset=["success"])
    rows = []
    learners = list(dict.fromkeys(have["learner"]))
    nan = float("nan")
    for level in levels:
        picked = {}
        for learner in learners:
            own = have[have["learner"] == learner]
            snaps = own.drop_duplicates(["seed", "snapshot"])[["seed", "snapshot", "success"]].reset_index(drop=True)
            nearest = snaps.loc[(snaps["success"] - level).abs().groupby(snaps["seed"]).idxmin()]
            picked[learner] = own.merge(nearest[["seed", "snapshot"]], on=["seed", "snapshot"])
        for (x, m), _ in have.groupby(["extraction", "model"], sort=False):
            out = {}
            for learner in learners:
                sel = picked[learner]
                sel = sel[(sel["extraction"] == x) & (sel["model"] == m)].sort_values("seed")
                values = sel["precision"].to_numpy()
                draws = values[rng.integers(0, len(values), size=(int(n_boot), len(values)))].mean(1)
                low, high = np.quantile(draws, [0.025, 0.975]) if len(values) >= 2 else (nan, nan)
                distance = float((sel["success"] - level).abs().max())
                out[learner] = (draws, distance, len(values))
                rows.append({"level": level, "learner": learner, "extraction": x, "model": m, "family": family_of(m),
                             "seeds": len(values), "snapshots": ", ".join(sel["snapshot"]),
                             "success": float(sel["success"].mean()), "distance": distance,
                             "matched": distance <= tolerance, "precision": float(values.mean()),
                             "ci_low": float(low), "ci_high": float(high)})
            if len(learners) == 2:
                a, b = learners
                distance = max(out[a][1], out[b][1])
                matched = distance <= tolerance
                both = min(out[a][2], out[b][2]) >= 2
                low, high = np.quantile(out[b][0] - out[a][0], [0.025, 0.975]) if matched and both else (nan, nan)
                rows.append({"level": level, "learner": f"{b} - {a}", "extraction": x, "model": m,
                             "family": family_of(m), "seeds": nan, "snapshots": "", "success": nan,
                             "distance": distance, "matched": matched,
                             "precision": float(rows[-1]["precision"] - rows[-2]["precision"]) if matched else nan,
                             "ci_low": float(low), "ci_high": float(high)})
    return pd.DataFrame(rows)
