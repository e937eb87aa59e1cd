"""Figures of stage 2 (notebook 02): the trained agents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb

from alignnb.show.style import LEARNER_COLORS, LEVEL_COLORS, new_axes, new_axes_grid, short_level


def learning_curves(history: pd.DataFrame, levels: Sequence[str],
                    axes: Sequence[plt.Axes] | None = None) -> tuple[plt.Figure, Any]:
    """Left: training and validation loss per step. Right: success rate per level over training.

    Draws on ``axes`` (two axes) when given.
    """
    fig, grid, new = new_axes_grid(axes, 1, 2, (10, 3.4))
    row = grid[0]
    h = history
    if "train_loss" in h:
        d = h.dropna(subset=["train_loss"])
        row[0].plot(d["step"], d["train_loss"], label="train (running mean)", color="#555555")
    if "val_loss" in h:
        d = h.dropna(subset=["val_loss"])
        row[0].plot(d["step"], d["val_loss"], "o-", ms=3, label="validation", color="#D55E00")
    row[0].set_yscale("log")
    row[0].set_xlabel("optimizer step")
    row[0].set_ylabel("cross-entropy")
    row[0].legend(frameon=False)
    for i, level in enumerate(levels):
        col = f"success/{level}"
        if col in h:
            d = h.dropna(subset=[col])
            row[1].plot(d["step"], d[col], "o-", ms=3, label=short_level(level),
                        color=LEVEL_COLORS[i % len(LEVEL_COLORS)])
    row[1].set_ylim(0, 1.02)
    row[1].set_xlabel("optimizer step")
    row[1].set_ylabel("success rate (greedy)")
    row[1].legend(frameon=False, fontsize=8)
    if new:
        fig.tight_layout()
    return fig, (row if new else axes)


def curves_grid(histories: Mapping[tuple[str, int], pd.DataFrame], levels: Sequence[str],
                goals: Mapping[str, Mapping[str, float]] | None = None,
                axes: Sequence[plt.Axes] | None = None) -> tuple[plt.Figure, Any]:
    """Small multiples of every agent's training: one row per learner, one column per level
    plus the validation loss; one line per seed (success at each check on validation layouts;
    its last point is the final test evaluation), with the learner's goal dashed.
    ``histories``: {(learner, seed): a run's history}."""
    learners = list(dict.fromkeys(learner for learner, _ in histories))
    ncols = len(levels) + 1
    fig, grid, new = new_axes_grid(axes, len(learners), ncols, (2.4 * ncols, 2.2 * len(learners)), sharex="row")
    for r, learner in enumerate(learners):
        runs = [(seed, h) for (lr, seed), h in histories.items() if lr == learner]
        base = np.array(to_rgb(LEARNER_COLORS.get(learner, "#999999")))
        for j, (seed, h) in enumerate(runs):
            color = base + (1 - base) * (0.6 * j / max(len(runs) - 1, 1))
            for c, level in enumerate(levels):
                col = f"success/{level}"
                if col in h:
                    d = h.dropna(subset=[col])
                    grid[r, c].plot(d["step"], d[col], "o-", ms=2, lw=1, color=color, label=f"seed {seed}")
            if "val_loss" in h:
                d = h.dropna(subset=["val_loss"])
                grid[r, -1].plot(d["step"], d["val_loss"], lw=1, color=color, label=f"seed {seed}")
        for c, level in enumerate(levels):
            ax = grid[r, c]
            if goals and learner in goals and level in goals[learner]:
                ax.axhline(goals[learner][level], color="black", lw=0.8, ls="--")
            ax.set_ylim(0.5, 1.01)
            ax.set_title(f"{learner}: {short_level(level)}", fontsize=8)
            ax.tick_params(labelsize=7)
        grid[r, 0].set_ylabel("success at checks", fontsize=8)
        grid[r, -1].set_yscale("log")
        grid[r, -1].set_title(f"{learner}: validation loss", fontsize=8)
        grid[r, -1].tick_params(labelsize=7)
        grid[r, -1].legend(frameon=False, fontsize=6)
    for ax in grid[-1]:
        ax.set_xlabel("optimizer step", fontsize=8)
    if new:
        fig.tight_layout()
    return fig, (grid if new else axes)


def success_bars(greedy: pd.DataFrame, sampled: pd.DataFrame | None = None,
                 goals: Mapping[str, float] | None = None, ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """Success rate per level, greedy (and sampled) actions, each bar labelled, with goal marks."""
    fig, ax, new = new_axes(ax, (6.5, 3.2))
    x = np.arange(len(greedy))
    width = 0.38 if sampled is not None else 0.6
    ax.bar(x - (width / 2 if sampled is not None else 0), greedy["success_rate"], width, label="greedy (argmax)",
           color="#0072B2")
    if sampled is not None:
        ax.bar(x + width / 2, sampled["success_rate"], width, label="sampled", color="#56B4E9")
    for i, (lv, sr) in enumerate(zip(greedy["level"], greedy["success_rate"])):
        ax.text(i - (width / 2 if sampled is not None else 0), sr + 0.01, f"{sr:.1%}", ha="center", fontsize=8)
        if goals and lv in goals:
            ax.hlines(goals[lv], i - 0.45, i + 0.45, color="black", lw=1, ls="--",
                      label="goal" if i == 0 else None)
    ax.set_xticks(x, [short_level(lv) for lv in greedy["level"]])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(f"success rate ({int(greedy['episodes'].iloc[0])} episodes)")
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    if new:
        fig.tight_layout()
    return fig, ax


def confusion(rows: np.ndarray, row_names: Sequence[str], names: Sequence[str],
              ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """Row-normalised confusion matrix: rows the bot's action, columns the agent's, with a colour bar.

    ``rows``, ``row_names``: :func:`alignnb.measure.projections.confusion_rows` (the bot's
    actions that occur, each row summing to 1); ``names``: every action, the columns.
    """
    fig, ax, new = new_axes(ax, (5.2, 3.6))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(row_names)), list(row_names))
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            if rows[i, j] >= 0.005:
                ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.6 else "black")
    ax.set_xlabel("agent (argmax)")
    ax.set_ylabel("bot")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if new:
        fig.tight_layout()
    return fig, ax


