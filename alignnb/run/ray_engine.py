"""The Ray engine: sweep points, agent trainings and language-model embeddings as Ray tasks.

    alignnb run --engine ray [--address ADDR] [--task-cpus N] ...

Ray is an optional extra (``pip install -e ".[ray]"``). This module imports it only when a
function needs it, and only :func:`alignnb.run.engines.make_engine` and the runner import this
module, so a one-machine user never needs Ray.

- :func:`connect` joins the cluster at ``--address`` or starts a local instance. Every task
  gets the data folder (``ALIGNNB_DATA``) through its runtime environment: in a cluster it
  must be a shared file system, mounted at the same path on every node.
- :class:`RayEngine` is the :class:`~alignnb.core.engines.Engine` that the notebooks' kernels
  build for ``--engine ray``: each task of a stage (an agent training with ``num_cpus`` equal to
  its recipe's thread count, so the checkpoint is the local engine's bit for bit; a language
  model's embeddings, with a GPU for a large model when the cluster has one) is one Ray task.
- :func:`run_sweep` runs each point of a sweep as one task (the whole pipeline for its value).
  A point states its CPU count (``task_cpus``); the kernel it starts follows it (torch and
  OpenMP threads, the number of agents trained side by side, collection workers), and the
  count is recorded in ``sweep_tasks.csv``. Inside a point the agents train on the local
  engine, so a sweep never waits for CPUs its own points hold.

Two tasks that need the same missing upstream stage do not both build it: every stage writes
under a file lock in the shared data folder (:func:`alignnb.core.cache.file_lock`), and the
second task waits, then reuses what the first wrote.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from alignnb.core import compute, paths
from alignnb.core.engines import Engine

LOCAL_OBJECT_STORE = 256 * 2**20  # bytes; tasks pass paths and small configs, never arrays
#: Ray's own settings for joining a cluster at an address: one connection attempt (Ray's default is
#: 20, about 13 minutes against an address where nothing listens) with a 2 s connect timeout, so a
#: wrong address fails in about 35 s (measured; Ray still prints its three connection warnings).
JOIN_SETTINGS = {"RAY_gcs_server_port_wait_time_s": "1", "RAY_gcs_rpc_server_connect_timeout_s": "2"}
INSTALL_HINT = 'the ray engine needs Ray, an optional extra: pip install -e ".[ray]" (make test installs it)'


class EngineUnavailable(RuntimeError):
    """The Ray engine was asked for but cannot run here; the message says how to fix it."""


def require_ray() -> Any:
    """The ``ray`` module, or :class:`EngineUnavailable` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise EngineUnavailable(INSTALL_HINT) from exc
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> str:
    """Join the Ray cluster at ``address`` (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``),
    or start a local instance with ``num_cpus`` CPUs when ``address`` is None; returns the
    address that other processes of this run (the notebooks' kernels) join."""
    if address:
        for name, value in JOIN_SETTINGS.items():  # Ray's own connection budget, unless the user set one
            os.environ.setdefault(name, value)  # (before Ray is imported: its logging reads them then)
    ray = require_ray()
    if not ray.is_initialized():
        env = {"ALIGNNB_DATA": str(paths.data_dir())}
        local = {} if address else {"num_cpus": num_cpus, "object_store_memory": LOCAL_OBJECT_STORE}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": env}, **local)
        except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as exc:  # e.g. another Ray
            # version (RuntimeError), a missing or wrong token (AuthenticationError, a RayError)
            if not address:
                raise
            raise EngineUnavailable(
                f"cannot join the Ray cluster at {address!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}): "
                "check the address (host:port of the head node, default port 6379), that `ray start --head` runs "
                "there with this Ray version, that this machine has the cluster's token if it uses one "
                "(RAY_AUTH_TOKEN), and that no firewall blocks the port") from None
    return ray.get_runtime_context().gcs_address


@contextlib.contextmanager
def kernels_on_ray(address: str | None = None, num_cpus: int | None = None) -> Iterator[str]:
    """Join (or start, and at the end stop) the cluster for a run; yields the address that the
    notebooks' kernels join (the runner passes it to them as ``engine_address``)."""
    gcs = connect(address, num_cpus)
    try:
        yield address or gcs
    finally:
        shutdown()


