"""How competent each trained agent is: its final success per level beside its goal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from alignnb.collect import levels as level_table

#: The columns of the study's table ``agent_success.csv`` (one row per agent and level).
SUCCESS_COLUMNS = ["learner", "seed", "level", "success_rate", "episodes", "ci_low", "ci_high"]


def wilson_interval(successes: int, episodes: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a success rate (scipy's ``binomtest(...).proportion_ci``)."""
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(episodes)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def success_table(runs: Mapping[tuple[str, int], Any], mode: str = "greedy") -> pd.DataFrame:
    """One row per (learner, seed, level): the final success rate on the test episodes, the
    number of episodes, its Wilson 95% interval (``ci_low``, ``ci_high``), the learner's goal on that level (:mod:`alignnb.collect.levels`) and
    whether it is met. ``runs`` is {(learner, seed): a trained run} as stage 2 returns it."""
    rows = [run.success_table(mode).assign(learner=learner, seed=seed) for (learner, seed), run in runs.items()]
    table = pd.concat(rows, ignore_index=True)
    cis = [wilson_interval(round(rate * n), n) for rate, n in zip(table["success_rate"], table["episodes"])]
    table["ci_low"], table["ci_high"] = [round(c[0], 4) for c in cis], [round(c[1], 4) for c in cis]
    table = table[SUCCESS_COLUMNS]
    table["goal"] = [level_table.goal_of(level, learner) for learner, level in zip(table["learner"], table["level"])]
    table["met"] = table["success_rate"] >= table["goal"]
    return table


def goal_table(learners: list[str], levels: list[str]) -> dict[str, dict[str, float]]:
    """{learner: {level: goal}} for drawing the goals beside the rates."""
    return {learner: level_table.goals(levels, learner) for learner in learners}


def missed(table: pd.DataFrame) -> list[tuple[str, int]]:
    """The (learner, seed) of every agent that misses a goal on some level (reported, never dropped)."""
    bad = table[~table["met"]]
    return sorted({(str(learner), int(seed)) for learner, seed in zip(bad["learner"], bad["seed"])})


#: The location phrases of BabyAI's Loc levels: they refer to where the agent started.
LOCATION_PHRASES = ("in front of you", "behind you", "on your left", "on your right")
#: The columns of ``agent_training.csv`` (no timings: the table is the same on every machine).
TRAINING_COLUMNS = ["learner", "seed", "steps", "stop_reason", "steps_to_goals", "val_accuracy", "val_loss",
                    "test_failures", "failures_with_location"]


def steps_to_goals(history: pd.DataFrame, goals: Mapping[str, float]) -> int | None:
    """The first success check (step) on validation layouts at which every level met its goal, or None.

    The history's last success row is the final test evaluation (:mod:`alignnb.agents.train`
    appends it at the last step), not a check: it is left out."""
    cols = {f"success/{lv}": g for lv, g in goals.items()}
    if not set(cols) <= set(history.columns):
        return None
    checks = history.dropna(subset=list(cols)).iloc[:-1]
    met = checks[[all(row[c] >= g for c, g in cols.items()) for _, row in checks.iterrows()]]
    return int(met["step"].iloc[0]) if len(met) else None


def training_table(runs: Mapping[tuple[str, int], Any]) -> pd.DataFrame:
    """One row per agent: its steps, why it stopped, the first check that met its goals, its
    final teacher-forced validation accuracy and loss, and its failed test episodes, with how
    many of them have a location phrase (``LOCATION_PHRASES``)."""
    rows = []
    for (learner, seed), run in runs.items():
        m = run.meta["metrics"]
        levels = list(run.meta["params"]["levels"])
        ep = run.episodes if run.episodes is not None else pd.DataFrame({"success": [], "mission": []})
        failed = ep[~ep["success"].astype(bool)]
        located = failed["mission"].str.contains("|".join(LOCATION_PHRASES), regex=True)
        hit = steps_to_goals(run.history, level_table.goals(levels, learner))
        rows.append({"learner": learner, "seed": seed, "steps": int(m["steps"]), "stop_reason": m["stop_reason"],
                     "steps_to_goals": hit if hit is not None else pd.NA, "val_accuracy": round(m["val_accuracy"], 4),
                     "val_loss": round(m["val_loss"], 4), "test_failures": len(failed),
                     "failures_with_location": int(located.sum())})
    return pd.DataFrame(rows, columns=TRAINING_COLUMNS)
