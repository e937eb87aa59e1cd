"""Competence tables: Wilson intervals, the success table's goals, the training summary."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from alignnb.agents import competence


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval written out (Wilson 1927)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(485, 500), (500, 500), (0, 10), (7, 10), (1, 3)])
def test_wilson_interval_matches_its_formula(k, n):
    assert competence.wilson_interval(k, n) == pytest.approx(_wilson(k, n), abs=1e-9)


def _run(rates: dict[str, float], history: pd.DataFrame, failed_missions: list[str]) -> SimpleNamespace:
    n = 10
    table = pd.DataFrame({"level": list(rates), "success_rate": list(rates.values()), "episodes": n})
    episodes = pd.DataFrame({"success": [False] * len(failed_missions) + [True], "mission": failed_missions + ["go"]})
    return SimpleNamespace(success_table=lambda mode="greedy": table, history=history, episodes=episodes,
                           meta={"metrics": {"steps": 30, "stop_reason": "max steps", "val_accuracy": 0.91234,
                                             "val_loss": 0.2}, "params": {"levels": list(rates)}})


def test_success_table_carries_goals_and_intervals_and_the_training_table_counts_location_failures():
    levels = ["BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0"]
    history = pd.DataFrame({"step": [10, 20, 30], f"success/{levels[0]}": [0.9, 1.0, 1.0],
                            f"success/{levels[1]}": [0.5, 0.98, 0.99]})
    run = _run({levels[0]: 1.0, levels[1]: 0.9}, history, ["pick up the ball behind you", "pick up a key"])
    table = competence.success_table({("transformer", 0): run})
    assert list(table["met"]) == [True, False]  # PickupLoc's goal is 0.97
    assert table.loc[1, "ci_low"] == pytest.approx(_wilson(9, 10)[0], abs=1e-4)
    assert competence.missed(table) == [("transformer", 0)]
    training = competence.training_table({("transformer", 0): run})
    row = training.iloc[0]
    assert (row["steps_to_goals"], row["test_failures"], row["failures_with_location"]) == (20, 2, 1)
    # the last success row of a history is the final test, never a check
    assert competence.steps_to_goals(history.iloc[[0, 2]], {levels[0]: 0.99, levels[1]: 0.97}) is None
