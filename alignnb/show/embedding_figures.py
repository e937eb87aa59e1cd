"""Figures of the embedding spaces themselves (notebooks 03-04): their norm and cosine
distributions, 2-D projections and a Procrustes picture. Each draws what
:mod:`alignnb.measure.projections` computed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from alignnb.measure.projections import ProcrustesPicture, Projection
from alignnb.show.style import LEVEL_COLORS, family_color, new_axes, new_axes_grid

_NAMED_COLORS = {"red": "#D62728", "green": "#2CA02C", "blue": "#1F77B4", "purple": "#9467BD",
                 "yellow": "#E6C200", "grey": "#7F7F7F", "none": "#000000"}


def embedding_sanity(distributions: Mapping[str, Mapping[str, np.ndarray]],
                     axes: Sequence[plt.Axes] | None = None) -> tuple[plt.Figure, Any]:
    """Per model, violins of the vector norms (relative to the median; left) and of the pairwise
    cosine similarities (right). ``distributions``:
    :func:`alignnb.measure.projections.embedding_distributions`. Draws on ``axes`` (two) when given."""
    keys = list(distributions)
    fig, grid, new = new_axes_grid(axes, 1, 2, (11, 0.45 * len(keys) + 1.6))
    row = grid[0]
    norm_data = [distributions[key]["norm"] for key in keys]
    cos_data = [distributions[key]["cosine"] for key in keys]
    for ax, data, label in ((row[0], norm_data, "norm / median norm"),
                            (row[1], cos_data, "pairwise cosine similarity")):
        parts = ax.violinplot(data, vert=False, showmedians=True, widths=0.8)
        for body, key in zip(parts["bodies"], keys):
            body.set_facecolor(family_color(key))
            body.set_alpha(0.7)
        ax.set_yticks(range(1, len(keys) + 1), keys)
        ax.set_xlabel(label)
        ax.invert_yaxis()
    row[1].set_yticklabels([])
    if new:
        fig.tight_layout()
    return fig, (row if new else axes)


def scatter_by(ax: plt.Axes, xy: np.ndarray, labels: Sequence[str], title: str, legend: bool) -> plt.Axes:
    """2-D points on ``ax``, one colour per label value (named colours for colour attributes)."""
    values = list(dict.fromkeys(labels))
    palette = dict(zip(values, LEVEL_COLORS * 3))
    if set(values) <= set(_NAMED_COLORS):
        palette = _NAMED_COLORS
    for v in values:
        sel = np.asarray(labels) == v
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=palette[v], label=v, alpha=0.8, lw=0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if legend:
        ax.legend(frameon=False, fontsize=6, markerscale=2, loc="best")
    return ax


def projection_grid(projections: Mapping[str, Projection], attributes: pd.DataFrame,
                    by: Sequence[str] = ("verb", "color", "object"), axes: Any = None) -> tuple[plt.Figure, Any]:
    """Each space's 2-D projection (rows) coloured by each sentence attribute (columns).

    ``projections``: :func:`alignnb.measure.projections.project_spaces`; ``attributes`` has a
    row per sentence. Draws on ``axes`` ([len(projections), len(by)]) when given.
    """
    keys = list(projections)
    fig, grid, new = new_axes_grid(axes, len(keys), len(by), (3.1 * len(by), 2.7 * len(keys)))
    for r, key in enumerate(keys):
        p = projections[key]
        for c, col in enumerate(by):
            labels = attributes.loc[p.sentences, col].fillna("none").astype(str).to_list()
            scatter_by(grid[r, c], p.xy, labels, f"{key} · {col}", legend=(r == 0))
    if new:
        fig.tight_layout()
    return fig, (grid if new else axes)


def procrustes_picture(picture: ProcrustesPicture, labels: Sequence[str], name_a: str, name_b: str,
                       ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """A mapped onto B by Procrustes, both in B's first two principal axes: B's points (o) and A's
    mapped points (x), coloured by label, a grey line from each drawn sentence's mapped A point
    to its B point, the disparity in the title. ``picture``:
    :func:`alignnb.measure.projections.procrustes_2d`."""
    pa, pb = picture.mapped, picture.target
    fig, ax, new = new_axes(ax, (6, 5))
    for i in picture.lines:
        ax.plot([pa[i, 0], pb[i, 0]], [pa[i, 1], pb[i, 1]], color="#BBBBBB", lw=0.5, zorder=1)
    values = list(dict.fromkeys(labels))
    for j, v in enumerate(values):
        sel = np.asarray(labels) == v
        col = LEVEL_COLORS[j % len(LEVEL_COLORS)]
        ax.scatter(pb[sel, 0], pb[sel, 1], s=10, color=col, marker="o", label=f"{v} ({name_b})", zorder=2)
        ax.scatter(pa[sel, 0], pa[sel, 1], s=14, color=col, marker="x", lw=0.8, label=f"{v} ({name_a} mapped)",
                   zorder=3)
    ax.set_title(f"{name_a} mapped onto {name_b} (Procrustes disparity {picture.disparity:.2f})", fontsize=10)
    ax.set_xlabel(f"{name_b} PC 1")
    ax.set_ylabel(f"{name_b} PC 2")
    ax.legend(frameon=False, fontsize=6, ncols=2)
    if new:
        fig.tight_layout()
    return fig, ax
