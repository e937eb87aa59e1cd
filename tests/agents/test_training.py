"""Stage 2's recipe: early stopping on validation success checks, resuming, agents side by side."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch

import os

from alignnb.agents import jobs
from alignnb.core.engines import InProcess, Processes
from alignnb.agents import checkpoints, competence, train
from alignnb.collect import levels
from support import CHECKED_RECIPE, LEVELS, SMALL

GOALS = levels.goals(levels.DEFAULT_LEVELS, "transformer")


def _check(step: int, rates: dict[str, float]) -> dict:
    return {"step": step, **{f"success/{lv}": r for lv, r in rates.items()}}


def _rates(ok: bool) -> dict[str, float]:
    """Rates that pass the stopping rule (the goals plus its margin), or that miss every goal."""
    return train.margin_goals(GOALS) if ok else {lv: goal - 0.02 for lv, goal in GOALS.items()}


def test_two_checks_that_graze_the_goals_do_not_stop_training():
    tc = train.TrainConfig(steps=5000, check_every=500, min_steps=1500, goal_checks=2, stop_margin=0.01)
    assert train.TrainConfig().stop_margin == 0.0  # the study's rule: no margin
    assert train.margin_goals(GOALS)["BabyAI-PickupLoc-v0"] == pytest.approx(0.98)
    assert train.margin_goals(GOALS)["BabyAI-GoToLocal-v0"] == pytest.approx(0.995)  # half the gap to 1
    graze = [_check(1500, GOALS), _check(2000, GOALS)]  # each check meets the goals, exactly
    assert train.stop_reason(graze, tc) is None
    assert train.stop_reason(graze, replace(tc, stop_margin=0.0)).startswith("goals met")
    # the margin is on the pooled rate: 0.97 then 0.99 on PickupLoc pools to 0.98 and stops
    seed_like = [_check(1500, {**train.margin_goals(GOALS), "BabyAI-PickupLoc-v0": 0.97}),
                 _check(2000, {**train.margin_goals(GOALS), "BabyAI-PickupLoc-v0": 0.99})]
    assert train.stop_reason(seed_like, tc).startswith("goals met")
    # but a check below a goal never stops, whatever the pooled rate
    below = [_check(1500, {**train.margin_goals(GOALS), "BabyAI-PickupLoc-v0": 0.96}),
             _check(2000, {**train.margin_goals(GOALS), "BabyAI-PickupLoc-v0": 1.0})]
    assert train.stop_reason(below, tc) is None


def test_goals_met_is_per_level():
    assert train.goals_met(_rates(True))
    assert not train.goals_met(_rates(False))
    almost = {**_rates(True), "BabyAI-PickupLoc-v0": 0.969}
    assert not train.goals_met(almost)
    assert not train.goals_met({})  # nothing scored is not a success
    with pytest.raises(ValueError, match="BabyAI-Other-v0.*has no success goals"):  # never a silent 0.95
        train.goals_met({"BabyAI-Other-v0": 0.95})
    assert train.goals_met({"BabyAI-Other-v0": 0.95}, {"BabyAI-Other-v0": 0.95})


def test_stop_reason_on_a_synthetic_validation_curve():
    tc = train.TrainConfig(steps=5000, check_every=500, min_steps=1500, goal_checks=2)
    curve = {500: False, 1000: True, 1500: False, 2000: True, 2500: True, 3000: True}
    history: list[dict] = []
    stops = []
    for step in range(100, 3100, 100):
        history.append(_check(step, _rates(curve[step])) if step in curve else {"step": step, "train_loss": 0.1})
        if train.stop_reason(history, tc):
            stops.append(step)
    # 1000 passes alone (and is before min_steps); 2000 is the first pass after a fail; 2500 the second in a row
    assert stops[0] == 2500 and "goals met" in train.stop_reason(history[:25], tc)
    # one check is enough with goal_checks=1, but never before min_steps
    one = replace(tc, goal_checks=1)
    assert [s for s in curve if train.stop_reason([h for h in history if h["step"] <= s], one)] == [2000, 2500, 3000]
    # without early stopping only the last step stops
    never = replace(tc, goal_checks=0)
    assert train.stop_reason(history, never) is None
    assert train.stop_reason(history + [{"step": 5000}], never) == "max steps"
    # a row after the check (no check of its own) does not repeat the decision
    assert train.stop_reason(history[:25] + [{"step": 2600, "train_loss": 0.1}], tc) is None


def _fake_checks(monkeypatch, passing_from: int, seed: int, interrupt_at: int | None = None):
    """Success checks follow a synthetic curve: the goals are met from step ``passing_from`` on."""
    real = train.evaluate

    def evaluate(agent, levels, episodes, seed=0, stream="test", step=0, **kw):
        if stream != "checks":  # the final test: real episodes
            return real(agent, levels, episodes, seed=seed, stream=stream, step=step, **kw)
        assert seed == base  # a check's layouts are the checks stream of the run's seed
        if interrupt_at is not None and step == interrupt_at:
            raise KeyboardInterrupt
        rates = {lv: (1.0 if step >= passing_from else 0.5) for lv in levels}
        table = pd.DataFrame({"level": levels, "success_rate": [rates[lv] for lv in levels],
                              "episodes": episodes, "mean_length": 5.0})
        return table, pd.DataFrame()

    base = seed
    monkeypatch.setattr(train, "evaluate", evaluate)


RECIPE = CHECKED_RECIPE


def test_training_stops_when_validation_checks_meet_the_goals(small_demos, data_root, monkeypatch):
    _fake_checks(monkeypatch, passing_from=30, seed=3)
    run = train.train_agent(small_demos, SMALL, RECIPE, seed=3, data_dir=data_root, final_eval_episodes=2,
                            progress=False)
    m = run.meta["metrics"]
    assert m["steps"] == 40 and m["stop_reason"].startswith("goals met")
    checks = run.history.dropna(subset=[f"success/{LEVELS[0]}"])
    assert list(checks["step"])[:-1] == [10, 20, 30, 40]  # checks from min_steps - check_every; the last row is the test
    assert run.meta["torch_threads"] == RECIPE.threads == 1
    assert run.meta["numerics"] == "avx2" and run.meta["cpu_capability"] == "AVX2"
    # the weights at every check are kept, step 0 being the untrained twin
    kept = checkpoints.training_checkpoints(run.path)
    assert list(kept) == [0, 10, 20, 30, 40]
    at_check = checkpoints.load_agent(kept[max(kept)])
    assert not all(torch.equal(a, b) for a, b in zip(at_check.state_dict().values(),
                                                      checkpoints.load_agent(kept[0]).state_dict().values()))
    # the first check that met every goal, from the checks alone (never the final test row)
    assert competence.steps_to_goals(run.history, {lv: 0.9 for lv in LEVELS}) == 30


def test_the_snapshots_along_training_are_the_kept_checks_with_their_success(small_demos, data_root, monkeypatch):
    """E3's snapshots of a run: its twin, each kept check (with that check's success) and its end."""
    import numpy as np

    from alignnb.collect.instructions import sentence_set_from_demos
    from alignnb.extract import points
    from alignnb.run import stages

    _fake_checks(monkeypatch, passing_from=30, seed=3)
    run = train.train_agent(small_demos, SMALL, RECIPE, seed=3, data_dir=data_root, final_eval_episodes=2,
                            progress=False)  # the run of the stopping test (cached)
    sentences = sentence_set_from_demos(small_demos)
    probes = points.probe_states(LEVELS, 1, seed=3)
    sets, rows = stages.snapshots_of(run, "transformer", 3, sentences, probes, 2, data_root, compute=True)
    steps = pd.DataFrame(rows).set_index("snapshot")
    assert list(steps.index) == ["untrained", "step 10", "step 20", "step 30", "step 40", "final"]
    assert list(steps["step"]) == [0, 10, 20, 30, 40, 40]
    assert np.isnan(steps.loc["untrained", "success"])
    assert steps.loc["step 20", "success"] == 0.5 and steps.loc["step 30", "success"] == 1.0  # the fake checks'
    assert steps.loc["final", "success"] == pytest.approx(run.success_table()["success_rate"].mean())
    assert steps.loc["final", "success_source"] == "test (2 episodes per level)"
    # the run stopped at its check of step 40: that check's weights are the final agent's
    for x in ("embedding", "film", "behaviour"):
        np.testing.assert_array_equal(sets[("transformer", 3, "step 40", x)].vectors,
                                      sets[("transformer", 3, "final", x)].vectors)
    assert not np.array_equal(sets[("transformer", 3, "step 10", "embedding")].vectors,
                              sets[("transformer", 3, "untrained", "embedding")].vectors)
    assert sets[("transformer", 3, "step 20", "film")].meta["snapshot"] == "step 20"


def test_an_interrupted_run_resumes_bit_for_bit(small_demos, data_root, tmp_path, monkeypatch):
    """Interrupted at a check after its checkpoint, resumed in a new call: the same weights and log."""
    _fake_checks(monkeypatch, passing_from=60, seed=4)
    whole = train.train_agent(small_demos, SMALL, RECIPE, seed=4, data_dir=tmp_path / "a", final_eval_episodes=2,
                              progress=False)
    assert whole.meta["metrics"]["steps"] == 70
    _fake_checks(monkeypatch, passing_from=60, seed=4, interrupt_at=50)
    with pytest.raises(KeyboardInterrupt):
        train.train_agent(small_demos, SMALL, RECIPE, seed=4, data_dir=tmp_path / "b", final_eval_episodes=2,
                          progress=False)
    state = torch.load(next((tmp_path / "b" / "agents").iterdir()) / "state.pt", weights_only=True)
    assert state["step"] == 40
    _fake_checks(monkeypatch, passing_from=60, seed=4)
    resumed = train.train_agent(small_demos, SMALL, RECIPE, seed=4, data_dir=tmp_path / "b", final_eval_episodes=2,
                                progress=False)
    for name, p in whole.agent.state_dict().items():
        assert torch.equal(resumed.agent.state_dict()[name], p), name
    cols = [c for c in whole.history.columns if c != "seconds"]  # the log too, wall-clock times aside
    assert "val_loss" in cols and f"success/{LEVELS[0]}" in cols
    pd.testing.assert_frame_equal(resumed.history[cols], whole.history[cols])


def test_agents_side_by_side_equal_agents_one_after_the_other(small_demos, tmp_path):
    tc = replace(RECIPE, steps=30, check_every=0, goal_checks=0)
    todo = [jobs.TrainJob(str(small_demos.path), SMALL, tc, seed, final_eval_episodes=2) for seed in (0, 1)]
    assert Processes().workers_for([j.train_config.threads for j in todo]) == min(2, os.cpu_count())
    apart = jobs.train_all(todo, tmp_path / "parallel", engine=Processes(workers=2), progress=True)
    after = jobs.train_all(todo, tmp_path / "sequential", engine=InProcess(), progress=False)
    for a, b in zip(apart, after):
        assert a.path.name == b.path.name and a.meta["torch_threads"] == 1
        for name, p in a.agent.state_dict().items():
            assert torch.equal(b.agent.state_dict()[name], p), name
    assert any(not torch.equal(p, q) for p, q in zip(apart[0].agent.parameters(), apart[1].agent.parameters()))
    # cached: a second call trains nothing and returns the same runs
    class Refuses(InProcess):
        def map(self, *args, **kwargs):
            raise AssertionError("a cached run was handed to the engine")

    again = jobs.train_all(todo, tmp_path / "parallel", engine=Refuses(), progress=False)
    assert [r.path for r in again] == [r.path for r in apart]


def test_missing_runs_are_scheduled_longest_first(small_demos, tmp_path):
    """The engine gets the missing jobs longest first (steps x threads), so no core idles at the end."""
    short, long = replace(RECIPE, steps=20), replace(RECIPE, steps=60, threads=1)
    todo = [jobs.TrainJob(str(small_demos.path), SMALL, short, 0, 2), jobs.TrainJob(str(small_demos.path), SMALL, long, 1, 2)]
    seen = []

    class Records(InProcess):
        def map(self, fn, tasks, **kwargs):
            seen.extend(t.seed for t in tasks)
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        jobs.train_all(todo, tmp_path, engine=Records(), progress=False)
    assert seen == [1, 0]


def test_thread_count_is_part_of_the_recipe(small_demos):
    from alignnb.agents import checkpoints

    one, two = RECIPE, replace(RECIPE, threads=2)
    assert checkpoints.run_key(small_demos.key, SMALL, one, 0) != checkpoints.run_key(small_demos.key, SMALL, two, 0)
    with pytest.raises(ValueError, match="threads"):
        train.TrainConfig(threads=0)
    with pytest.raises(ValueError, match="check_every"):
        train.TrainConfig(check_every=0, goal_checks=2)
