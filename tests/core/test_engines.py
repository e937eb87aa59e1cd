"""The engines: every task's result in task order, whichever engine runs it."""

from __future__ import annotations

import os
import time

import pytest

from alignnb.core import engines
from alignnb.core.engines import Engine, InProcess, Processes
from alignnb.run.engines import make_engine


def square(x: int, report=None) -> int:
    """A task (top level, so a spawned worker can import it)."""
    if report is not None:
        report(1, 1)
    return x * x


def nap(seconds: float, report=None) -> float:
    """A task that takes ``seconds`` and reports one step."""
    time.sleep(seconds)
    if report is not None:
        report(1, 1)
    return seconds


def fail_on_three(x: int, report=None) -> int:
    if x == 3:
        raise RuntimeError(f"task {x} failed")
    return x


def test_in_process_keeps_task_order():
    assert InProcess().map(square, [3, 1, 2], progress=False) == [9, 1, 4]


def test_processes_equal_in_process_and_keep_task_order():
    tasks = list(range(5))
    assert Processes(workers=2).map(square, tasks, progress=True) == InProcess().map(square, tasks, progress=False)


def test_a_task_error_reaches_the_caller():
    with pytest.raises(RuntimeError, match="task 3 failed"):
        Processes(workers=2).map(fail_on_three, [1, 3], progress=False)
    with pytest.raises(RuntimeError, match="task 3 failed"):
        InProcess().map(fail_on_three, [3], progress=False)


def test_workers_follow_the_cpu_budget_and_the_threads_of_each_task(monkeypatch):
    monkeypatch.setenv("ALIGNNB_CPUS", "4")
    assert Processes().workers_for([1, 1, 1, 1, 1]) == 4
    assert Processes().workers_for([2, 2, 2]) == 2  # each task holds two threads
    assert Processes().workers_for([1]) == 1
    assert Processes(workers=3).workers_for([1]) == 3
    with pytest.raises(ValueError, match="workers"):
        Processes(workers=0)


def test_how_many_tasks_run_at_once(monkeypatch):
    monkeypatch.setenv("ALIGNNB_CPUS", "2")
    assert Processes().at_once([1] * 5) == 2 and Processes().at_once([1]) == 1
    assert Processes().at_once([2, 2, 2]) == 1
    assert InProcess().at_once([1] * 5) == 1 and InProcess().at_once([]) == 0


def test_a_queued_task_says_so_and_its_clock_starts_when_it_starts(monkeypatch):
    """Two workers, three tasks of 1.5 s: the third waits; its bar reads "(queued)" until then,
    and its elapsed time (hence its ETA) counts from its own start, not from the map's."""
    seen: dict[str, dict] = {}

    class Recorded(engines.tqdm):
        def reset(self, total=None):
            super().reset(total)
            seen[self.desc] = {"reset_at": time.time(), "created_at": self.created_at}

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.created_at = time.time()
            seen.setdefault("created", []).append(self.desc)

    monkeypatch.setattr(engines, "tqdm", Recorded)
    Processes(workers=2).map(nap, [1.5, 1.5, 1.5], labels=["a", "b", "c"], totals=[1, 1, 1], progress=True)
    assert seen["created"] == ["a (queued)", "b (queued)", "c (queued)"]
    assert {"a", "b", "c"} <= set(seen)  # each renamed and restarted when its task began
    waited = seen["c"]["reset_at"] - seen["c"]["created_at"]
    assert waited > 1.0, waited  # c started only after a or b had finished


def count_to(steps: int, report=None) -> int:
    """A task of ``steps`` short steps, each reported (the last one just before it returns)."""
    for step in range(1, steps + 1):
        time.sleep(0.01)
        if report is not None:
            report(step, steps)
    return steps


def test_each_bar_ends_at_its_last_report_and_stops_its_clock_when_its_task_ends(monkeypatch):
    """The bars' last states are what a reader sees in an executed notebook: a finished task's bar
    must show all its steps, and its elapsed time must be its own, not the whole map's."""
    ended: dict[str, tuple[int, float]] = {}

    class Recorded(engines.tqdm):
        def close(self):
            ended.setdefault(self.desc, (self.n, time.time()))
            super().close()

    monkeypatch.setattr(engines, "tqdm", Recorded)
    t0 = time.time()
    Processes(workers=2).map(count_to, [30, 300], labels=["short", "long"], totals=[30, 300], progress=True)
    end = time.time()
    assert ended["short"][0] == 30 and ended["long"][0] == 300  # every step's report was shown
    assert ended["short"][1] - t0 < (end - t0) - 1.0  # the short task's bar stopped well before the long one


def test_make_engine_names_the_engines():
    assert isinstance(make_engine("local"), Processes)
    assert isinstance(make_engine("local", workers=1), InProcess)
    assert not make_engine("local").remote and isinstance(make_engine("local"), Engine)
    with pytest.raises(ValueError, match="choose one of"):
        make_engine("dask")


def test_the_local_engine_never_imports_ray():
    import subprocess
    import sys

    code = "import sys; from alignnb.run.engines import make_engine; make_engine('local'); print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ})
    assert done.stdout.strip() == "False"
