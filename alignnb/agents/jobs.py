"""Training runs side by side: one worker process per agent, each with its own torch threads.

For models this small, two single-thread processes on 2 cores train more frames per second
than one process with 2 threads (``benchmarks/bench_train.py`` measures it). A run's bits
depend on its thread count, which is part of its recipe (:class:`alignnb.agents.train.TrainConfig`
``threads``), its cache key and its ``meta.json``; so the same agents come out whether they
are trained side by side or one after the other (``tests/test_engine.py``).

Finished runs are loaded from the cache in this process; only missing ones start a worker.
Workers are started with ``spawn`` (a fork of a process that has started torch's thread pool
can hang). Each reports its step to a progress bar here.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from alignnb.core.progress import tqdm

from alignnb.core import config
from alignnb.collect import demos
from alignnb.agents.transformer import AgentConfig, learner_of
from alignnb.core.cache import CorruptCache
from alignnb.agents.checkpoints import TrainedAgent, is_finished, load_run, run_dir, run_key
from alignnb.agents.train import TrainConfig, train_agent


@dataclass(frozen=True)
class TrainJob:
    """One training run: the demonstrations' folder, the recipe and the seed."""

    demos_path: str
    agent_config: AgentConfig  # or another learner's configuration (alignnb.agents.recurrent.RecurrentConfig)
    train_config: TrainConfig
    seed: int
    final_eval_episodes: int = 500

    def key(self, demos_key: str) -> str:
        return run_key(demos_key, self.agent_config, self.train_config, self.seed)


def default_workers(jobs: list[TrainJob]) -> int:
    """As many workers as the cores hold at each job's thread count, at most one per job."""
    threads = max((j.train_config.threads for j in jobs), default=1)
    return max(1, min(len(jobs), config.cpu_budget() // threads))


_REPORTS = None  # in a worker: the queue its progress goes to


def _init_worker(parent: int, reports) -> None:
    """In a worker: keep the progress queue, and end this process when its parent is gone.

    A pool's workers outlive a parent that is killed (a notebook kernel restarted, a run
    interrupted): without the watch they would go on training, unseen, on the cores the next
    run needs.
    """
    global _REPORTS
    _REPORTS = reports

    def watch() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_job(job: TrainJob, data_dir: str | None, index: int) -> str:
    data = demos.load_demos(job.demos_path)
    reports = _REPORTS
    report = None if reports is None else (lambda step, total: reports.put((index, step, total)))
    run = train_agent(data, job.agent_config, job.train_config, job.seed, data_dir=data_dir,
                      final_eval_episodes=job.final_eval_episodes, progress=False, report=report)
    return str(run.path)


def _loads(path: Path) -> bool:
    """True for a finished run that loads; a damaged one is trained again (train_agent says so)."""
    if not is_finished(path):
        return False
    try:
        load_run(path)
    except CorruptCache:
        return False
    return True


def train_side_by_side(jobs: list[TrainJob], data_dir: str | os.PathLike | None = None,
                       workers: int | None = None, progress: bool = True) -> list[TrainedAgent]:
    """Train ``jobs`` (cached runs are loaded), at most ``workers`` at a time; runs in job order.

    ``workers=1`` trains one after the other in this process. Otherwise each missing run gets
    a worker process; ``workers=None`` means :func:`default_workers`. In the kernels of an
    ``--engine ray`` run each missing run is a Ray task instead (:func:`alignnb.run.ray_engine.train_jobs`).
    """
    jobs = list(jobs)
    data_dir = None if data_dir is None else str(data_dir)
    keys = [job.key(demos.load_demos(job.demos_path).key) for job in jobs]
    todo = [i for i, key in enumerate(keys) if not _loads(run_dir(key, data_dir))]
    workers = default_workers([jobs[i] for i in todo]) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if todo and os.environ.get(config.ENGINE_ENV) == "ray":  # `alignnb run --engine ray`: each agent is a Ray task
        from alignnb.run import ray_engine  # imported only here: the local engine never imports Ray

        ray_engine.train_jobs(jobs, todo, data_dir, progress)
    elif todo and (workers == 1 or len(todo) == 1):
        for i in todo:
            job = jobs[i]
            train_agent(demos.load_demos(job.demos_path), job.agent_config, job.train_config, job.seed,
                        data_dir=data_dir, final_eval_episodes=job.final_eval_episodes, progress=progress)
    elif todo:
        _in_workers(jobs, todo, data_dir, workers, progress)
    return [load_run(run_dir(key, data_dir)) for key in keys]


def _in_workers(jobs: list[TrainJob], todo: list[int], data_dir: str | None, workers: int, progress: bool) -> None:
    ctx = mp.get_context("spawn")
    reports = ctx.Queue() if progress else None
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(os.getpid(), reports)) as pool:
        futures = [pool.submit(_run_job, jobs[i], data_dir, i) for i in todo]
        bars = {i: tqdm(total=jobs[i].train_config.steps, unit="step",
                        desc=f"{learner_of(jobs[i].agent_config)}, seed {jobs[i].seed}",
                        position=n, disable=not progress) for n, i in enumerate(todo)}
        try:
            while reports is not None and not all(f.done() for f in futures):
                try:
                    i, step, _ = reports.get(timeout=1.0)
                except queue.Empty:
                    continue
                bars[i].update(step - bars[i].n)
            for f in futures:
                f.result()  # a worker's error is raised here
        finally:
            for bar in bars.values():
                bar.close()
