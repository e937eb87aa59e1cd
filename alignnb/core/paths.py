"""Where things live (data, figures, runs, notebooks) and the versions recorded with every artifact.

Generated data lives under ``data/`` (overridable with the ``ALIGNNB_DATA`` environment
variable or a stage's ``data_dir`` argument); figures of the full default run go to
``figures/`` (:func:`record_figures_dir`), those of any other run under ``runs/``
(:func:`figures_dir`); executed notebooks go to ``runs/``. Light: imports neither torch nor numpy.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

#: The repository root when the package is installed in development mode (``pip install -e .``).
REPO_ROOT = Path(__file__).resolve().parents[2]


def _in_repo() -> bool:
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "alignnb").is_dir()


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Where generated data (demonstrations, checkpoints, embeddings) is cached.

    Order: the explicit ``override``, then ``$ALIGNNB_DATA``, then ``<repo>/data`` (or
    ``./data`` when the package is not installed from a checkout).
    """
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("ALIGNNB_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT if _in_repo() else Path.cwd()) / "data"


def figures_dir(override: str | os.PathLike | None = None) -> Path:
    """Where a notebook writes its figures and tables: ``override`` if given, else
    ``runs/interactive/figures``.

    A notebook run by hand (JupyterLab, an edited parameter, papermill without the runner)
    leaves ``output_dir`` empty and so never touches the committed ``figures/``: only the full
    default run of ``alignnb run`` (``make study``) writes there, by passing
    :func:`record_figures_dir` as ``output_dir`` (:func:`alignnb.run.notebooks.run_notebooks`).
    """
    if override:
        return Path(override).expanduser().resolve()
    return runs_dir() / "interactive" / "figures"


def record_figures_dir() -> Path:
    """The committed ``figures/``: what the full default run wrote, and what the README and book show."""
    return (REPO_ROOT if _in_repo() else Path.cwd()) / "figures"


def runs_dir() -> Path:
    """Where executed notebooks and the outputs of non-default runs go."""
    return (REPO_ROOT if _in_repo() else Path.cwd()) / "runs"


def results_dir() -> Path:
    """The committed executed notebooks of the last full run (``<repo>/results``, alignnb.run.results)."""
    return REPO_ROOT / "results"


def notebooks_dir() -> Path:
    """The folder of the numbered study notebooks."""
    return REPO_ROOT / "notebooks"


def study_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """The numbered study notebooks (``NN_name.ipynb``) of ``folder`` in run order: the one place
    that finds them (the runner, the book and the tests all call this)."""
    folder = Path(folder) if folder else notebooks_dir()
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``"unknown"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str]:
    """Versions that go into every artifact's metadata."""
    return {
        "alignnb": package_version("alignnb"),
        "minigrid": package_version("minigrid"),
        "gymnasium": package_version("gymnasium"),
        "numpy": package_version("numpy"),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "python": platform.python_version(),
    }
