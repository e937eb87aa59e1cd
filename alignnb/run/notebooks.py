"""The notebook runner: execute the study's notebooks with papermill, one run or a sweep.

:func:`run_notebooks` builds and validates the :class:`~alignnb.run.settings.StudyConfig`
before the first notebook starts, so a bad parameter fails in a second. Each notebook receives
the parameters it declares plus the whole configuration (``study``) and the run's engine
(``engine``, ``engine_address``). The full default run (no --quick, no -p, no --only, no
--output) writes figures to ``figures/`` and executed notebooks to ``runs/default/``, then
publishes clean copies of those notebooks to the committed ``results/``
(:mod:`alignnb.run.results`); it is the one run that passes ``figures/`` as ``output_dir``. Any
other run writes both under its own folder ``runs/<name>/``, and a notebook run by hand writes
under ``runs/interactive/`` (:func:`alignnb.core.paths.figures_dir`), so nothing but the full
run overwrites what the repository records.
:func:`run_sweep` reruns the notebooks once per value of one parameter.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import papermill
from jupyter_client.manager import AsyncKernelManager
from papermill.exceptions import PapermillExecutionError
from traitlets import default

from alignnb.core import cache, paths
from alignnb.core import progress as progress_bars
from alignnb.run import results
from alignnb.run.engines import ENGINES
from alignnb.run.settings import StudyConfig

#: Parameters the runner sets itself: a notebook declares them, a user does not pass them with -p.
RUNNER_PARAMETERS = ("study", "quick", "output_dir", "interactive", "engine", "engine_address")


class NotebookFailed(RuntimeError):
    """A notebook raised while papermill executed it; the message names notebook and cell."""


class SweepFailed(RuntimeError):
    """Some points of a sweep failed; the message names each value with its notebook and cell.
    ``summary`` holds the summary of the points that succeeded, written in ``base``."""

    def __init__(self, message: str, base: Path, summary: pd.DataFrame) -> None:
        super().__init__(message)
        self.base, self.summary = base, summary


class EncryptedKernelManager(AsyncKernelManager):
    """A kernel manager that provisions CurveZMQ keys when the kernelspec supports them.

    jupyter_client's default (``transport_encryption="disabled"``) starts the kernel on plain
    TCP, and ipykernel then warns "Kernel is running over TCP without encryption" once per
    notebook. The kernelspec that ``make install`` writes declares Curve support, so with
    ``"auto"`` the channels are encrypted and the runs are quiet.
    """

    @default("transport_encryption")
    def _transport_encryption_default(self) -> str:
        return "auto"


def notebook_parameters(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Names, types and defaults declared in a notebook's ``parameters`` cell."""
    return papermill.inspect_notebook(str(path))


def run_name(quick: bool, parameters: Mapping[str, Any]) -> str:
    """'default' for a full default run, else a readable name from the settings plus a short hash
    of them, so two different settings never share a folder."""
    parts = (["quick"] if quick else []) + [f"{k}={v}" for k, v in sorted(parameters.items())]
    if not parts:
        return "default"
    readable = "".join(c if c.isalnum() or c in "=-_.," else "-" for c in "_".join(parts))[:80]
    return f"{readable}_{cache.cache_key({'quick': bool(quick), **parameters}, 8)}"


