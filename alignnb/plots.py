"""Every figure of the study, in one style; ``save_figure`` writes PNG + PDF.

Plot functions return ``(fig, ax)`` (or ``(fig, axes)``) and never save by themselves.
Saved files are byte-reproducible: no software, producer or creation-date stamps, so a
rerun with the same parameters leaves ``git status`` clean. The parameters that made a
figure are recorded in its metadata (PNG ``Description``, PDF ``Subject``).
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

from . import config, io

#: One fixed colour per model family (Okabe-Ito, colour-blind safe).
FAMILY_COLORS = {
    "agent": "#D55E00",
    "decoder LLM": "#0072B2",
    "encoder LM": "#009E73",
    "VLM text tower": "#CC79A7",
    "control": "#999999",
}
#: One fixed colour per BabyAI level (Okabe-Ito).
LEVEL_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]


def set_style() -> None:
    """The study's one style: seaborn ticks, colour-blind palette, TrueType fonts in PDFs."""
    import seaborn as sns

    sns.set_theme(style="ticks", context="notebook", palette=LEVEL_COLORS)
    plt.rcParams.update({
        "pdf.fonttype": 42, "ps.fonttype": 42, "figure.dpi": 100, "savefig.dpi": 150,
        "savefig.bbox": "tight", "axes.spines.top": False, "axes.spines.right": False,
        "svg.hashsalt": "alignnb",
    })


def short_level(level: str) -> str:
    """'BabyAI-GoToLocal-v0' -> 'GoToLocal'."""
    return level.removeprefix("BabyAI-").removesuffix("-v0")


def save_figure(fig: plt.Figure, name: str, out_dir: str | os.PathLike | None = None,
                params: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<name>.png`` and ``.pdf`` (default ``figures/``), atomically.

    ``params`` (the notebook parameters that produced the figure) are stored in the files'
    metadata. Returns the paths written.
    """
    folder = config.figures_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    desc = json.dumps(dict(params or {}), sort_keys=True, default=str)
    written = []
    for ext, meta in (("png", {"Software": None, "Description": desc}),
                      ("pdf", {"CreationDate": None, "ModDate": None, "Producer": None,
                               "Creator": None, "Subject": desc})):
        path = folder / f"{name}.{ext}"
        with io.atomic_file(path, "wb") as f:
            fig.savefig(f, format=ext, metadata=meta)
        written.append(path)
    return written


def save_table(df: pd.DataFrame, name: str, out_dir: str | os.PathLike | None = None,
               index: bool = True, float_format: str = "%.4f") -> Path:
    """Write a results table as ``<out_dir>/<name>.csv`` (default ``figures/``), atomically."""
    path = config.figures_dir(out_dir) / f"{name}.csv"
    with io.atomic_file(path, "w") as f:
        df.to_csv(f, index=index, float_format=float_format, lineterminator="\n")
    return path


# --------------------------------------------------------------------------------------
# stage 1: demonstrations
# --------------------------------------------------------------------------------------


def episode_lengths(episodes: pd.DataFrame, levels: Sequence[str]) -> tuple[plt.Figure, plt.Axes]:
    """Histogram of bot episode lengths (env steps), one panel per level."""
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 2.8), sharey=False, squeeze=False)
    axes = axes[0]
    for i, (ax, level) in enumerate(zip(axes, levels)):
        lengths = episodes.loc[episodes["level"] == level, "length"].to_numpy()
        bins = np.arange(0.5, lengths.max() + 1.5) if len(lengths) else 10
        ax.hist(lengths, bins=bins, color=LEVEL_COLORS[i % len(LEVEL_COLORS)])
        ax.set_title(f"{short_level(level)}\nmean {lengths.mean():.1f}, max {lengths.max()}", fontsize=10)
        ax.set_xlabel("episode length (steps)")
    axes[0].set_ylabel("episodes")
    fig.tight_layout()
    return fig, axes


def action_distribution(counts: pd.DataFrame) -> tuple[plt.Figure, plt.Axes]:
    """Share of each bot action per level (rows of ``counts`` are levels, columns actions)."""
    share = counts.div(counts.sum(axis=1), axis=0)
    share.index = [short_level(i) for i in share.index]
    fig, ax = plt.subplots(figsize=(7, 2.8))
    x = np.arange(len(share.columns))
    width = 0.8 / len(share)
    for i, (level, row) in enumerate(share.iterrows()):
        ax.bar(x + (i - (len(share) - 1) / 2) * width, row.to_numpy(), width, label=level,
               color=LEVEL_COLORS[i % len(LEVEL_COLORS)])
    ax.set_xticks(x, share.columns)
    ax.set_ylabel("share of frames")
    ax.legend(frameon=False, fontsize=8, ncols=2)
    fig.tight_layout()
    return fig, ax


def frame_grid(examples: Sequence[tuple[str, str, list[np.ndarray]]], n_frames: int = 4,
               action_names: Sequence[str] | None = None,
               actions: Sequence[Sequence[int]] | None = None) -> tuple[plt.Figure, np.ndarray]:
    """Rows of rendered frames, one row per (level, mission, frames) example.

    Shows ``n_frames`` frames evenly spaced from the first to the last; with ``actions`` each
    frame is captioned with the action taken from it.
    """
    fig, axes = plt.subplots(len(examples), n_frames, figsize=(2.1 * n_frames, 2.35 * len(examples)),
                             squeeze=False)
    for r, (level, mission, frames) in enumerate(examples):
        picks = np.unique(np.linspace(0, len(frames) - 1, n_frames).round().astype(int))
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c >= len(picks):
                continue
            t = picks[c]
            ax.imshow(frames[t])
            caption = f"t={t}"
            if actions is not None and action_names is not None and t < len(actions[r]):
                caption += f": {action_names[actions[r][t]]}"
            elif t == len(frames) - 1:
                caption += " (done)"
            ax.set_title(caption, fontsize=8)
        axes[r][0].text(-0.05, 0.5, f"{short_level(level)}\n\"{mission}\"", transform=axes[r][0].transAxes,
                        ha="right", va="center", fontsize=8, wrap=True)
    fig.tight_layout()
    return fig, axes
