"""The rendered book: a static HTML site of the study's executed notebooks (``make book``).

The book is built with Sphinx, myst-nb and sphinx-book-theme, the pure-Python Executable Books
stack, so it builds offline (Jupyter Book 2 needs Node.js). It never executes a notebook: by
default it renders the committed notebooks of the last full run (``results/``, written by
:func:`alignnb.run.results.publish`), so a fresh clone builds it in seconds with no study run;
``--run DIR`` renders another run's folder instead (``runs/quick/``).

The configuration and the front page are committed files, ``docs/book/conf.py`` and
``docs/book/index.md``. The front page takes the README's title and its results section with
MyST's ``{include}`` directive (``:start-after:``/``:end-before:`` markers and
``:relative-images:``). :func:`build_book` only assembles one source folder (those two files,
the README, the figures, the notebooks) and runs ``sphinx-build -W --keep-going``, so a
missing image, an unknown link or a broken reference fails the build with Sphinx's own
warnings. Saved widgets (tqdm bars under papermill) are shown as the static text of their
final state, so no page needs the widget JavaScript from a CDN.
"""

from __future__ import annotations

import html
import re
import shutil
import time
from pathlib import Path
from typing import Any

import nbformat

from alignnb.core import paths

#: Marks a folder made by :func:`build_book`, the only kind it will clean.
MARKER = ".alignnb-book"
#: The committed Sphinx source: conf.py and index.md.
BOOK_SOURCE = paths.REPO_ROOT / "docs" / "book"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_RUN_HINT = ("the committed results/ come from `make study`; or run the study (`make study`, or "
             "`alignnb run --quick` and then `alignnb book --run runs/quick`)")
_IMAGES = ("*.png", "*.svg", "*.jpg", "*.gif")


def executed_notebooks(run_dir: Path) -> list[Path]:
    """The executed notebooks ``NN_*.ipynb`` of ``run_dir`` in run order, or a FileNotFoundError."""
    run_dir = Path(run_dir)
    found = paths.study_notebooks(run_dir) if run_dir.is_dir() else []
    if not found:
        where = "does not exist" if not run_dir.exists() else "has no executed notebooks (NN_*.ipynb)"
        raise FileNotFoundError(f"{run_dir} {where}: {_RUN_HINT}")
    return found


# --- notebooks -------------------------------------------------------------------------------

def _is_executed(nb: nbformat.NotebookNode) -> bool:
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    return not code or any(c.get("outputs") or c.get("execution_count") is not None for c in code)


def widget_text(model_id: str, state: dict[str, Any]) -> str | None:
    """The static text of a saved widget: its labels and progress bars in order, a bar drawn as ten
    blocks (a tqdm bar reads ``models: 100%|██████████| 10/10 [...]``); None for any other widget."""
    model = state.get(model_id)
    if model is None:
        return None
    name, values = model.get("model_name", ""), model.get("state", {})
    if name in ("HBoxModel", "VBoxModel", "BoxModel"):
        pieces = [widget_text(str(c).removeprefix("IPY_MODEL_"), state) for c in values.get("children", [])]
        if any(p is None for p in pieces):
            return None
        return ("" if name == "HBoxModel" else "\n").join(pieces)
    if name in ("HTMLModel", "HTMLMathModel", "LabelModel"):
        return html.unescape(re.sub(r"<[^>]+>", "", str(values.get("value", "")))).replace("\u2007", " ")
    if name in ("FloatProgressModel", "IntProgressModel"):
        span = float(values.get("max", 100)) - float(values.get("min", 0))
        done = (float(values.get("value", 0)) - float(values.get("min", 0))) / span if span > 0 else 0.0
        filled = max(0, min(10, round(10 * done)))
        return "|" + "\u2588" * filled + " " * (10 - filled) + "|"
    return None