def agent_success_grid(table: pd.DataFrame, goals: Mapping[str, Mapping[str, float]] | None = None,
                       ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """Greedy success of every trained agent (columns learner, seed, level, success_rate; with
    ``ci_low``/``ci_high`` their Wilson 95% intervals as error bars), one group of bars per
    level, with each learner's goal marked."""
    fig, ax, new = new_axes(ax, (7.5, 3.2))
    agents = list(dict.fromkeys(zip(table["learner"], table["seed"])))
    levels = list(dict.fromkeys(table["level"]))
    width = 0.8 / max(len(agents), 1)
    for j, (learner, seed) in enumerate(agents):
        rows = table[(table["learner"] == learner) & (table["seed"] == seed)].set_index("level")
        x = np.arange(len(levels)) - 0.4 + width * (j + 0.5)
        base = np.array(to_rgb(LEARNER_COLORS.get(learner, "#999999")))
        shade = base + (1 - base) * (0.55 * (seed % 5) / 4)
        rates = rows.loc[levels, "success_rate"].to_numpy(float)
        err = None
        if {"ci_low", "ci_high"} <= set(rows.columns):  # Wilson 95% intervals
            err = np.vstack([rates - rows.loc[levels, "ci_low"].to_numpy(float),
                             rows.loc[levels, "ci_high"].to_numpy(float) - rates])
        ax.bar(x, rates, width, color=shade, label=f"{learner}, seed {seed}", yerr=err,
               error_kw={"elinewidth": 0.6, "capsize": 0})
    for i, level in enumerate(levels):
        for learner, g in (goals or {}).items():
            if level in g:
                ax.hlines(g[level], i - 0.42, i + 0.42, color=LEARNER_COLORS.get(learner, "black"), lw=1, ls="--")
    ax.set_xticks(np.arange(len(levels)), [short_level(lv) for lv in levels])
    low = float(table["success_rate"].min())
    ax.set_ylim(max(0.0, min(0.9, low - 0.02)), 1.005)
    ax.set_ylabel(f"greedy success ({int(table['episodes'].iloc[0])} episodes)")
    ax.legend(frameon=False, fontsize=7, ncol=2, loc="lower left")
    ax.set_title("dashed: each learner's goal", fontsize=9)
    if new:
        fig.tight_layout()
    return fig, ax
