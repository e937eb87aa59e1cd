"""The executed notebooks of the full default run, kept in the repository (``results/``).

``make study`` (``alignnb run`` with no ``--quick``, ``--output`` or parameter) executes the
notebooks into ``runs/default/`` and then :func:`publish` writes a copy of each into
``results/``, which is committed next to ``figures/``. GitHub, nbviewer and ``make book`` show
those copies, so the study can be read without running it, as fastbook's repository is read.

A published notebook is the executed one with only what a rerun would change for no reason
removed (:func:`stable`):

- papermill's and Jupyter's timing metadata (start and end times, durations, kernel status),
  and papermill's input and output paths;
- the id of papermill's injected-parameters cell (a fresh random id on every run), made
  ``injected-parameters``;
- saved widgets (progress bars under papermill), replaced by the static text of their final
  state (:func:`alignnb.run.book.for_the_book`): a widget's model id is random, and GitHub
  cannot draw widgets;
- the repository's absolute path in text outputs and in the injected parameters, written ``<repo>``.

Everything else, every printed line, table and figure, is kept as the run made it, including
progress bars' elapsed times (they are what that run measured).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat

from alignnb.core import cache, paths
from alignnb.run.book import for_the_book

#: The id given to papermill's injected-parameters cell.
INJECTED_ID = "injected-parameters"
_VOLATILE_CELL_METADATA = ("execution", "papermill", "collapsed", "scrolled")
_KEPT_PAPERMILL = ("parameters", "default_parameters")


def _without_repo(text: str, repo: str) -> str:
    return text.replace(repo + os.sep, "<repo>" + os.sep).replace(repo, "<repo>")


def stable(nb: nbformat.NotebookNode, repo: str | os.PathLike | None = None) -> nbformat.NotebookNode:
    """``nb`` without its volatile metadata (see the module docstring), in place; returned.

    Idempotent: ``stable(stable(nb))`` equals ``stable(nb)``. ``repo`` (default: the
    repository root) is the absolute path written ``<repo>`` in text outputs.
    """
    repo = str(paths.REPO_ROOT if repo is None else repo)
    nb = for_the_book(nb)
    kept = {k: v for k, v in nb.metadata.get("papermill", {}).items() if k in _KEPT_PAPERMILL}
    if "parameters" in kept:  # the runner passes the repository's figures folder as an absolute path
        kept["parameters"] = {k: _without_repo(v, repo) if isinstance(v, str) else v
                              for k, v in kept["parameters"].items()}
    if "papermill" in nb.metadata:
        nb.metadata["papermill"] = kept
    for cell in nb.cells:
        for key in _VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = INJECTED_ID
            cell["source"] = _without_repo(cell["source"], repo)
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = _without_repo("".join(out["text"]), repo)
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, (str, list)):
                    out["data"][mime] = _without_repo("".join(value), repo)
            if out.get("output_type") == "error":
                out["traceback"] = [_without_repo(line, repo) for line in out.get("traceback", [])]
    return nb


def publish(run_dir: str | os.PathLike, target: str | os.PathLike | None = None) -> list[Path]:
    """Write :func:`stable` copies of the executed notebooks of ``run_dir`` into ``target``.

    ``target`` defaults to ``paths.results_dir()``. Each file is written atomically; a notebook
    of ``target`` that the run does not have is removed, so the folder is exactly the run.
    Returns the written paths in run order.
    """
    target = paths.results_dir() if target is None else Path(target)
    found = paths.study_notebooks(Path(run_dir))
    if not found:
        raise FileNotFoundError(f"{run_dir} has no executed notebooks (NN_*.ipynb) to publish")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in found:
        nb = stable(nbformat.read(path, as_version=4))
        with cache.atomic_file(target / path.name, "w") as f:
            nbformat.write(nb, f)
        written.append(target / path.name)
    for old in paths.study_notebooks(target):
        if old.name not in {p.name for p in written}:
            old.unlink()
    return written