def select_notebooks(only: Sequence[str] | None, notebooks: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """The notebooks to run: all, or those whose names start with one of ``only``."""
    found = [Path(p) for p in notebooks] if notebooks else paths.study_notebooks()
    if not found:
        raise FileNotFoundError(f"no notebooks to run (looked for NN_*.ipynb in {paths.notebooks_dir()})")
    if only:
        missing = [o for o in only if not any(p.name.startswith(str(o)) for p in found)]
        if missing:
            raise ValueError(f"--only {missing}: no notebook starts with that; the notebooks are "
                             f"{[p.name for p in found]}")
        found = [p for p in found if any(p.name.startswith(str(o)) for o in only)]
    return found


def notebook_inputs(declared: Mapping[str, Any], cfg: StudyConfig, extra: Mapping[str, Any],
                    figures: str, engine: str = "local", engine_address: str = "") -> dict[str, Any]:
    """What one notebook receives: its declared study parameters from ``cfg``, the whole
    configuration as ``study``, declared extra parameters, the figures folder, the run's
    engine (``engine``, ``engine_address``), no widgets."""
    study = cfg.to_dict()
    given = {name: study[name] for name in declared if name in study}
    given.update({name: value for name, value in extra.items() if name in declared})
    if "study" in declared:
        given["study"] = study
    if "output_dir" in declared:
        given["output_dir"] = figures
    if "interactive" in declared:
        given["interactive"] = False
    if "engine" in declared:
        given["engine"] = engine
    if "engine_address" in declared:
        given["engine_address"] = engine_address or ""
    return given


def check_parameters(parameters: Mapping[str, Any], quick: bool = False, only: Sequence[str] | None = None,
                     notebooks: Sequence[str | os.PathLike] | None = None,
                     ) -> tuple[list[Path], dict[Path, dict], StudyConfig, dict[str, Any]]:
    """Validate a run's parameters before anything runs: (notebooks, their declared parameters,
    the study configuration, the notebook-only parameters). Raises ValueError with the reason."""
    flags = {"quick": "--quick", "output_dir": "--output", "engine": "--engine", "engine_address": "--address"}
    for name, flag in flags.items():
        if name in parameters:
            raise ValueError(f"-p {name} is set by the runner: use {flag} instead")
    found = select_notebooks(only, notebooks)
    declared = {p: notebook_parameters(p) for p in found}
    study_names = set(StudyConfig.names())
    known = study_names.union(*[set(d) for d in declared.values()]) - set(RUNNER_PARAMETERS)
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}: the study's parameters are {sorted(known)}")
    cfg = StudyConfig.from_dict({**{k: v for k, v in parameters.items() if k in study_names}, "quick": bool(quick)})
    extra = {k: v for k, v in parameters.items() if k not in study_names}
    return found, declared, cfg, extra


