"""When behavioral cloning stops: the success goals per level and the stopping rule.

Training stops when the last ``goal_checks`` success checks on validation layouts meet the
learner's goals (:func:`alignnb.collect.levels.goals`) (and, if ``stop_margin`` is set, their
pooled rate beats each goal by it; the study sets none), or at the most steps (:func:`stop_reason`).
"""

from __future__ import annotations

import numpy as np

from alignnb.agents.recipes import TrainConfig
from alignnb.collect import levels as level_table


def goals_met(rates: dict[str, float], goals: dict[str, float] | None = None, learner: str = "transformer") -> bool:
    """True when every level that ``rates`` scores meets its goal; an empty ``rates`` is not a success.

    ``goals`` default to ``learner``'s in the level table (:func:`alignnb.collect.levels.goals`);
    a level without a goal is an error there, never a silent default.
    """
    goals = level_table.goals(list(rates), learner) if goals is None else goals
    return bool(rates) and all(rate >= goals[level] for level, rate in rates.items())


def margin_goals(goals: dict[str, float], margin: float = 0.01) -> dict[str, float]:
    """Each goal raised by ``margin``, but by at most half its distance to 1 (0.99 -> 0.995, 0.97 -> 0.98)."""
    return {level: min(g + margin, (1 + g) / 2) for level, g in goals.items()}


def stop_reason(history: list[dict], tc: TrainConfig, goals: dict[str, float] | None = None,
                learner: str = "transformer") -> str | None:
    """Why training should stop after the last row of ``history`` (``None``: go on).

    ``history`` rows are those of a run's log: ``step`` and, at a success check, one
    ``success/<level>`` column per level. Stops when the last ``tc.goal_checks`` checks each
    meet the goals (``tc.goal`` for every level if set, else ``goals``, else ``learner``'s in the
    level table), their mean rate per level also meets :func:`margin_goals` (``tc.stop_margin``),
    and the last is at or after ``tc.min_steps``; or at ``tc.steps``.

    The optional margin was added because a check of 200 episodes per level has a standard
    error of about 0.012 at a rate of 0.97, so two checks may graze a goal that the 500 test
    episodes then miss. In the study's runs no agent ever met it, so it only cost time; the
    study's recipe has none (``stop_margin=0``).
    """
    if not history:
        return None
    scored = sorted({k[8:] for r in history for k in r if k.startswith("success/")})
    if tc.goal:
        goals = {level: tc.goal for level in scored}
    elif goals is None:
        goals = level_table.goals(scored, learner)
    step = history[-1]["step"]
    if step >= tc.steps:
        return "max steps"
    if not tc.goal_checks or step < tc.min_steps:
        return None
    checks = [r for r in history if any(k.startswith("success/") for k in r)]
    if len(checks) < tc.goal_checks or checks[-1] is not history[-1]:
        return None
    recent = [{k[8:]: v for k, v in r.items() if k.startswith("success/")} for r in checks[-tc.goal_checks:]]
    pooled = {level: float(np.mean([r[level] for r in recent])) for level in recent[-1]}
    if all(goals_met(r, goals) for r in recent) and (
            not tc.stop_margin or goals_met(pooled, margin_goals(goals, tc.stop_margin))):
        return f"goals met on validation layouts at {tc.goal_checks} consecutive checks"
    return None
