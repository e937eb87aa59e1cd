"""How competent each trained agent is: its final success per level beside its goal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from alignnb.collect import levels as level_table

#: The columns of the study's table ``agent_success.csv`` (one row per agent and level).
SUCCESS_COLUMNS = ["learner", "seed", "level", "success_rate", "episodes"]


def success_table(runs: Mapping[tuple[str, int], Any], mode: str = "greedy") -> pd.DataFrame:
    """One row per (learner, seed, level): the final success rate on the test episodes, the
    number of episodes, the learner's goal on that level (:mod:`alignnb.collect.levels`) and
    whether it is met. ``runs`` is {(learner, seed): a trained run} as stage 2 returns it."""
    rows = [run.success_table(mode).assign(learner=learner, seed=seed) for (learner, seed), run in runs.items()]
    table = pd.concat(rows, ignore_index=True)[SUCCESS_COLUMNS]
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