def run_notebooks(
    parameters: Mapping[str, Any] | None = None,
    quick: bool = False,
    output: str | os.PathLike | None = None,
    only: Sequence[str] | None = None,
    notebooks: Sequence[str | os.PathLike] | None = None,
    kernel_name: str = "python3",
    timeout: int = 7200,
    progress: bool = True,
    engine: str = "local",
    engine_address: str | None = None,
) -> Path:
    """Execute the study notebooks in order with papermill; return the run folder.

    The study configuration is built from ``parameters`` and ``quick`` first, so a bad value
    fails before any notebook starts. Every notebook receives the parameters it declares; a
    name that is neither a study parameter nor declared by a notebook is an error (papermill
    would only warn). At the first failure, raises :class:`NotebookFailed` naming notebook and cell.
    ``engine`` (and ``engine_address``) is passed to every notebook that declares it: the stages
    run their missing tasks on it (:func:`alignnb.run.engines.make_engine`).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose one of {list(ENGINES)}")
    parameters = dict(parameters or {})
    found, declared, cfg, extra = check_parameters(parameters, quick, only, notebooks)

    # The kernels run in notebooks/: a relative data folder must name the same folder there as here
    if os.environ.get("ALIGNNB_DATA"):
        os.environ["ALIGNNB_DATA"] = str(paths.data_dir())
    if extra.get("data_dir"):
        extra["data_dir"] = str(paths.data_dir(extra["data_dir"]))
    data_dir = extra.get("data_dir") or None
    cfg.check_sentence_count(data_dir)  # k against the sentence set, if it is cached; else after notebook 01
    name = run_name(quick, parameters)
    run_dir = Path(output) if output else paths.runs_dir() / name
    run_dir.mkdir(parents=True, exist_ok=True)
    # The repository's record (figures/ and results/) is written by the full default run alone; every
    # other run, and every notebook run by hand (output_dir left empty), writes under runs/.
    record = name == "default" and output is None and only is None and notebooks is None
    figures = str(paths.record_figures_dir() if record else (run_dir / "figures").resolve())
    blind = [p.name for p in found if "output_dir" not in declared[p]]
    if blind:  # its figures would land in runs/interactive/, not in this run
        raise ValueError(f"{blind} declare no output_dir parameter (check the parameters cell parses)")
    print(f"[alignnb] figures and tables -> {figures}" + ("  (the repository's record: the full default run)"
                                                            if record else ""), flush=True)
    with progress_bars.relayed(progress):  # the kernels' progress bars, drawn on this terminal too
        for path in found:
            _run_one(path, notebook_inputs(declared[path], cfg, extra, figures, engine, engine_address or ""), run_dir,
                     kernel_name, timeout, progress)
            if path.name.startswith("01"):
                cfg.check_sentence_count(data_dir)  # before any agent is trained
    if record:
        published = results.publish(run_dir)
        print(f"[alignnb] {len(published)} executed notebooks published to {published[0].parent} "
              "(committed; what GitHub and `make book` show)", flush=True)
    return run_dir


def _run_one(path: Path, given: Mapping[str, Any], run_dir: Path, kernel_name: str, timeout: int,
             progress: bool) -> None:
    """Execute one notebook with its inputs ``given`` into ``run_dir``; :class:`NotebookFailed` if it fails."""
    out = run_dir / path.name
    t0 = time.perf_counter()
    shown = {k: v for k, v in given.items() if k != "study"}
    print(f"[alignnb] {path.name} -> {out}  {shown}", flush=True)
    try:
        papermill.execute_notebook(
            str(path), str(out), parameters=dict(given), kernel_name=kernel_name,
            cwd=str(path.parent), execution_timeout=timeout, progress_bar=progress,
            kernel_manager_class=EncryptedKernelManager,
        )
    except PapermillExecutionError as exc:
        raise NotebookFailed(
            f"{path.name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
            f"{exc.ename}: {exc.evalue}. The executed copy with the traceback is {out}."
        ) from exc
    print(f"[alignnb] {path.name} done in {time.perf_counter() - t0:.0f} s", flush=True)


def sweep_summary(run_dirs: Mapping[Any, Path], name: str) -> pd.DataFrame:
    """Headline numbers of each run of a sweep (agent success per level, precision@k per model),
    with their mean and standard deviation across the swept values."""
    rows = []
    for value, folder in run_dirs.items():
        fig = Path(folder) / "figures"
        if (fig / "agent_success.csv").exists():
            for _, r in pd.read_csv(fig / "agent_success.csv").iterrows():
                rows.append({name: value, "quantity": f"success {r['level']}", "value": r["success_rate"]})
        if (fig / "alignment_summary.csv").exists():
            table = pd.read_csv(fig / "alignment_summary.csv")
            if "seed" in table:  # the mean over the agent's seeds (a table of one seed has no such block)
                table = table[table["seed"].astype(str) == "mean"]
            for _, r in table.iterrows():
                k = "k" if name == "k" else int(r["k"])  # a sweep over k compares each model across k
                rows.append({name: value, "quantity": f"precision@{k} agent vs {r['model']}", "value": r["precision"]})
    long = pd.DataFrame(rows)
    if long.empty:
        return long
    wide = long.pivot_table(index="quantity", columns=name, values="value", aggfunc="first", sort=False)
    wide["mean"] = wide.mean(axis=1)
    wide["sd"] = wide.drop(columns="mean").std(axis=1, ddof=1) if wide.shape[1] > 2 else float("nan")
    return wide


def _sweep_point(name: str, value: Any, parameters: Mapping[str, Any], quick: bool, output: str,
                 cpus: int, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """In a task: run the pipeline for one value; never raises (the failure is the result)."""
    t0 = time.perf_counter()
    record = {"value": value, "cpus": cpus, "threads": cpus, "host": socket.gethostname(), "pid": os.getpid(),
              "output": output}
    tables = {}
    try:
        run_dir = run_notebooks({**parameters, name: value}, quick=quick, output=output, progress=False,
                                         engine="local", **kwargs)
        record.update(status="ok", error="")
        # the tables the summary reads travel back with the record: the driver may be on another node
        tables = {p.name: p.read_text() for p in (run_dir / "figures").glob("*.csv")
                  if p.name in ("agent_success.csv", "alignment_summary.csv")}
    except Exception as exc:  # noqa: BLE001 -- reported with its value, the others go on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    record["seconds"] = round(time.perf_counter() - t0, 1)
    return {**record, "tables": tables}


#: A Ray sweep's per-point task records (status, error, CPUs, host, seconds), in its folder.
SWEEP_TASKS = "sweep_tasks.csv"


def _sweep_record(result: dict[str, Any] | BaseException, label: Any, output: Path, task_cpus: int) -> dict[str, Any]:
    """One point's record; its tables are written here if its task ran on another node."""
    if isinstance(result, BaseException):  # the worker died (memory, a lost node): this point failed
        return {"value": label, "cpus": task_cpus, "threads": task_cpus, "host": "", "pid": 0, "output": str(output),
                "status": "failed", "error": f"{type(result).__name__}: {str(result).splitlines()[0]}",
                "seconds": float("nan")}
    record = dict(result)
    for table, text in record.pop("tables").items():
        target = Path(output) / "figures" / table
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    return record


