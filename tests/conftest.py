"""Shared fixtures: every test writes under a temporary data folder, never into data/ or figures/."""

from __future__ import annotations

import os

import alignnb  # noqa: F401  (first: it pins the CPU kernels before torch starts, alignnb.core.numerics)
import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from support import LEVELS


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> str:
    """A session-wide cache folder (ALIGNNB_DATA) shared by tests and the notebooks they run."""
    root = tmp_path_factory.mktemp("alignnb-data")
    os.environ["ALIGNNB_DATA"] = str(root)
    return str(root)


@pytest.fixture(scope="session")
def small_demos(data_root):
    """30 bot episodes per default level, collected with 2 workers."""
    from alignnb.collect import demos

    return demos.collect_demos(LEVELS, 30, seed=7, workers=2, data_dir=data_root, progress=False)


@pytest.fixture(scope="session")
def quick_run(data_root, tmp_path_factory):
    """One whole quick study (`alignnb run --quick`) for the session: its run folder, with the
    executed notebooks and ``figures/``. The whole-study test, the book and the browser tests share it."""
    from alignnb.run import notebooks

    return notebooks.run_notebooks(quick=True, output=tmp_path_factory.mktemp("quick-run") / "run", progress=False)
