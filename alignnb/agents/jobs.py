"""Several training runs at once: each missing run is one task of the engine the caller passes.

For models this small, two single-thread processes on 2 cores train more frames per second
than one process with 2 threads (``benchmarks/bench_train.py`` measures it). A run's bits
depend on its thread count, which is part of its recipe (:class:`alignnb.agents.recipes.TrainConfig`
``threads``), its cache key and its ``meta.json``; so the same agents come out whichever
engine trains them, side by side or one after the other (``tests/test_engine.py``).

Finished runs are loaded from the cache in this process; only missing ones become tasks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignnb.agents import evaluation
from alignnb.agents.checkpoints import TrainedAgent, is_finished, load_run, run_dir, run_key
from alignnb.agents.learners import learner_of
from alignnb.agents.recipes import TrainConfig
from alignnb.agents.train import train_agent
from alignnb.collect import demos
from alignnb.core.cache import CorruptCache
from alignnb.core.engines import Engine, Processes, Report


@dataclass(frozen=True)
class TrainJob:
    """One training run: the demonstrations (folder and key), the recipe and the seed."""

    demos_path: str
    agent_config: Any  # a learner's configuration (alignnb.agents.learners)
    train_config: TrainConfig
    seed: int
    final_eval_episodes: int = 500

    @property
    def demos_key(self) -> str:
        """The data set's cache key: the name of its folder (no need to load it)."""
        return Path(self.demos_path).name

    @property
    def key(self) -> str:
        """The run's cache key (:func:`alignnb.agents.checkpoints.run_key`, the one derivation)."""
        return run_key(self.demos_key, self.agent_config, self.train_config, self.seed)

    @property
    def label(self) -> str:
        return f"{learner_of(self.agent_config)}, seed {self.seed}"


def train_job(job: TrainJob, report: Report = None, data_dir: str | None = None) -> str:
    """Train (or load) one run; its folder. A task of :func:`train_all` (picklable, top level)."""
    run = train_agent(demos.load_demos(job.demos_path), job.agent_config, job.train_config, job.seed,
                      data_dir=data_dir, final_eval_episodes=job.final_eval_episodes, progress=False, report=report)
    return str(run.path)


@dataclass(frozen=True)
class _InDataDir:
    """``train_job`` bound to a data folder (a picklable callable for the engines)."""

    data_dir: str | None

    def __call__(self, job: TrainJob, report: Report = None) -> str:
        return train_job(job, report, self.data_dir)


def _done(job: TrainJob, data_dir: str | None) -> bool:
    """True for a finished run that loads and has its evaluation on the job's episodes; a damaged
    run is trained again, a missing evaluation played (train_agent does both)."""
    path = run_dir(job.key, data_dir)
    if not is_finished(path):
        return False
    try:
        run = load_run(path)
    except CorruptCache:
        return False
    return evaluation.is_available(run, job.final_eval_episodes, data_dir)


def train_all(jobs: list[TrainJob], data_dir: str | os.PathLike | None = None, engine: Engine | None = None,
              progress: bool = True) -> list[TrainedAgent]:
    """Train ``jobs`` (cached runs are loaded) as tasks of ``engine``; the runs in job order, each
    with its final evaluation on the job's ``final_eval_episodes`` (:mod:`alignnb.agents.evaluation`).

    ``engine=None`` means :class:`alignnb.core.engines.Processes` (side by side, as many as the
    cores hold at each job's thread count). Missing runs are scheduled longest first
    (most steps times threads), so the last round does not leave a core idle behind a long job.
    """
    jobs = list(jobs)
    data_dir = None if data_dir is None else str(data_dir)
    todo = [job for job in jobs if not _done(job, data_dir)]
    todo.sort(key=lambda j: -j.train_config.steps * j.train_config.threads)  # stable: ties keep job order
    if todo:
        (engine or Processes()).map(_InDataDir(data_dir), todo, cpus=[j.train_config.threads for j in todo],
                                    labels=[j.label for j in todo], totals=[j.train_config.steps for j in todo],
                                    desc="agents", progress=progress)
    return [evaluation.evaluated(load_run(run_dir(job.key, data_dir)), job.final_eval_episodes, data_dir)
            for job in jobs]
