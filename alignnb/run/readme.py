"""The README's result tables, regenerated from the committed tables in ``figures/``.

Each table sits under a marker line ``<!-- NAME: ... -->`` and ends at the first blank line;
:func:`update_readme` rewrites every such block from its CSV (``make study`` runs it after the
notebooks; ``tests/study/test_readme.py`` checks that the README agrees with the tables).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from alignnb.collect import levels as level_table
from alignnb.core import paths
from alignnb.show.style import short_level


def _f(x: float) -> str:
    return f"{x:.3f}"


def success_markdown(table: pd.DataFrame) -> list[str]:
    """Every agent's greedy success per level (``agent_success.csv``), with its Wilson 95% interval
    when the table has one; one row per learner and seed, in the table's order."""
    levels = list(dict.fromkeys(table["level"]))
    short = [short_level(lv) for lv in levels]
    lines = ["| learner | seed | " + " | ".join(short) + " | misses a goal |", "|---|---|" + "---|" * (len(levels) + 1)]
    for (learner, seed), g in table.groupby(["learner", "seed"], sort=False):
        g = g.set_index("level")
        cells = [_f(g.loc[lv, "success_rate"]) for lv in levels]
        missed = [s for lv, s in zip(levels, short) if g.loc[lv, "success_rate"] < level_table.goal_of(lv, learner)]
        lines.append(f"| {learner} | {seed} | " + " | ".join(cells) + f" | {', '.join(missed) or 'no'} |")
    return lines


def interval_markdown(table: pd.DataFrame) -> list[str]:
    """The Wilson 95% intervals of ``agent_success.csv``, one row per learner and seed."""
    levels = list(dict.fromkeys(table["level"]))
    short = [short_level(lv) for lv in levels]
    lines = ["| learner | seed | " + " | ".join(short) + " |", "|---|---|" + "---|" * len(levels)]
    for (learner, seed), g in table.groupby(["learner", "seed"], sort=False):
        g = g.set_index("level")
        lines.append(f"| {learner} | {seed} | " + " | ".join(
            f"{_f(g.loc[lv, 'ci_low'])}-{_f(g.loc[lv, 'ci_high'])}" for lv in levels) + " |")
    return lines


