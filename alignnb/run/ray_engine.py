"""The Ray engine: sweep points, agent trainings and language-model embeddings as Ray tasks.

    alignnb run --engine ray [--address ADDR] [--task-cpus N] ...

Ray is an optional extra (``pip install -e ".[ray]"``). This module imports it only when a
function needs it, and the local engine never imports this module, so a one-machine user
never needs Ray.

- :func:`connect` joins the cluster at ``--address`` or starts a local instance. Every task
  gets the data folder (``ALIGNNB_DATA``) through its runtime environment: in a cluster it
  must be a shared file system, mounted at the same path on every node.
- :func:`run_sweep` runs each point of a sweep as one task (the whole pipeline for its value).
  A point states its CPU count (``task_cpus``); the kernel it starts follows it (torch and
  OpenMP threads, the number of agents trained side by side, collection workers), and the
  count is recorded in ``sweep_tasks.csv``. Inside a point the agents train locally, so a
  sweep never waits for CPUs its own points hold.
- :func:`train_jobs` (the plug-in point of :func:`alignnb.agents.jobs.train_side_by_side`) trains
  each missing agent as a task with ``num_cpus`` equal to its recipe's thread count, so the
  result is bit-identical to the local engine's and is cached under the same key.
- :func:`embed_language_models` embeds each missing language model as a task that asks for a
  GPU (``num_gpus=1``) when the model is large and the cluster has one, else runs on CPU.

Two tasks that need the same missing upstream stage do not both build it: every stage writes
under a file lock in the shared data folder (:func:`alignnb.core.cache.file_lock`), and the second
task waits, then reuses what the first wrote.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from alignnb.core import config

ENGINE_ENV = config.ENGINE_ENV
ADDRESS_ENV = "ALIGNNB_RAY_ADDRESS"  # the cluster those kernels join
LOCAL_OBJECT_STORE = 256 * 2**20  # bytes; tasks pass paths and small configs, never arrays
LARGE_MODEL_BILLIONS = 1.0  # a language model at least this large asks for a GPU when there is one
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
    ray = require_ray()
    if not ray.is_initialized():
        env = {"ALIGNNB_DATA": str(config.data_dir()), ENGINE_ENV: "local"}
        local = {} if address else {"num_cpus": num_cpus, "object_store_memory": LOCAL_OBJECT_STORE}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": env}, **local)
    return ray.get_runtime_context().gcs_address


@contextlib.contextmanager
def kernels_on_ray(address: str | None = None, num_cpus: int | None = None) -> Iterator[str]:
    """Within the block, the notebooks' kernels started from this process train their agents
    and embed their language models as tasks on the cluster at ``address`` (or a local
    instance started here, stopped at the end); yields the address the kernels join."""
    gcs = connect(address, num_cpus)
    before = {name: os.environ.get(name) for name in (ENGINE_ENV, ADDRESS_ENV)}
    os.environ.update({ENGINE_ENV: "ray", ADDRESS_ENV: address or gcs})
    try:
        yield gcs
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
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
def _sweep_point(name: str, value: Any, parameters: Mapping[str, Any], quick: bool, output: str,
                 cpus: int, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """In a task: run the pipeline for one value; never raises (the failure is the result)."""
    from alignnb.run import cli

    t0 = time.perf_counter()
    record = {"value": value, "cpus": cpus, "threads": cpus, "host": socket.gethostname(), "pid": os.getpid(),
              "output": output}
    tables = {}
    try:
        run_dir = cli.run_notebooks({**parameters, name: value}, quick=quick, output=output, progress=False, **kwargs)
        record.update(status="ok", error="")
        # the tables the summary reads travel back with the record: the driver may be on another node
        tables = {p.name: p.read_text() for p in (run_dir / "figures").glob("*.csv")
                  if p.name in ("agent_success.csv", "alignment_summary.csv")}
    except Exception as exc:  # noqa: BLE001 -- reported with its value, the others go on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    record["seconds"] = round(time.perf_counter() - t0, 1)
    return {**record, "tables": tables}


def run_sweep(name: str, values: Sequence[Any], parameters: Mapping[str, Any], quick: bool,
              run_dirs: Mapping[Any, Path], task_cpus: int = 1, address: str | None = None,
              num_cpus: int | None = None, progress: bool = True, **kwargs: Any) -> list[dict[str, Any]]:
    """Run each sweep point as a Ray task with ``task_cpus`` CPUs; return one record per value
    (status, error, cpus, host, seconds), in the order of ``values``."""
    ray = require_ray()
    if task_cpus < 1:
        raise ValueError(f"--task-cpus must be at least 1, got {task_cpus}")
    connect(address, num_cpus)
    # the point's kernel follows its CPU count: threads, agents side by side, collection workers.
    # Set per task (a task's own runtime environment), so no reused worker carries them on.
    env = {"ALIGNNB_DATA": str(config.data_dir()), ENGINE_ENV: "local", config.CPUS_ENV: str(task_cpus),
           "OMP_NUM_THREADS": str(task_cpus), "MKL_NUM_THREADS": str(task_cpus)}
    task = ray.remote(_sweep_point).options(num_cpus=task_cpus, max_retries=0, name="alignnb sweep point",
                                            runtime_env={"env_vars": env})
    refs = {task.remote(name, value, dict(parameters), quick, str(run_dirs[label]), task_cpus, dict(kwargs)): label
            for label, value in zip(run_dirs, values)}
    records: dict[Any, dict[str, Any]] = {}
    for ref, label in _as_completed(refs, f"sweep {name} on Ray", "point", progress):
        try:
            records[label] = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker died (memory, a lost node): this point failed
            records[label] = {"value": label, "cpus": task_cpus, "threads": task_cpus, "host": "", "pid": 0,
                              "output": str(run_dirs[label]), "status": "failed",
                              "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}", "seconds": float("nan"),
                              "tables": {}}
        for table, text in records[label].pop("tables").items():  # written here if the task ran elsewhere
            target = Path(run_dirs[label]) / "figures" / table
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    return [records[label] for label in run_dirs]


# -- agent trainings ----------------------------------------------------------------------
def _train_task(job: Any, data_dir: str | None) -> str:
    """In a task: train one agent (or load it, if another task built it meanwhile); its run folder."""
    from alignnb.collect import demos
    from alignnb.agents.train import train_agent

    run = train_agent(demos.load_demos(job.demos_path), job.agent_config, job.train_config, job.seed,
                      data_dir=data_dir, final_eval_episodes=job.final_eval_episodes, progress=False)
    return str(run.path)


def train_jobs(jobs: Sequence[Any], todo: Sequence[int], data_dir: str | None, progress: bool = True) -> None:
    """Train the jobs ``todo`` as Ray tasks, each with ``num_cpus`` = its recipe's thread count
    (so the checkpoint is the local engine's, bit for bit); their runs land in the cache."""
    ray = require_ray()
    from alignnb.agents.transformer import learner_of

    connect(os.environ.get(ADDRESS_ENV) or None)
    refs = {ray.remote(_train_task).options(num_cpus=jobs[i].train_config.threads, max_retries=0,
                                            name=f"alignnb train {learner_of(jobs[i].agent_config)} "
                                                 f"seed {jobs[i].seed}").remote(jobs[i], data_dir): i
            for i in todo}
    for ref, _ in _as_completed(refs, "agents on Ray", "agent", progress):
        ray.get(ref)  # a task's error is raised here, with the job's name


# -- language-model embeddings ------------------------------------------------------------
def wants_gpu(spec: Any, cluster_gpus: float) -> bool:
    """Whether an embedding task for ``spec`` asks for a GPU: a large model, and a GPU to have."""
    return cluster_gpus >= 1 and getattr(spec, "billions", 0.0) >= LARGE_MODEL_BILLIONS


def _embed_task(key: str, sentences: Any, pooling: str | None, layer: Any, sweep_poolings: Sequence[str],
                data_dir: str | None, kwargs: Mapping[str, Any]) -> str:
    """In a task: every embedding set of model ``key`` that stage 4 needs, cached (the same
    calls as the local engine's with the same device, so the same keys)."""
    from alignnb.extract.encoders import study_embeddings

    _, _, skipped = study_embeddings([key], sentences, pooling=pooling, layer=layer, sweep_poolings=sweep_poolings,
                                     data_dir=data_dir, progress=False, **kwargs)
    return skipped.get(key, "")


def embed_language_models(keys: Sequence[str], sentences: Any, pooling: str | None, layer: Any,
                          sweep_poolings: Sequence[str], data_dir: str | None, progress: bool = True,
                          **kwargs: Any) -> dict[str, str | None]:
    """Embed each language model of ``keys`` as one Ray task; returns {key: the device its task
    used} ("cuda" when it asked for a GPU, else the caller's device). The device is part of
    the cache key, so the caller's own pass must ask for the same one: it then finds every
    set in the shared cache. A model whose weights cannot be had is reported by that pass."""
    ray = require_ray()
    from alignnb.extract.models import get_spec

    connect(os.environ.get(ADDRESS_ENV) or None)
    gpus = float(ray.cluster_resources().get("GPU", 0))
    asked = {key: wants_gpu(get_spec(key), gpus) for key in keys}
    devices = {key: "cuda" if asked[key] else kwargs.get("device") for key in keys}
    refs = {ray.remote(_embed_task).options(num_cpus=1, num_gpus=1 if asked[key] else 0, max_retries=0,
                                            name=f"alignnb embed {key}")
            .remote(key, sentences, pooling, layer, list(sweep_poolings), data_dir,
                    {**kwargs, "device": devices[key]}): key
            for key in keys}
    for ref, _ in _as_completed(refs, "embeddings on Ray", "model", progress):
        ray.get(ref)  # an error other than a missing model is raised here, with the model's name
    return devices


def record_path(base: Path) -> Path:
    """Where a sweep's per-point task records go."""
    return Path(base) / "sweep_tasks.csv"
