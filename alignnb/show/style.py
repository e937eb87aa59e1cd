"""The study's one figure style, its colours, and the writers of figures and tables.

``save_figure`` and ``save_table`` write atomically and byte-reproducibly: no software,
producer or creation-date stamps, so a rerun with the same parameters leaves ``git status``
clean. The parameters that made a figure are recorded in its metadata (PNG ``Description``,
PDF ``Subject``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_rgb

from alignnb.agents.learners import LEARNERS
from alignnb.core import cache, paths
from alignnb.extract.models import family_of

#: One fixed colour per model family (Okabe-Ito, colour-blind safe).
FAMILY_COLORS = {
    "agent": "#D55E00",
    "decoder LLM": "#0072B2",
    "encoder LM": "#009E73",
    "sentence encoder": "#56B4E9",
    "VLM text tower": "#CC79A7",
    "control": "#999999",
}
#: One fixed colour per BabyAI level (Okabe-Ito).
LEVEL_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
#: One fixed colour per learner.
LEARNER_COLORS = {name: learner.color for name, learner in LEARNERS.items()}


def set_style() -> None:
    """The study's one style: seaborn ticks, colour-blind palette, TrueType fonts in PDFs."""
    sns.set_theme(style="ticks", context="notebook", palette=LEVEL_COLORS)
    plt.rcParams.update({
        "pdf.fonttype": 42, "ps.fonttype": 42, "figure.dpi": 100, "savefig.dpi": 150,
        "savefig.bbox": "tight", "axes.spines.top": False, "axes.spines.right": False,
        "svg.hashsalt": "alignnb",
    })


def short_level(level: str) -> str:
    """'BabyAI-GoToLocal-v0' -> 'GoToLocal'."""
    return level.removeprefix("BabyAI-").removesuffix("-v0")


_ANNOUNCED: set[Path] = set()


def _folder(out_dir: str | os.PathLike | None) -> Path:
    """:func:`alignnb.core.paths.figures_dir` of ``out_dir``; the first time a notebook run by hand
    writes there (``output_dir`` left empty), it says where, and that ``figures/`` stays untouched."""
    folder = paths.figures_dir(out_dir)
    if not out_dir and folder not in _ANNOUNCED:
        _ANNOUNCED.add(folder)
        print(f"[alignnb] output_dir is empty: figures and tables go to {folder} (the repository's figures/ is "
              "written only by the full default run, make study)", flush=True)
    return folder


def save_figure(fig: plt.Figure, name: str, out_dir: str | os.PathLike | None = None,
                params: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<name>.png`` and ``.pdf`` (default ``runs/interactive/figures``), atomically.

    ``params`` (the notebook parameters that produced the figure) are stored in the files'
    metadata. Returns the paths written.
    """
    folder = _folder(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    desc = json.dumps(dict(params or {}), sort_keys=True, default=str)
    written = []
    for ext, meta in (("png", {"Software": None, "Description": desc}),
                      ("pdf", {"CreationDate": None, "ModDate": None, "Producer": None,
                               "Creator": None, "Subject": desc})):
        path = folder / f"{name}.{ext}"
        with cache.atomic_file(path, "wb") as f:
            fig.savefig(f, format=ext, metadata=meta)
        written.append(path)
    return written


def save_table(df: pd.DataFrame, name: str, out_dir: str | os.PathLike | None = None,
               params: Mapping[str, Any] | None = None, index: bool = True, float_format: str = "%.4f") -> Path:
    """Write a results table as ``<out_dir>/<name>.csv`` (default ``runs/interactive/figures``), atomically, and
    the parameters that produced it beside it as ``<name>.params.json``."""
    path = _folder(out_dir) / f"{name}.csv"
    with cache.atomic_file(path, "w") as f:
        df.to_csv(f, index=index, float_format=float_format, lineterminator="\n")
    if params is not None:
        cache.write_json(path.with_suffix(".params.json"), json.loads(json.dumps(dict(params), default=str)))
    return path


def family_color(key: str) -> str:
    """The colour of a model's family."""
    return FAMILY_COLORS.get(family_of(key), "#000000")


_SHADES = (0.0, 0.45, -0.4, 0.7, -0.65)  # >0 lighter, <0 darker
_MARKERS = ("o", "s", "^", "D", "v")


def model_styles(keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A colour and marker per model: the family's hue, a different shade and marker within a family.

    Models of one family stay recognisable as a family yet are told apart in line plots.
    """
    seen: dict[str, int] = {}
    styles = {}
    for key in dict.fromkeys(keys):
        j = seen[family_of(key)] = seen.get(family_of(key), -1) + 1
        rgb = np.array(to_rgb(family_color(key)))
        t = _SHADES[j % len(_SHADES)]
        rgb = rgb + (1 - rgb) * t if t > 0 else rgb * (1 + t)
        styles[key] = {"color": tuple(float(c) for c in rgb), "marker": _MARKERS[j % len(_MARKERS)]}
    return styles


def new_axes(ax: plt.Axes | None, figsize: tuple[float, float]) -> tuple[plt.Figure, plt.Axes, bool]:
    """``ax``'s figure and ``ax``, or a new figure of ``figsize`` with one axes; the flag says
    whether the figure is new (then the figure function also lays it out)."""
    if ax is not None:
        return ax.figure, ax, False
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax, True


def new_axes_grid(axes: Any, nrows: int, ncols: int, figsize: tuple[float, float],
                  **subplots: Any) -> tuple[plt.Figure, np.ndarray, bool]:
    """``axes`` as an [nrows, ncols] array with its figure, or a new figure of ``figsize`` with
    such a grid (``plt.subplots(..., squeeze=False)``); the flag says whether the figure is new."""
    if axes is not None:
        grid = np.asarray(axes, dtype=object).reshape(nrows, ncols)
        return grid.flat[0].figure, grid, False
    fig, grid = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **subplots)
    return fig, grid, True
