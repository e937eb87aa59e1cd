"""The ``alignnb`` command: run the notebooks with papermill, serve the explorer, render the book, or run stage 1.

    alignnb run [--profile offline|paper] [--quick] [-p NAME VALUE ...] [--output DIR] [--only 01 02] [--sweep seed=0,1,2]
                [--engine local|ray] [--address ADDR] [--task-cpus N]
    alignnb explore [--quick] [--port 8866]
    alignnb book [--run runs/default] [--output runs/book]
    alignnb collect [--levels ...] [--episodes N] [--seed S] [--workers W]

``alignnb run`` builds and validates the :class:`~alignnb.run.study.StudyConfig` before the first
notebook starts, so a bad parameter fails in a second. Each notebook receives the parameters
it declares plus the whole configuration (``study``). A full default run (no --quick, no -p)
writes figures to ``figures/`` and executed notebooks to ``runs/default/``; any other run
writes both under its own folder ``runs/<name>/`` so it never overwrites the figures that the
README shows.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import papermill
from jupyter_client.manager import AsyncKernelManager
from papermill.exceptions import PapermillExecutionError
from traitlets import default

from alignnb.core import config
from alignnb.collect import demos
from alignnb.core import cache
from alignnb.extract import models
from alignnb.core import progress as progress_bars
from alignnb.extract.models import ModelUnavailable
from alignnb.run.study import StudyConfig


ENGINES = ("local", "ray")


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


def study_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in run order."""
    folder = Path(folder) if folder else config.notebooks_dir()
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Names, types and defaults declared in a notebook's ``parameters`` cell."""
    return papermill.inspect_notebook(str(path))


def parse_value(text: str) -> Any:
    """A command-line parameter value: a Python literal if it is one ('3', 'True', '[1, 2]'), else the string."""
    lowered = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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
    paths = [Path(p) for p in notebooks] if notebooks else study_notebooks()
    if not paths:
        raise FileNotFoundError(f"no notebooks to run (looked for NN_*.ipynb in {config.notebooks_dir()})")
    if only:
        missing = [o for o in only if not any(p.name.startswith(str(o)) for p in paths)]
        if missing:
            raise ValueError(f"--only {missing}: no notebook starts with that; the notebooks are "
                             f"{[p.name for p in paths]}")
        paths = [p for p in paths if any(p.name.startswith(str(o)) for o in only)]
    return paths


def notebook_inputs(declared: Mapping[str, Any], cfg: StudyConfig, extra: Mapping[str, Any],
                    figures: str) -> dict[str, Any]:
    """What one notebook receives: its declared study parameters from ``cfg``, the whole
    configuration as ``study``, declared extra parameters, the figures folder, no widgets."""
    study = cfg.to_dict()
    given = {name: study[name] for name in declared if name in study}
    given.update({name: value for name, value in extra.items() if name in declared})
    if "study" in declared:
        given["study"] = study
    if "output_dir" in declared:
        given["output_dir"] = figures
    if "interactive" in declared:
        given["interactive"] = False
    return given


def check_parameters(parameters: Mapping[str, Any], quick: bool = False, only: Sequence[str] | None = None,
                     notebooks: Sequence[str | os.PathLike] | None = None,
                     ) -> tuple[list[Path], dict[Path, dict], StudyConfig, dict[str, Any]]:
    """Validate a run's parameters before anything runs: (notebooks, their declared parameters,
    the study configuration, the notebook-only parameters). Raises ValueError with the reason."""
    for name in ("quick", "output_dir"):
        if name in parameters:
            flag = "--quick" if name == "quick" else "--output"
            raise ValueError(f"-p {name} is set by the runner: use {flag} instead")
    paths = select_notebooks(only, notebooks)
    declared = {p: notebook_parameters(p) for p in paths}
    study_names = set(StudyConfig.names())
    known = study_names.union(*[set(d) for d in declared.values()]) - {"study", "quick", "output_dir", "interactive"}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}: the study's parameters are {sorted(known)}")
    cfg = StudyConfig.from_dict({**{k: v for k, v in parameters.items() if k in study_names}, "quick": bool(quick)})
    extra = {k: v for k, v in parameters.items() if k not in study_names}
    return paths, declared, cfg, extra


