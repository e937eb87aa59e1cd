"""Engines: how a stage runs a batch of independent tasks (agent trainings, model embeddings).

A stage never chooses its engine: the runner (``alignnb run --engine``) chooses one, the
notebook builds it once (:func:`alignnb.run.engines.make_engine`) and passes it to the stage
functions, which call :meth:`Engine.map`. Every task is a top-level function of one argument
(a small picklable job) that writes its result to the shared cache; results do not depend on
the engine, because each job's thread count is part of its recipe and key.

- :class:`InProcess`: one task after another in this process.
- :class:`Processes`: side by side, one ``spawn``-ed worker process per task, as many at a time
  as the CPU budget holds at each task's thread count (the default engine).
- ``alignnb.run.ray_engine.RayEngine``: each task a Ray task (optional extra, imported only there).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from alignnb.core.compute import cpu_budget
from alignnb.core.progress import tqdm

#: A task reports its progress as (done, total) through this callable (None: no per-step report).
Report = Callable[[int, int], None] | None


class Engine:
    """Runs ``fn(task, report)`` for each task and returns the results in task order."""

    name = "engine"
    #: True when tasks run away from this process (another machine may run them): the stage
    #: then prepares its shared inputs before mapping (e.g. embeddings: one task per model).
    remote = False

    def map(self, fn: Callable[[Any, Report], Any], tasks: Sequence[Any], *, cpus: Sequence[int] | None = None,
            gpus: Sequence[int] | None = None, labels: Sequence[str] | None = None, totals: Sequence[int] | None = None,
            desc: str = "tasks", progress: bool = True) -> list[Any]:
        """``[fn(task, report) for task in tasks]``; ``cpus``/``gpus``: each task's resources,
        ``labels``/``totals``: each task's progress bar (its name and its number of steps)."""
        raise NotImplementedError

    def gpus(self) -> float:
        """GPUs the engine can give a task (0 for the local engines)."""
        return 0.0

    def at_once(self, cpus: Sequence[int]) -> int | None:
        """How many of tasks needing ``cpus`` threads each run at the same time (None: not known here)."""
        return min(1, len(cpus))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class InProcess(Engine):
    """Every task in this process, one after the other."""

    name = "in-process"

    def map(self, fn, tasks, *, cpus=None, gpus=None, labels=None, totals=None, desc="tasks", progress=True):
        tasks = list(tasks)
        out = []
        for i, task in enumerate(tasks):
            label = labels[i] if labels else f"{desc} {i + 1}/{len(tasks)}"
            total = totals[i] if totals else 1
            with tqdm(total=total, desc=label, disable=not progress) as bar:
                out.append(fn(task, lambda step, _total, bar=bar: bar.update(step - bar.n)))
        return out


_REPORTS = None  # in a worker: the queue its progress goes to
STARTED = -1  # the step a worker reports when it starts a task
FINISHED_GRACE = 0.3  # seconds a finished task's bar waits for its last reports before it stops


def _init_worker(parent: int, reports: Any) -> None:
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


def _in_worker(fn: Callable[[Any, Report], Any], task: Any, index: int) -> Any:
    reports = _REPORTS
    report = None if reports is None else (lambda step, total: reports.put((index, step, total)))
    if reports is not None:
        reports.put((index, STARTED, 0))  # the task has a worker now: its bar's clock starts
    return fn(task, report)


class Processes(Engine):
    """Tasks side by side in ``spawn``-ed worker processes (a fork of a process that has started
    torch's thread pool can hang); ``workers=None``: as many as the CPU budget holds at the
    largest task's thread count. With one worker or one task, runs in this process."""

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = None if workers is None else int(workers)

    def workers_for(self, cpus: Sequence[int]) -> int:
        """Workers for tasks needing ``cpus`` threads each: the budget's share, at most one per task."""
        if self.workers is not None:
            return self.workers
        return max(1, min(len(cpus), cpu_budget() // max(cpus, default=1)))

    def at_once(self, cpus: Sequence[int]) -> int | None:
        return min(len(cpus), self.workers_for(cpus))

    def map(self, fn, tasks, *, cpus=None, gpus=None, labels=None, totals=None, desc="tasks", progress=True):
        tasks = list(tasks)
        cpus = list(cpus) if cpus else [1] * len(tasks)
        workers = self.workers_for(cpus)
        if workers == 1 or len(tasks) <= 1:
            return InProcess().map(fn, tasks, labels=labels, totals=totals, desc=desc, progress=progress)
        ctx = mp.get_context("spawn")
        reports = ctx.Queue() if progress else None
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(os.getpid(), reports)) as pool:
            futures = [pool.submit(_in_worker, fn, task, i) for i, task in enumerate(tasks)]
            names = [labels[i] if labels else f"{desc} {i + 1}/{len(tasks)}" for i in range(len(tasks))]
            # a task waiting for a free worker says so; its bar's clock starts when the task does
            bars = [tqdm(total=totals[i] if totals else 1, unit="step", position=i, disable=not progress,
                         desc=f"{names[i]} (queued)") for i in range(len(tasks))]
            closed: set[int] = set()
            done_at: dict[int, float] = {}
            try:
                while reports is not None and len(closed) < len(futures):
                    now = time.monotonic()
                    for j, f in enumerate(futures):
                        if j not in closed and f.done():
                            # a finished task's bar stops once its last reports are in (they trail its
                            # result by milliseconds), so its clock shows its own time, not the map's
                            if now - done_at.setdefault(j, now) > FINISHED_GRACE:
                                closed.add(j)
                                bars[j].close()
                    try:
                        i, step, _ = reports.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if i in closed:
                        continue
                    if step == STARTED:
                        bars[i].set_description_str(names[i], refresh=False)
                        bars[i].reset(bars[i].total)
                    else:
                        bars[i].update(step - bars[i].n)
                return [f.result() for f in futures]  # a worker's error is raised here
            finally:
                for bar in bars:
                    bar.close()

    def __repr__(self) -> str:
        return f"Processes(workers={self.workers})"
