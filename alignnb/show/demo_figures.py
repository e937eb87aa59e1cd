"""Figures of stage 1 (notebook 01): the bot's demonstrations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from alignnb.show.style import LEVEL_COLORS, new_axes, new_axes_grid, short_level


def episode_lengths(episodes: pd.DataFrame, levels: Sequence[str],
                    axes: Sequence[plt.Axes] | None = None) -> tuple[plt.Figure, Any]:
    """Histogram of bot episode lengths (env steps), one panel per level, its mean and maximum in the title.

    Draws on ``axes`` (one per level) when given; otherwise on a new row of panels.
    """
    fig, grid, new = new_axes_grid(axes, 1, len(levels), (3.2 * len(levels), 2.8), sharey=False)
    row = grid[0]
    for i, (ax, level) in enumerate(zip(row, levels)):
        lengths = episodes.loc[episodes["level"] == level, "length"].to_numpy()
        bins = np.arange(0.5, lengths.max() + 1.5) if len(lengths) else 10
        ax.hist(lengths, bins=bins, color=LEVEL_COLORS[i % len(LEVEL_COLORS)])
        ax.set_title(f"{short_level(level)}\nmean {lengths.mean():.1f}, max {lengths.max()}", fontsize=10)
        ax.set_xlabel("episode length (steps)")
    row[0].set_ylabel("episodes")
    if new:
        fig.tight_layout()
    return fig, (row if new else axes)


def action_distribution(shares: pd.DataFrame, ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """Share of each bot action per level, grouped bars (rows of ``shares`` are levels, columns
    actions, each row summing to 1: :func:`alignnb.measure.projections.action_shares`)."""
    labels = [short_level(i) for i in shares.index]
    fig, ax, new = new_axes(ax, (7, 2.8))
    x = np.arange(len(shares.columns))
    width = 0.8 / len(shares)
    for i, (level, (_, row)) in enumerate(zip(labels, shares.iterrows())):
        ax.bar(x + (i - (len(shares) - 1) / 2) * width, row.to_numpy(), width, label=level,
               color=LEVEL_COLORS[i % len(LEVEL_COLORS)])
    ax.set_xticks(x, shares.columns)
    ax.set_ylabel("share of frames")
    ax.legend(frameon=False, fontsize=8, ncols=2)
    if new:
        fig.tight_layout()
    return fig, ax


def frame_grid(examples: Sequence[tuple[str, str, list[np.ndarray]]], n_frames: int = 4,
               action_names: Sequence[str] | None = None, actions: Sequence[Sequence[int]] | None = None,
               axes: Any = None) -> tuple[plt.Figure, Any]:
    """Rows of rendered frames, one row per (level, mission, frames) example.

    Shows ``n_frames`` frames evenly spaced from the first to the last; with ``actions`` each
    frame is captioned with the action taken from it. Draws on ``axes`` ([len(examples),
    n_frames]) when given.
    """
    fig, grid, new = new_axes_grid(axes, len(examples), n_frames, (2.1 * n_frames, 2.35 * len(examples)))
    for r, (level, mission, frames) in enumerate(examples):
        picks = np.unique(np.linspace(0, len(frames) - 1, n_frames).round().astype(int))
        for c, ax in enumerate(grid[r]):
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
        grid[r][0].text(-0.05, 0.5, f"{short_level(level)}\n\"{mission}\"", transform=grid[r][0].transAxes,
                        ha="right", va="center", fontsize=8, wrap=True)
    if new:
        fig.tight_layout()
    return fig, (grid if new else axes)
