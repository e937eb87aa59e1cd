"""The BabyAI levels of the study: one table of each level's mission grammar and success goals.

A level that the study trains on needs an entry in :data:`LEVELS` with a goal for every
learner: :func:`goal_of` raises for a missing one instead of assuming a default. Any other
BabyAI level id of the installed minigrid may still be collected and parsed (:func:`check_levels`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI levels with gymnasium)



@dataclass(frozen=True)
class Level:
    """One BabyAI level of the study: its id, what its missions say, and each learner's goal.

    ``goals`` maps a learner's name to the greedy success rate it should reach on the final
    500 fresh test episodes of this level (the stopping rule checks the same goals on
    validation layouts during training). ``missions`` is the number of distinct missions the
    level's generator says, counted by a full collection (``figures/instruction_inventory.csv``;
    a test keeps the two equal): a study's sentence set can be no larger than their sum, which is
    known before anything is collected.
    """

    id: str
    grammar: str
    goals: dict[str, float] = field(default_factory=dict)
    missions: int | None = None


LEVELS: dict[str, Level] = {lv.id: lv for lv in [
    Level("BabyAI-GoToLocal-v0", "go to the|a [colour] OBJECT",
          {"transformer": 0.99, "gru-film-lstm": 0.95}, missions=36),
    Level("BabyAI-PickupLoc-v0", "pick up the|a [colour] OBJECT [in front of you|behind you|on your left|right]",
          {"transformer": 0.97, "gru-film-lstm": 0.95}, missions=210),
    Level("BabyAI-OpenDoorLoc-v0", "open the|a [colour] door [location]",
          {"transformer": 0.97, "gru-film-lstm": 0.95}, missions=8),
    Level("BabyAI-PutNextLocal-v0", "put the|a [colour] OBJECT next to the|a [colour] OBJECT",
          {"transformer": 0.95, "gru-film-lstm": 0.95}, missions=306),
]}

#: The four levels of the study, in notebook order.
DEFAULT_LEVELS: tuple[str, ...] = tuple(LEVELS)


def most_missions(levels: Sequence[str]) -> int | None:
    """The largest sentence set that ``levels`` can give (the sum of their :attr:`Level.missions`),
    or None when a level's count is not known (then only a collection tells)."""
    counts = [LEVELS[lv].missions if lv in LEVELS else None for lv in levels]
    return None if any(c is None for c in counts) else sum(counts)


def goal_of(level: str, learner: str) -> float:
    """The success goal of ``learner`` on ``level``; a level or learner without one is an error."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r} has no success goals: add a Level entry to alignnb.collect.levels.LEVELS "
                         f"(the study's levels are {list(LEVELS)})")
    goals = LEVELS[level].goals
    if learner not in goals:
        raise ValueError(f"level {level!r} has no success goal for learner {learner!r}: add it to "
                         f"alignnb.collect.levels.LEVELS (it has goals for {sorted(goals)})")
    return goals[learner]


def goals(levels: Sequence[str], learner: str) -> dict[str, float]:
    """{level: goal of ``learner``} for ``levels``."""
    return {level: goal_of(level, learner) for level in levels}


def uniform_goal(levels: Sequence[str], learner: str) -> float:
    """The goal ``learner`` has on every one of ``levels`` if it is the same everywhere, else 0.0
    (then the per-level table applies). A training recipe records it as ``TrainConfig.goal``."""
    values = set(goals(levels, learner).values())
    return values.pop() if len(values) == 1 else 0.0


def babyai_level_ids() -> list[str]:
    """All BabyAI level ids registered by the installed minigrid."""
    return sorted(k for k in gym.registry if k.startswith("BabyAI-"))


def check_levels(levels: list[str] | tuple[str, ...]) -> list[str]:
    """Return ``levels`` as a list, or raise ``ValueError`` naming close matches of unknown ids."""
    if isinstance(levels, str):
        levels = [levels]
    levels = list(levels)
    if not levels:
        raise ValueError("no levels given: pass at least one BabyAI level id, e.g. 'BabyAI-GoToLocal-v0'")
    known = babyai_level_ids()
    for level in levels:
        if level not in known:
            close = difflib.get_close_matches(level, known, n=4, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown BabyAI level {level!r}.{hint} (alignnb.collect.levels.babyai_level_ids() lists all)")
    if len(set(levels)) != len(levels):
        raise ValueError(f"levels contain duplicates: {levels}")
    return levels
