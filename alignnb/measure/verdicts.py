"""Stage 4: E1 and E2 (:mod:`alignnb.measure.effects`) for a reader: markdown tables and sentences.

What the README's registered-test blocks and notebook 04's verdicts print; nothing here computes
a statistic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from alignnb.measure.effects import ALPHA


def training_effect_markdown(table: pd.DataFrame, registered_only: bool = True) -> list[str]:
    """E1 as a markdown table (the README's): one row per point and model, registered rows only by default."""
    rows = table[table["p_holm"].notna()] if registered_only else table
    lines = ["| learner | point | model | metric | trained | untrained | Δ (trained − twin) | 95% interval | p | "
             "p (sign flip) | p (Holm) | seeds up | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows.itertuples():
        holm = "" if np.isnan(r.p_holm) else f"{r.p_holm:.3f}"
        lines.append(f"| {r.learner} | {r.extraction} | {r.model} | {r.metric} | {r.trained:.3f} | {r.untrained:.3f} | "
                     f"{r.estimate:+.3f} | {r.ci_low:+.3f} to {r.ci_high:+.3f} | {r.p:.3f} | {r.p_sign_flip:.3f} | "
                     f"{holm} | {r.seeds_up} of {r.seeds} | {r.verdict} |")
    return lines


def model_contrast_markdown(table: pd.DataFrame, registered_only: bool = True) -> list[str]:
    """E2 as a markdown table (the README's): one row per point, decoder and comparison space."""
    rows = table[table["p_holm"].notna()] if registered_only else table
    lines = ["| point | decoder | versus | decoder's score | versus's score | difference | 95% interval | p | "
             "p (Holm) | seeds up | verdict | interval excludes 0 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows.itertuples():
        holm = "" if np.isnan(r.p_holm) else f"{r.p_holm:.3f}"
        lines.append(f"| {r.extraction} | {r.model} | {r.versus} | {r.model_score:.3f} | {r.versus_score:.3f} | "
                     f"{r.estimate:+.3f} | {r.ci_low:+.3f} to {r.ci_high:+.3f} | {r.p:.4f} | {holm} | "
                     f"{r.seeds_up} of {r.seeds} | {r.verdict} | {'yes' if r.interval_excludes_zero else 'no'} |")
    return lines


def verdict_lines(training_effect: pd.DataFrame, model_contrasts: pd.DataFrame) -> list[str]:
    """The registered tests in sentences (markdown bullets): per point, which E1 and E2 rows were
    decided (Holm-adjusted p < 0.05) and in which direction, and how many were not decided."""
    lines = []
    for name, table, what in (("E1", training_effect, "trained vs its own untrained twin"),
                              ("E2", model_contrasts, "decoder vs comparison space")):
        reg = table[table["p_holm"].notna()]
        if reg.empty:
            lines.append(f"- **{name}** ({what}): no registered row (the primary learner or points are missing).")
            continue
        for point, g in reg.groupby("extraction", sort=False):
            decided = g[g["p_holm"] < ALPHA]
            said = "; ".join(f"{r.model}{' vs ' + r.versus if name == 'E2' else ''} {r.estimate:+.3f} "
                             f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}], Holm p {r.p_holm:.3f}"
                             + ("" if r.interval_excludes_zero else " (interval contains 0)")
                             for r in decided.itertuples())
            lines.append(f"- **{name} at `{point}`** ({what}): {len(decided)} of {len(g)} decided"
                         + (f": {said}" if said else "") + ".")
    return lines
