"""The final evaluation of a training run, as its own cached step.

A finished run's folder holds the evaluation played when it finished: greedy and sampled
success per level on ``final_eval_episodes`` fresh test layouts per level (the ``test`` stream
of :mod:`alignnb.core.streams`), recorded in its ``meta.json``. The number of episodes does not
shape the weights, so it is not part of the run's key; instead an evaluation is keyed by
(run key, episodes, stream):

- a run whose ``meta.json`` records the asked number serves its own evaluation;
- any other number is played once and cached in ``<data>/evaluations/<key>/``::

      metrics.json       greedy and sampled success per level, episodes, run key, versions
      eval_episodes.csv  the greedy evaluation, one row per episode

So ``-p eval_episodes 100``, or a sweep over it, gets the evaluation it asks for without
training again, and the existing 500-episode runs stay valid.

Light at import (no torch): the study's settings compute :func:`evaluation_key`; playing the
episodes imports the rollouts when it happens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from alignnb.core import cache, compute, paths, streams

if TYPE_CHECKING:  # pragma: no cover
    from alignnb.agents.checkpoints import TrainedAgent

#: Format of an evaluation folder; part of its key.
EVAL_FORMAT = 1
#: The modes played: greedy (arg-max actions; its episodes are kept) and sampled.
MODES = ("greedy", "sampled")


def evaluation_inputs(run_key: str, episodes: int, seed: int) -> dict[str, Any]:
    """Everything that determines a run's final evaluation: the run, the episodes per level and
    the layout stream (``test``, from the run's seed)."""
    if int(episodes) < 1:
        raise ValueError(f"an evaluation needs at least 1 episode per level, got {episodes}")
    return {"format": EVAL_FORMAT, "run": str(run_key), "episodes": int(episodes), "stream": "test",
            "seed": streams.check_seed(seed), "modes": list(MODES)}


def evaluation_key(run_key: str, episodes: int, seed: int) -> str:
    """Cache key of the final evaluation of run ``run_key`` (trained from ``seed``) on ``episodes`` per level."""
    return cache.key_of("evaluation", evaluation_inputs(run_key, episodes, seed))


def evaluation_dir(key: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the evaluation with cache key ``key`` (it may not exist yet)."""
    return paths.data_dir(data_dir) / "evaluations" / key


def play(agent: Any, levels: list[str], episodes: int, seed: int,
         progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(greedy table, sampled table, greedy per-episode table) of ``agent`` on the test layouts.

    The one computation of a final evaluation: a finishing run and this step both call it.
    """
    from alignnb.agents.rollouts import evaluate  # torch: only when playing

    greedy, per_episode = evaluate(agent, levels, episodes, seed=seed, greedy=True, progress=progress)
    sampled, _ = evaluate(agent, levels, episodes, seed=seed, greedy=False, progress=progress)
    return greedy, sampled, per_episode


def recorded_episodes(run: TrainedAgent) -> int | None:
    """The episodes per level of the evaluation a run recorded when it finished."""
    value = run.meta.get("params", {}).get("final_eval_episodes")
    return None if value is None else int(value)


def evaluated(run: TrainedAgent, episodes: int, data_dir: str | os.PathLike | None = None,
              progress: bool = False, must_exist: bool = False) -> TrainedAgent:
    """``run`` with its final evaluation on ``episodes`` episodes per level.

    ``success_table()`` and ``episodes`` of the result are that evaluation: the run's own when
    it recorded as many episodes, else the cached evaluation step (played with the run's
    thread count). ``meta["evaluation"]`` says which. With ``must_exist`` a missing evaluation
    is an error instead of being played.
    """
    episodes = int(episodes)
    params = run.meta["params"]
    key = evaluation_key(run.path.name, episodes, params["seed"])
    if recorded_episodes(run) == episodes:
        return replace(run, meta={**run.meta, "evaluation": {"episodes": episodes, "key": key, "source": str(run.path)}})
    made = cache.cached(
        "evaluation", evaluation_inputs(run.path.name, episodes, params["seed"]),
        build=lambda inputs: _build(inputs, run, progress), load=_load, write=_write,
        path=lambda k: evaluation_dir(k, data_dir), what="cached evaluation",
        must_exist=(f"the run {run.path} has no evaluation on {episodes} episodes per level yet: rerun "
                    f"notebooks/02_train_agent.ipynb with eval_episodes={episodes}") if must_exist else "")
    metrics = {**run.meta.get("metrics", {}), **{mode: made["metrics"][mode] for mode in MODES}}
    meta = {**run.meta, "metrics": metrics,
            "evaluation": {"episodes": episodes, "key": key, "source": str(evaluation_dir(key, data_dir))}}
    return replace(run, meta=meta, episodes=made["episodes"])


def is_available(run: TrainedAgent, episodes: int, data_dir: str | os.PathLike | None = None) -> bool:
    """True when :func:`evaluated` has the evaluation without playing (recorded, or cached and readable)."""
    if recorded_episodes(run) == int(episodes):
        return True
    path = evaluation_dir(evaluation_key(run.path.name, episodes, run.meta["params"]["seed"]), data_dir)
    try:
        _load(path)
    except (FileNotFoundError, cache.CorruptCache):
        return False
    return True


def _build(inputs: Mapping[str, Any], run: TrainedAgent, progress: bool) -> dict[str, Any]:
    if inputs["run"] != run.path.name:
        raise ValueError(f"the evaluation of run {inputs['run']} was asked of run {run.path.name}")
    t0 = time.perf_counter()
    threads = run.meta.get("torch_threads") or run.meta["params"]["train"].get("threads", 1)
    with compute.torch_threads(threads):  # the run's own thread count, as when it finished
        greedy, sampled, per_episode = play(run.agent, list(run.meta["params"]["levels"]), inputs["episodes"],
                                            inputs["seed"], progress)
    return {"metrics": {"greedy": greedy.to_dict("records"), "sampled": sampled.to_dict("records"),
                        "episodes": inputs["episodes"], "run": inputs["run"], "stream": inputs["stream"],
                        "seed": inputs["seed"], "seconds": round(time.perf_counter() - t0, 1),
                        "torch_threads": int(threads), "versions": paths.versions()},
            "episodes": per_episode}


def _write(made: dict[str, Any], path: Path) -> None:
    with cache.atomic_dir(path, overwrite=True) as tmp:  # under the step's lock: what is there is damaged
        made["episodes"].to_csv(tmp / "eval_episodes.csv", index=False)
        cache.write_json(tmp / "metrics.json", made["metrics"])


def _load(path: Path) -> dict[str, Any]:
    if not (path / "metrics.json").exists():
        raise FileNotFoundError(f"no evaluation at {path}")
    fix = f"delete the folder (rm -r {path}) and rerun notebooks/02_train_agent.ipynb"
    metrics = cache.read_json(path / "metrics.json", fix)
    try:
        episodes = pd.read_csv(path / "eval_episodes.csv")
        if any(mode not in metrics for mode in MODES):
            raise KeyError(f"metrics.json lacks one of {MODES}")
    except (OSError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise cache.CorruptCache(path, f"{type(exc).__name__}: {exc}", fix) from exc
    return {"metrics": metrics, "episodes": episodes}