def shutdown() -> None:
    """Leave the cluster (and stop the local instance this process started)."""
    ray = require_ray()
    if ray.is_initialized():
        ray.shutdown()


def _as_completed(refs: Mapping[Any, Any], desc: str, unit: str, progress: bool) -> Iterator[tuple[Any, Any]]:
    """(ref, its label) of each task of ``refs`` {ref: label} as it finishes, with one progress bar."""
    ray = require_ray()
    from alignnb.core.progress import tqdm

    with tqdm(total=len(refs), desc=desc, unit=unit, disable=not progress) as bar:
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield done[0], refs[done[0]]
            bar.update(1)


# -- sweep points -------------------------------------------------------------------------
def run_points(point: Callable[..., dict[str, Any]], arguments: Sequence[tuple], labels: Sequence[Any],
               task_cpus: int = 1, address: str | None = None, num_cpus: int | None = None,
               progress: bool = True) -> dict[Any, dict[str, Any] | BaseException]:
    """Run ``point(*args)`` for each of ``arguments`` as a Ray task with ``task_cpus`` CPUs;
    {label: its record, or the Ray error if its worker died twice (memory, lost nodes)}.

    The point's kernel follows its CPU count: its runtime environment sets the torch and OpenMP
    threads and the CPU budget (``ALIGNNB_CPUS``: agents side by side, collection workers), per
    task, so no reused worker carries them on.
    """
    ray = require_ray()
    if task_cpus < 1:
        raise ValueError(f"--task-cpus must be at least 1, got {task_cpus}")
    connect(address, num_cpus)
    env = {"ALIGNNB_DATA": str(paths.data_dir()), compute.CPUS_ENV: str(task_cpus),
           "OMP_NUM_THREADS": str(task_cpus), "MKL_NUM_THREADS": str(task_cpus)}
    # a point never raises (its failure is its record), so a retry happens only when its worker or
    # node is lost: the point then runs again, once, on a node that is still there
    task = ray.remote(point).options(num_cpus=task_cpus, max_retries=1, name="alignnb sweep point",
                                     runtime_env={"env_vars": env})
    refs = {task.remote(*args): label for label, args in zip(labels, arguments)}
    out: dict[Any, dict[str, Any] | BaseException] = {}
    for ref, label in _as_completed(refs, "sweep on Ray", "point", progress):
        try:
            out[label] = ray.get(ref)
        except ray.exceptions.RayError as exc:
            out[label] = exc
    return out


# -- the engine of the stages ------------------------------------------------------------
def _call(fn: Any, task: Any) -> Any:
    """In a task: ``fn(task)`` without a per-step report (Ray tasks report when they finish)."""
    return fn(task, None)


class RayEngine(Engine):
    """Each task of a stage is a Ray task with its own ``num_cpus`` / ``num_gpus``, on the
    cluster at ``address`` (or a local instance); its results come back in task order, and a
    task's error is raised here with the task's name."""

    name = "ray"
    remote = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address, self.num_cpus = address, num_cpus

    def gpus(self) -> float:
        ray = require_ray()
        connect(self.address, self.num_cpus)
        return float(ray.cluster_resources().get("GPU", 0))

    def at_once(self, cpus: Sequence[int]) -> int | None:
        """As many as the cluster's CPUs hold now (None before this process has joined it)."""
        ray = require_ray()
        if not cpus or not ray.is_initialized():
            return None
        return max(1, min(len(cpus), int(ray.cluster_resources().get("CPU", 0) // max(cpus))))

    def map(self, fn, tasks, *, cpus=None, gpus=None, labels=None, totals=None, desc="tasks", progress=True):
        ray = require_ray()
        connect(self.address, self.num_cpus)
        tasks = list(tasks)
        refs = {ray.remote(_call).options(num_cpus=cpus[i] if cpus else 1, num_gpus=gpus[i] if gpus else 0,
                                          max_retries=0, name=f"alignnb {labels[i] if labels else desc}")
                .remote(fn, task): i for i, task in enumerate(tasks)}
        results: list[Any] = [None] * len(tasks)
        for ref, i in _as_completed(refs, f"{desc} on Ray", "task", progress):
            results[i] = ray.get(ref)
        return results

    def __repr__(self) -> str:
        return f"RayEngine(address={self.address!r})"