def training_markdown(table: pd.DataFrame) -> list[str]:
    """``agent_training.csv``: steps, why each agent stopped, validation accuracy, test failures."""
    lines = ["| learner | seed | steps | stopped | first check at the goals | validation accuracy | "
             "test failures | with a location phrase |", "|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        hit = "never" if pd.isna(r["steps_to_goals"]) else f"{int(r['steps_to_goals']):,}"
        lines.append(f"| {r['learner']} | {r['seed']} | {int(r['steps']):,} | {r['stop_reason']} | {hit} | "
                     f"{r['val_accuracy']:.3f} | {int(r['test_failures'])} | {int(r['failures_with_location'])} |")
    return lines


def goals_markdown(table: pd.DataFrame) -> list[str]:
    """``agent_success.csv``: one sentence per learner, how many seeds meet every goal of its level
    table on the test episodes, and each miss with its rate and goal."""
    lines = []
    for learner, rows in table.groupby("learner", sort=False):
        misses = []
        for seed, g in rows.groupby("seed", sort=False):
            miss = [f"{short_level(lv)} {_f(r)} < {level_table.goal_of(lv, learner):.2f}"
                    for lv, r in zip(g["level"], g["success_rate"]) if r < level_table.goal_of(lv, learner)]
            if miss:
                misses.append(f"seed {seed}: {', '.join(miss)}")
        seeds = rows["seed"].nunique()
        met = seeds - len(misses)
        lines.append(f"- **{learner}: {met} of {seeds} seeds meet every goal** on the test episodes"
                     + (f"; misses: {'; '.join(misses)}." if misses else "."))
    return lines


def modes_markdown(table: pd.DataFrame) -> list[str]:
    """``agent_success_modes.csv``: each learner's test success per level with greedy and with
    sampled actions, the mean over seeds and the range of the seeds."""
    levels = list(dict.fromkeys(table["level"]))
    short = [short_level(lv) for lv in levels]
    lines = ["| learner | actions | " + " | ".join(short) + " |", "|---|---|" + "---|" * len(levels)]
    for learner, rows in table.groupby("learner", sort=False):
        for mode in ("greedy", "sampled"):
            by = rows.groupby("level")[mode]
            cells = [f"{_f(by.mean()[lv])} ({_f(by.min()[lv])}-{_f(by.max()[lv])})" for lv in levels]
            lines.append(f"| {learner} | {mode} | " + " | ".join(cells) + " |")
    return lines


def trend_markdown(table: pd.DataFrame) -> list[str]:
    """``alignment_trend.csv`` (E3): how precision@k with the decoder LLMs moved along each segment
    of training, per learner and point (:func:`alignnb.measure.trajectory.trend_lines`)."""
    from alignnb.measure import trajectory

    decoders = list(dict.fromkeys(table.loc[table["family"] == "decoder LLM", "model"]))
    return trajectory.trend_lines(table, decoders) or ["- (no success check was kept: no segment to test)"]


def matched_markdown(table: pd.DataFrame) -> list[str]:
    """``matched_success.csv`` (E3): the learners at matched success, precision@k with each decoder
    LLM at the embedding (mean over seeds, 95% interval over seeds), and their gap where both are
    matched (their nearest snapshots within the tolerance of the level)."""
    sel = table[(table["family"] == "decoder LLM") & (table["extraction"] == "embedding")]
    lines = ["| level | learner | model | seeds' snapshots | success | farthest from the level | matched | precision "
             "| 95% interval over seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in sel.iterrows():
        interval = "" if pd.isna(r["ci_low"]) else f"{r['ci_low']:+.3f} to {r['ci_high']:+.3f}"
        if " - " in r["learner"]:  # the gap between the learners: a difference, signed
            cells = ["", "", _f(r["distance"]), "yes" if r["matched"] else "no",
                     "not matched" if pd.isna(r["precision"]) else f"{r['precision']:+.3f}", interval]
        else:
            cells = [r["snapshots"], _f(r["success"]), _f(r["distance"]), "yes" if r["matched"] else "no",
                     _f(r["precision"]), interval.replace("+", "")]
        lines.append(f"| {r['level']:.2f} | {r['learner']} | {r['model']} | " + " | ".join(cells) + " |")
    return lines


def results_markdown(summary: pd.DataFrame) -> list[str]:
    """The alignment summary (``alignment_summary.csv``, k = 15) as the README's results table: the
    mean-over-seeds rows, with each seed's precision beside them."""
    from alignnb.measure import headline

    mean = headline.over_seeds(summary)
    per_seed = summary[summary["seed"].astype(str) != "mean"] if "seed" in summary else summary.iloc[0:0]
    lines = ["| model | family | precision@15 (mean ± sd over seeds) | per seed | chance | R_NX | calibrated | "
             "95% CI (seeds, colours × objects) | largest p over seeds: global / level / verb | null z | centred | "
             "Procrustes (p) | CKA (p) | RSA: Spearman / rho-a |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, s in mean.iterrows():
        seeds = per_seed[per_seed["model"] == s["model"]]["precision"]
        sd = f" ± {_f(s['precision_sd'])}" if "precision_sd" in s and not pd.isna(s["precision_sd"]) else ""
        lines.append(f"| {s['model']} | {s['family']} | {_f(s['precision'])}{sd} | {' '.join(_f(v) for v in seeds)} | "
                     f"{_f(s['chance'])} | {_f(s['rnx'])} | {_f(s['calibrated'])} | {_f(s['ci_low'])} to "
                     f"{_f(s['ci_high'])} | {_f(s['p_value'])} / {_f(s['p_within_level'])} / {_f(s['p_within_verb'])} | "
                     f"{s['null_z']:.1f} | {_f(s['precision_centred'])} | {_f(s['procrustes_disparity'])} "
                     f"({_f(s['procrustes_p'])}) | {_f(s['cka'])} ({_f(s['cka_p'])}) | {_f(s['rsa'])} / {_f(s['rsa_rho_a'])} |")
    return lines


def training_effect_markdown(table: pd.DataFrame) -> list[str]:
    """E1's registered rows (``training_effect.csv``)."""
    from alignnb.measure import verdicts

    return verdicts.training_effect_markdown(table)


def model_contrast_markdown(table: pd.DataFrame) -> list[str]:
    """E2's registered rows (``model_contrasts.csv``)."""
    from alignnb.measure import verdicts

    return verdicts.model_contrast_markdown(table)


def conclusions_markdown(table: pd.DataFrame) -> list[str]:
    """``robust_conclusions.csv``: each comparison under raw precision and the permutation nulls,
    how many distinct settings it holds in (the R_NX and calibrated rows stay in the CSV)."""
    lines = ["| comparison | metric | holds in | of distinct settings | too small (left out) | every setting |",
             "|---|---|---|---|---|---|"]
    for _, r in table[table["metric"].isin(["precision", "permutation null"])].iterrows():
        lines.append(f"| {r['comparison']} | {r['metric']} | {int(r['holds_in'])} | {int(r['settings'])} | "
                     f"{int(r['too_small'])} | {'yes' if r['survives_every_choice'] else 'no'} |")
    return lines


#: marker name -> (the CSV in figures/ it is made from, how)
BLOCKS: dict[str, tuple[str, Callable[[pd.DataFrame], list[str]]]] = {
    "success-table": ("agent_success.csv", success_markdown),
    "goals-lines": ("agent_success.csv", goals_markdown),
    "modes-table": ("agent_success_modes.csv", modes_markdown),
    "trend-lines": ("alignment_trend.csv", trend_markdown),
    "matched-table": ("matched_success.csv", matched_markdown),
    "interval-table": ("agent_success.csv", interval_markdown),
    "training-table": ("agent_training.csv", training_markdown),
    "results-table": ("alignment_summary.csv", results_markdown),
    "training-effect-table": ("training_effect.csv", training_effect_markdown),
    "model-contrast-table": ("model_contrasts.csv", model_contrast_markdown),
    "conclusions-table": ("robust_conclusions.csv", conclusions_markdown),
}


def variants_markdown(figures: Path, old: str) -> list[str]:
    """The agent-variants table (``agent_variants.csv``, ``agent_agreement.csv``), with the
    reference spaces the README's block already shows as its columns."""
    from alignnb.measure import analysis

    header = old.splitlines()[0]
    models = [c.strip() for c in header.strip("|").split("|")][2:-1]
    variants = pd.read_csv(figures / "agent_variants.csv")
    agreement = pd.read_csv(figures / "agent_agreement.csv")
    return analysis.variant_markdown(analysis.variant_summary(variants), analysis.ceiling_summary(agreement), models)


def render(text: str, figures: Path) -> str:
    """``text`` with every marked block rewritten from the tables in ``figures``."""
    blocks = {**{name: (csv, lambda old, make=make, csv=csv: make(pd.read_csv(figures / csv)))
                 for name, (csv, make) in BLOCKS.items()},
              "variants-table": ("agent_variants.csv", lambda old: variants_markdown(figures, old))}
    for name, (csv, make) in blocks.items():
        pattern = re.compile(rf"(<!-- {name}:[^\n]*-->\n)(.*?)(\n\n|\Z)", re.S)
        found = pattern.search(text)
        if not found or not (figures / csv).exists():
            continue
        body = "\n".join(make(found.group(2)))
        text = pattern.sub(lambda m: m.group(1) + body + m.group(3), text, count=1)
    return text


def update_readme(readme: Path | None = None, figures: Path | None = None) -> bool:
    """Rewrite the README's marked tables from ``figures/``; True when the file changed."""
    readme = readme or paths.REPO_ROOT / "README.md"
    figures = figures or paths.record_figures_dir()
    old = readme.read_text()
    new = render(old, figures)
    if new != old:
        readme.write_text(new)
    return new != old


if __name__ == "__main__":  # python -m alignnb.run.readme
    print("README.md updated" if update_readme() else "README.md already agrees with figures/", file=sys.stderr)