def run_notebooks(
    parameters: Mapping[str, Any] | None = None,
    quick: bool = False,
    output: str | os.PathLike | None = None,
    only: Sequence[str] | None = None,
    notebooks: Sequence[str | os.PathLike] | None = None,
    kernel_name: str = "python3",
    timeout: int = 7200,
    progress: bool = True,
) -> Path:
    """Execute the study notebooks in order with papermill; return the run folder.

    The study configuration is built from ``parameters`` and ``quick`` first, so a bad value
    fails before any notebook starts. Every notebook receives the parameters it declares; a
    name that is neither a study parameter nor declared by a notebook is an error (papermill
    would only warn). At the first failure, raises :class:`NotebookFailed` naming notebook and cell.
    """
    parameters = dict(parameters or {})
    paths, declared, cfg, extra = check_parameters(parameters, quick, only, notebooks)

    data_dir = extra.get("data_dir") or None
    cfg.check_sentence_count(data_dir)  # k against the sentence set, if it is cached; else after notebook 01
    name = run_name(quick, parameters)
    run_dir = Path(output) if output else config.runs_dir() / name
    run_dir.mkdir(parents=True, exist_ok=True)
    figures = "" if (name == "default" and output is None) else str((run_dir / "figures").resolve())
    if figures:
        blind = [p.name for p in paths if "output_dir" not in declared[p]]
        if blind:  # it would write into the committed figures/
            raise ValueError(f"{blind} declare no output_dir parameter (check the parameters cell parses)")
    with progress_bars.relayed(progress):  # the kernels' progress bars, drawn on this terminal too
        for path in paths:
            _run_one(path, declared[path], cfg, extra, figures, run_dir, kernel_name, timeout, progress)
            if path.name.startswith("01"):
                cfg.check_sentence_count(data_dir)  # before any agent is trained
    return run_dir