def run_sweep(name: str, values: Sequence[Any], parameters: Mapping[str, Any] | None = None, quick: bool = False,
              output: str | os.PathLike | None = None, engine: str = "local", address: str | None = None,
              task_cpus: int = 1, ray_cpus: int | None = None, progress: bool = True,
              **kwargs: Any) -> tuple[Path, Any]:
    """Rerun the notebooks once per value of parameter ``name``; cached stages whose inputs did
    not change are reused. Writes ``sweep_summary.csv`` (mean and sd across values).

    ``engine="local"`` runs the points one after another in this process and stops at the
    first failure. ``engine="ray"`` runs each point as a Ray task with ``task_cpus`` CPUs (on
    the cluster at ``address``, or a local instance with ``ray_cpus`` CPUs), keeps the points
    that succeed, writes ``sweep_tasks.csv`` (one row per point: status, error, CPUs, host,
    seconds) and then raises :class:`SweepFailed` if any point failed.
    """
    if not values:
        raise ValueError(f"--sweep {name}= has no values")
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r}: choose one of {list(ENGINES)}")
    base = Path(output) if output else paths.runs_dir() / ("sweep_" + run_name(quick, {name: ",".join(map(str, values)),
                                                                                       **(parameters or {})}))
    base = base.resolve()  # a task on another node must write where this process reads
    # a list value (e.g. models) is labelled by its text: the summary needs hashable labels
    run_dirs = {(value if isinstance(value, (int, float, str, bool)) else repr(value)): base / run_name(False, {name: value})
                for value in values}
    if engine == "local":
        for label, value in zip(run_dirs, values):
            run_notebooks({**(parameters or {}), name: value}, quick=quick, output=run_dirs[label], progress=progress,
                          **kwargs)
        table = sweep_summary(run_dirs, name)
        base.mkdir(parents=True, exist_ok=True)
        table.to_csv(base / "sweep_summary.csv", float_format="%.4f")
        return base, table

    from alignnb.run import ray_engine  # only here: the local engine never imports Ray

    for value in values:  # every point's parameters are checked before any task starts
        check_parameters({**(parameters or {}), name: value}, quick, kwargs.get("only"), kwargs.get("notebooks"))
    arguments = [(name, value, dict(parameters or {}), quick, str(run_dirs[label]), task_cpus, dict(kwargs))
                 for label, value in zip(run_dirs, values)]
    done = ray_engine.run_points(_sweep_point, arguments, list(run_dirs), task_cpus=task_cpus, address=address,
                                 num_cpus=ray_cpus, progress=progress)
    records = [_sweep_record(done[label], label, run_dirs[label], task_cpus) for label in run_dirs]
    base.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{name: r["value"], **{k: v for k, v in r.items() if k != "value"}} for r in records]).to_csv(
        base / SWEEP_TASKS, index=False)
    ok = {label: run_dirs[label] for label, r in zip(run_dirs, records) if r["status"] == "ok"}
    table = sweep_summary(ok, name)
    table.to_csv(base / "sweep_summary.csv", float_format="%.4f")
    failed = [f"{name}={r['value']}: {r['error']}" for r in records if r["status"] != "ok"]
    if failed:
        raise SweepFailed(f"{len(failed)} of {len(records)} sweep points failed (the others' results are "
                                     f"kept in {base}):\n  " + "\n  ".join(failed), base, table)
    return base, table