def for_the_book(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook as the book shows it: each widget output replaced by the text of its saved
    state (or its own text/plain fallback) and the widget state removed, so no page loads widget
    JavaScript; papermill's injected-parameters cell collapsed (``hide-input``)."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                text = widget_text(str(data[WIDGET_VIEW].get("model_id", "")), state)
                del data[WIDGET_VIEW]
                if text is not None:
                    data["text/plain"] = text
                elif not data:
                    data["text/plain"] = "[interactive widget: run the notebook to use it]"
    return nb


# --- the build -------------------------------------------------------------------------------

def _clean(out_dir: Path) -> None:
    """Empty ``out_dir`` for a fresh build, but only if build_book made it (it holds MARKER)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise NotADirectoryError(f"{out_dir} is a file: give build_book a folder for the book")
        if any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
            raise FileExistsError(f"{out_dir} is not empty and was not made by build_book: "
                                  "choose an empty or new folder for the book")
        for child in ("src", "html", "doctrees", "jupyter_execute"):
            shutil.rmtree(out_dir / child, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("made by alignnb.run.book.build_book; its subfolders are rebuilt on each build\n")


def _sphinx(src: Path, out_dir: Path, log: Path) -> int:
    """``sphinx-build -W --keep-going -b html src out_dir/html``, in-process; warnings go to ``log``."""
    from sphinx.cmd.build import build_main

    return build_main(["-b", "html", "-W", "--keep-going", "-E", "-a", "-q", "-w", str(log),
                       "-d", str(out_dir / "doctrees"), str(src), str(out_dir / "html")])


def build_book(run_dir: Path | None = None, out_dir: Path | None = None, readme: Path | None = None,
               repo_figures: Path | None = None, source: Path | None = None, progress: bool = True) -> Path:
    """Build the book of the executed notebooks of ``run_dir`` into ``out_dir``; return the site folder.

    ``run_dir`` defaults to the committed ``results/``, ``out_dir`` to ``runs/book``,
    ``readme`` to the repository's README.md, ``repo_figures`` to ``figures/`` (the images the
    README's results section shows) and ``source`` to ``docs/book`` (conf.py, index.md).
    ``out_dir`` receives ``src/`` (the assembled Sphinx source), ``html/`` (the site, returned),
    ``doctrees/`` and ``warnings.log``. Any Sphinx warning is an error (``-W --keep-going``):
    a RuntimeError that quotes the warnings. Notebooks are rendered as stored, never executed.
    """
    t0 = time.perf_counter()
    run_dir = paths.results_dir() if run_dir is None else Path(run_dir)
    out_dir = paths.runs_dir() / "book" if out_dir is None else Path(out_dir)
    readme = paths.REPO_ROOT / "README.md" if readme is None else Path(readme)
    figures = paths.record_figures_dir() if repo_figures is None else Path(repo_figures)
    source = BOOK_SOURCE if source is None else Path(source)
    notebooks = []
    for path in executed_notebooks(run_dir):
        nb = nbformat.read(path, as_version=4)
        if not _is_executed(nb):
            raise ValueError(f"{path} has no outputs: it was never executed. Build the book from an executed "
                             f"run ({_RUN_HINT}), not from notebooks/")
        notebooks.append((path.name, for_the_book(nb)))
    for needed in (readme, source / "conf.py", source / "index.md"):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found: the book is made from docs/book/ and the README")

    _clean(out_dir)
    src = out_dir / "src"
    shutil.copytree(source, src, ignore=shutil.ignore_patterns("__pycache__", "_build"))
    shutil.copy2(readme, src / "README.md")
    if figures.is_dir():  # the README's figures/NAME images, found by :relative-images:
        (src / "figures").mkdir()
        for pattern in _IMAGES:
            for image in figures.glob(pattern):
                shutil.copy2(image, src / "figures" / image.name)
    for name, nb in notebooks:
        nbformat.write(nb, src / name)

    log = out_dir / "warnings.log"
    log.write_text("", encoding="utf-8")
    if progress:
        print(f"book: {len(notebooks)} notebooks of {run_dir} -> {out_dir / 'html'}", flush=True)
    status = _sphinx(src, out_dir, log)
    warned = "\n".join(dict.fromkeys(line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()))
    if status != 0 or warned:
        raise RuntimeError(f"the book's Sphinx build failed (sphinx-build -W: every warning is an error); "
                           f"sources in {src}, warnings in {log}:\n{warned[-4000:] or f'exit status {status}'}")
    site = out_dir / "html"
    missing = [name for name, _ in notebooks if not (site / f"{Path(name).stem}.html").is_file()]
    if missing:
        raise RuntimeError(f"the book has no page for {missing}: check the toctree of {source / 'index.md'}")
    if progress:
        print(f"book: {site / 'index.html'} in {time.perf_counter() - t0:.1f} s, no warnings", flush=True)
    return site