def _run_one(path: Path, declared: Mapping[str, Any], cfg: StudyConfig, extra: Mapping[str, Any], figures: str,
             run_dir: Path, kernel_name: str, timeout: int, progress: bool) -> None:
    """Execute one notebook with papermill into ``run_dir``; raise :class:`NotebookFailed` if it fails."""
    given = notebook_inputs(declared, cfg, extra, figures)
    out = run_dir / path.name
    t0 = time.perf_counter()
    shown = {k: v for k, v in given.items() if k != "study"}
    print(f"[alignnb] {path.name} -> {out}  {shown}", flush=True)
    try:
        papermill.execute_notebook(
            str(path), str(out), parameters=given, kernel_name=kernel_name,
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
            for _, r in pd.read_csv(fig / "alignment_summary.csv").iterrows():
                k = "k" if name == "k" else int(r["k"])  # a sweep over k compares each model across k
                rows.append({name: value, "quantity": f"precision@{k} agent vs {r['model']}", "value": r["precision"]})
    long = pd.DataFrame(rows)
    if long.empty:
        return long
    wide = long.pivot_table(index="quantity", columns=name, values="value", aggfunc="first", sort=False)
    wide["mean"] = wide.mean(axis=1)
    wide["sd"] = wide.drop(columns="mean").std(axis=1, ddof=1) if wide.shape[1] > 2 else float("nan")
    return wide


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
    base = Path(output) if output else config.runs_dir() / ("sweep_" + run_name(quick, {name: ",".join(map(str, values)),
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
    records = ray_engine.run_sweep(name, values, dict(parameters or {}), quick, run_dirs, task_cpus=task_cpus,
                                   address=address, num_cpus=ray_cpus, progress=progress, **kwargs)
    base.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{name: r["value"], **{k: v for k, v in r.items() if k != "value"}} for r in records]).to_csv(
        ray_engine.record_path(base), index=False)
    ok = {label: run_dirs[label] for label, r in zip(run_dirs, records) if r["status"] == "ok"}
    table = sweep_summary(ok, name)
    table.to_csv(base / "sweep_summary.csv", float_format="%.4f")
    failed = [f"{name}={r['value']}: {r['error']}" for r in records if r["status"] != "ok"]
    if failed:
        raise SweepFailed(f"{len(failed)} of {len(records)} sweep points failed (the others' results are "
                                     f"kept in {base}):\n  " + "\n  ".join(failed), base, table)
    return base, table


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """'NAME=V1,V2,...' -> (NAME, [values]); commas inside brackets or quotes do not split."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ValueError(f"--sweep takes NAME=V1,V2,...; got {text!r}")
    values, depth, quote, current = [], 0, "", ""
    for c in rest:
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[(":
            depth += 1
        elif c in "])":
            depth -= 1
        elif c == "," and depth == 0:
            values.append(current)
            current = ""
            continue
        current += c
    values.append(current)
    if any(not v.strip() for v in values):
        raise ValueError(f"--sweep {text!r} has an empty value")
    return name.strip(), [parse_value(v.strip()) for v in values]


def _cmd_run(args: argparse.Namespace) -> int:
    params = {name: parse_value(value) for name, value in (args.param or [])}
    if args.profile:
        params["profile"] = args.profile
    if args.address and args.engine != "ray":
        print("alignnb run: --address needs --engine ray", file=sys.stderr)
        return 1
    errors: tuple[type[BaseException], ...] = (NotebookFailed, ValueError, OSError, ModelUnavailable)
    if args.engine == "ray":
        from alignnb.run import ray_engine  # only here: the local engine never imports ray_engine (nor Ray)

        errors += (ray_engine.EngineUnavailable,)
    try:
        if args.engine == "ray":
            ray_engine.require_ray()  # says how to install it, before anything runs
        if args.sweep:
            name, values = parse_sweep(args.sweep)
            try:
                base, table = run_sweep(name, values, params, quick=args.quick, output=args.output, only=args.only,
                                        timeout=args.timeout, engine=args.engine, address=args.address,
                                        task_cpus=args.task_cpus)
            except SweepFailed as exc:
                print(exc.summary.round(4).to_string())
                print(f"alignnb run: {exc}", file=sys.stderr)
                return 1
            print(table.round(4).to_string())
            print(f"[alignnb] sweep summary: {base / 'sweep_summary.csv'}")
            return 0
        if args.engine == "local":
            os.environ.pop(config.ENGINE_ENV, None)  # an inherited ALIGNNB_ENGINE=ray does not apply
        engine = ray_engine.kernels_on_ray(args.address) if args.engine == "ray" else contextlib.nullcontext()
        with engine:
            run_dir = run_notebooks(params, quick=args.quick, output=args.output, only=args.only,
                                    timeout=args.timeout)
    except errors as exc:
        print(f"alignnb run: {exc}", file=sys.stderr)
        return 1
    print(f"[alignnb] executed notebooks in {run_dir}")
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    try:
        d = demos.collect_demos(args.levels, args.episodes, args.seed, args.workers, args.data_dir, args.force)
    except (ValueError, OSError, demos.DemoCollectionError) as exc:  # no traceback: the message says what to do
        print(f"alignnb collect: {exc}", file=sys.stderr)
        return 1
    print(d)
    print(demos.summarize(d).to_string())
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    from alignnb.run import dashboard

    try:
        cfg = dashboard.cached_study(True if args.quick else None, args.profile, args.data_dir)
        if args.screenshot:
            try:
                shot = dashboard.screenshot(cfg, args.screenshot, args.data_dir)
            except Exception as exc:  # selenium's WebDriverException and kin: a message, not a traceback
                if not type(exc).__module__.startswith("selenium"):
                    raise
                raise RuntimeError(f"the browser failed: {exc}") from exc
            print(f"[alignnb] screenshot of the explorer: {shot}")
            return 0
        with dashboard.serving(cfg, args.port, args.data_dir) as url:
            print(f"[alignnb] the explorer of the {'quick' if cfg.quick else 'full'} study (profile {cfg.profile}) "
                  f"is at {url}  (Ctrl-C stops it)", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except (FileNotFoundError, ValueError, RuntimeError, TimeoutError) as exc:
        print(f"alignnb explore: {exc}", file=sys.stderr)
        return 1


def _cmd_book(args: argparse.Namespace) -> int:
    from alignnb.run import book

    run_dir = Path(args.run) if args.run else config.runs_dir() / "default"
    out = Path(args.output) if args.output else config.runs_dir() / "book"
    try:
        site = book.build_book(run_dir, out)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"alignnb book: {exc}", file=sys.stderr)
        return 1
    problems = book.check_book(site)
    for problem in problems:
        print(f"alignnb book: {problem}", file=sys.stderr)
    print(f"[alignnb] the book of {run_dir}: {site / 'index.html'}")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignnb", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the numbered notebooks with papermill")
    run.add_argument("--quick", action="store_true", help="small, fast run (minutes)")
    run.add_argument("--profile", choices=sorted(models.PROFILES),
                     help="model profile of notebooks 03-05 (paper needs the Hugging Face hub)")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="a notebook parameter; VALUE is read as a Python literal when it is one")
    run.add_argument("--output", help="folder for executed notebooks (and figures, unless default run)")
    run.add_argument("--only", nargs="+", help="run only notebooks whose names start with these (e.g. 01 02)")
    run.add_argument("--sweep", metavar="NAME=V1,V2", help="rerun the pipeline once per value (e.g. seed=0,1,2)")
    run.add_argument("--timeout", type=int, default=7200, help="per-cell execution timeout in seconds")
    run.add_argument("--engine", choices=ENGINES, default="local",
                     help="local (default: this process) or ray (sweep points, agents and embeddings as Ray tasks)")
    run.add_argument("--address", help="with --engine ray: join this Ray cluster (default: start a local instance)")
    run.add_argument("--task-cpus", type=int, default=1, help="with --engine ray: CPUs of each sweep point's task")
    run.set_defaults(func=_cmd_run)

    exp = sub.add_parser("explore", help="serve notebook 05's explorer as a web app (Voila), from the cached study")
    exp.add_argument("--quick", action="store_true", help="the quick study's explorer (default: full if cached)")
    exp.add_argument("--profile", choices=sorted(models.PROFILES), help="model profile of the cached study")
    exp.add_argument("--port", type=int, default=8866, help="local port (default 8866)")
    exp.add_argument("--data-dir", default=None, help="cache folder (default data/ or ALIGNNB_DATA)")
    exp.add_argument("--screenshot", metavar="PNG", help="save the default view (headless Chromium) and stop")
    exp.set_defaults(func=_cmd_explore)

    bk = sub.add_parser("book", help="render the executed notebooks of a run as a static HTML site")
    bk.add_argument("--run", help="run folder with executed notebooks (default runs/default, the last full run)")
    bk.add_argument("--output", help="folder for the site (default runs/book)")
    bk.set_defaults(func=_cmd_book)

    col = sub.add_parser("collect", help="collect bot demonstrations (stage 1)")
    col.add_argument("--levels", nargs="+", default=list(config.DEFAULT_LEVELS))
    col.add_argument("--episodes", type=int, default=20_000, help="episodes per level")
    col.add_argument("--seed", type=int, default=0)
    col.add_argument("--workers", type=int, default=None)
    col.add_argument("--data-dir", default=None)
    col.add_argument("--force", action="store_true")
    col.set_defaults(func=_cmd_collect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
