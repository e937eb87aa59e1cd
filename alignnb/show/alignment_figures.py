"""Figures of stage 4 (notebooks 04-05): alignment between spaces (matrices, curves, sweeps,
neighbour attributes, the agent's extraction points)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle
from scipy.cluster.hierarchy import leaves_list

from alignnb.extract.models import family_of
from alignnb.show.style import family_color, model_styles, new_axes, new_axes_grid


def precision_heatmap(matrix: pd.DataFrame, k: int = 15, title: str | None = None, *, linkage: np.ndarray,
                      ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """Clustered heatmap of a symmetric precision@k matrix, rows and columns in the order of
    ``linkage`` (:func:`alignnb.measure.projections.similarity_linkage`), every cell annotated.

    Without ``ax``: seaborn's clustermap, a figure of its own with the dendrograms and a
    family-colour strip beside the rows. With ``ax``: the matrix alone, in the tree's leaf
    order, tick labels coloured by family, a colour bar beside it.
    """
    if ax is not None:
        order = leaves_list(linkage)
        m = matrix.iloc[order, order]
        sns.heatmap(m, ax=ax, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, annot_kws={"fontsize": 8},
                    cbar_kws={"label": f"precision@{k}"})
        for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
            tick.set_color(family_color(tick.get_text()))
        ax.set_xlabel("")
        ax.set_ylabel("")
        if title:
            ax.set_title(title)
        return ax.figure, ax
    colors = pd.Series([family_color(k_) for k_ in matrix.index], index=matrix.index, name="family")
    g = sns.clustermap(matrix, row_linkage=linkage, col_linkage=linkage, row_colors=colors, annot=True, fmt=".2f",
                       cmap="viridis", vmin=0, vmax=1, figsize=(1.0 * len(matrix) + 3, 0.9 * len(matrix) + 2.5),
                       annot_kws={"fontsize": 8}, dendrogram_ratio=0.12)
    g.ax_cbar.set_title(f"precision@{k}", fontsize=9, loc="left")  # a side label would collide with the ticks
    g.ax_heatmap.set_xlabel("")
    g.ax_heatmap.set_ylabel("")
    if title:
        g.figure.suptitle(title, y=1.02)
    return g.figure, g.ax_heatmap


def metric_heatmap(matrix: pd.DataFrame, label: str, selected: tuple[str, str] | None = None,
                   ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """A symmetric [model x model] matrix of one metric in the given order, every cell annotated,
    the ``selected`` pair (both cells) outlined, a colour bar labelled ``label`` (the explorer's picture)."""
    keys = list(matrix.index)
    fig, ax, new = new_axes(ax, (0.7 * len(keys) + 2.5, 0.6 * len(keys) + 1.5))
    im = ax.imshow(matrix.to_numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(keys)), keys, fontsize=8)
    for r in range(len(keys)):
        for c in range(len(keys)):
            ax.text(c, r, f"{matrix.iat[r, c]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if matrix.iat[r, c] < 0.6 else "black")
    if selected is not None:
        ia, ib = keys.index(selected[0]), keys.index(selected[1])
        for r, c in ((ia, ib), (ib, ia)):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="#D55E00", lw=2.5))
    fig.colorbar(im, ax=ax, fraction=0.046, label=label)
    if new:
        fig.tight_layout()
    return fig, ax


def precision_curves(curves: pd.DataFrame, reference: str = "agent",
                     ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """precision@k against k for each model vs the reference, with the 95% permutation-null band
    (controls dashed) and the chance line k/(n-1)."""
    fig, ax, new = new_axes(ax, (7, 4))
    styles = model_styles(curves["model"])
    for model, d in curves.groupby("model", sort=False):
        c = styles[model]["color"]
        ax.plot(d["k"], d["precision"], color=c, lw=1.8, label=model, marker=styles[model]["marker"], ms=3.5,
                markevery=5, ls="--" if d["family"].iloc[0] == "control" else "-")
        ax.fill_between(d["k"], d["null_low"], d["null_high"], color=c, alpha=0.12, lw=0)
    first = curves[curves["model"] == curves["model"].iloc[0]]
    ax.plot(first["k"], first["chance"], color="black", lw=1, ls=":", label="chance k/(n-1)")
    ax.set_xlabel("k")
    ax.set_ylabel(f"precision@k with the {reference}")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=8, ncols=2)
    if new:
        fig.tight_layout()
    return fig, ax


def precision_vs_n(table: pd.DataFrame, paper_band: tuple[float, float] | None = (0.70, 0.73),
                   subset: str = "random", axes: Sequence[plt.Axes] | None = None) -> tuple[plt.Figure, Any]:
    """precision@k (left) and R_NX (right) against the number of sentences N, one line per pair.

    Lines of the reference against a model are solid (dashed for controls); lines between two
    language models are dotted. Bands: ±1 sd over the draws; the dotted black line is chance
    k/(N-1); the grey band is the paper's precision@15 of 0.70-0.73 (whose N it does not give).
    The legend sits below both panels. Draws on ``axes`` (two axes) when given.
    """
    d = table[table["subset"] == subset]
    fig, grid, new = new_axes_grid(axes, 1, 2, (11, 5.2))
    row = grid[0]
    styles = model_styles(list(dict.fromkeys([*d["model_a"], *d["model_b"]])))
    for (a, b), g in d.groupby(["model_a", "model_b"], sort=False):
        lm_pair = family_of(a) != "agent"
        color = styles[a if lm_pair else b]["color"]  # a pair of language models: the first one's colour
        ls = ":" if lm_pair else ("--" if family_of(b) == "control" else "-")
        label = f"{a} vs {b}" if lm_pair else b
        for ax, col in zip(row, ("precision", "rnx")):
            ax.plot(g["n"], g[col], color=color, marker=styles[b]["marker"], ms=3.5, ls=ls, lw=1.5, label=label)
        row[0].fill_between(g["n"], g["precision"] - g["precision_sd"], g["precision"] + g["precision_sd"],
                            color=color, alpha=0.1, lw=0)
    chance = d.drop_duplicates("n").sort_values("n")
    row[0].plot(chance["n"], chance["chance"], color="black", ls=":", lw=1, label="chance k/(N-1)")
    row[1].axhline(0, color="black", ls=":", lw=1)
    if paper_band is not None:
        row[0].axhspan(*paper_band, color="#BBBBBB", alpha=0.5, lw=0, label="paper: 0.70-0.73 (N not given)")
    k = int(d["k"].iloc[0])
    sizes = sorted(d["n"].unique())
    for ax, label in zip(row, (f"precision@{k}", f"R_NX({k})")):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(int(v)) for v in sizes])
        ax.minorticks_off()
        ax.set_xlabel(f"number of sentences N ({subset} subsets)")
        ax.set_ylabel(label)
        ax.set_ylim(-0.05 if label.startswith("R") else 0, 1)
    handles, labels = row[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=4, frameon=False, fontsize=7, bbox_to_anchor=(0.5, -0.02))
    if new:
        fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig, (row if new else axes)


def layer_sweep_plot(sweeps: pd.DataFrame, k: int = 15, ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """precision@k with the agent against relative layer depth, one line per (model, pooling),
    mean pooling solid, other poolings dashed."""
    fig, ax, new = new_axes(ax, (6.5, 3.6))
    styles = model_styles(sweeps["model"])
    for (model, pooling), d in sweeps.groupby(["model", "pooling"], sort=False):
        depth = d["layer"] / max(d["layer"].max(), 1)
        ax.plot(depth, d["precision"], ms=3.5, color=styles[model]["color"], marker=styles[model]["marker"],
                ls="-" if pooling == "mean" else "--", label=f"{model} ({pooling})")
    ax.set_xlabel("relative layer depth (0 = input embeddings)")
    ax.set_ylabel(f"precision@{k} with the agent")
    ax.legend(frameon=False, fontsize=7)
    if new:
        fig.tight_layout()
    return fig, ax


def attribute_shares(shares: pd.DataFrame, ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """Share of a sentence's neighbours with the same verb / colour / object / location, per model
    (bars), with the share among random neighbours (dotted)."""
    attrs = list(dict.fromkeys(shares["attribute"]))
    models = list(dict.fromkeys(shares["model"]))
    fig, ax, new = new_axes(ax, (8, 3.4))
    width = 0.8 / len(models)
    x = np.arange(len(attrs))
    styles = model_styles(models)
    for i, m in enumerate(models):
        d = shares[shares["model"] == m].set_index("attribute").loc[attrs]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, d["share"], width, color=styles[m]["color"], label=m,
               edgecolor="white", lw=0.4)
    chance = shares.drop_duplicates("attribute").set_index("attribute").loc[attrs, "chance"]
    ax.hlines(chance, x - 0.42, x + 0.42, color="black", ls=":", lw=1, label="random neighbours")
    ax.set_xticks(x, attrs)
    ax.set_ylabel("share of k neighbours with the same value")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=7, ncols=2, bbox_to_anchor=(1, 1), loc="upper left")
    if new:
        fig.tight_layout()
    return fig, ax


def variant_alignment(summary: pd.DataFrame, ceiling: pd.DataFrame, chance: float, k: int,
                      axes: Sequence[plt.Axes] | None = None) -> tuple[plt.Figure, Any]:
    """precision@k of each agent extraction point with each reference space, one panel per learner.

    ``summary``: :func:`alignnb.measure.analysis.variant_summary` (mean and sd over seeds; untrained
    learners are drawn as hollow markers). ``ceiling``: :func:`alignnb.measure.analysis.ceiling_summary`;
    its seed-to-seed mean (± sd) at each extraction point is the grey bar. Dotted: chance k/(n-1).
    The legend sits below the panels. Draws on ``axes`` (one per trained learner) when given.
    """
    learners = [lr for lr in dict.fromkeys(summary["learner"]) if not lr.endswith("-untrained")]
    fig, grid, new = new_axes_grid(axes, 1, len(learners), (6.2 * len(learners), 4.0), sharey=True)
    row = grid[0]
    models = list(dict.fromkeys(summary["model"]))
    styles = model_styles(models)
    for ax, learner in zip(row, learners):
        points = list(dict.fromkeys(summary.loc[summary["learner"] == learner, "extraction"]))
        x = {p: i for i, p in enumerate(points)}
        ceil = ceiling[(ceiling["pair"] == "seed to seed") & (ceiling["learner_a"] == learner)]
        for _, r in ceil.iterrows():
            if r["extraction"] in x:
                sd = 0.0 if pd.isna(r["precision_sd"]) else r["precision_sd"]
                ax.bar(x[r["extraction"]], r["precision_mean"], 0.85, yerr=sd, color="#DDDDDD", ecolor="#888888",
                       label="seed to seed (ceiling)" if r["extraction"] == points[0] else None, zorder=0)
        offsets = np.linspace(-0.32, 0.32, len(models))
        for dx, model in zip(offsets, models):
            for kind, hollow in ((learner, False), (f"{learner}-untrained", True)):
                rows = summary[(summary["learner"] == kind) & (summary["model"] == model)]
                if rows.empty:
                    continue
                xs = np.array([x[p] for p in rows["extraction"]]) + dx + (0.04 if hollow else 0.0)
                st = styles[model]
                ax.errorbar(xs, rows["precision_mean"], yerr=rows["precision_sd"].fillna(0.0), fmt=st["marker"],
                            color=st["color"], mfc="white" if hollow else st["color"], ms=5, lw=1, capsize=0,
                            label=None if hollow else model)
        ax.axhline(chance, color="black", ls=":", lw=1, label="chance k/(n-1)")
        ax.set_xticks(range(len(points)), points, rotation=30, ha="right")
        ax.set_title(learner)
        ax.set_ylabel(f"precision@{k}")
    if new:
        fig.tight_layout()
    handles, labels = row[0].get_legend_handles_labels()
    fig.legend(handles, labels, frameon=False, fontsize=8, loc="upper center", ncol=min(len(labels), 6),
               bbox_to_anchor=(0.5, 0.0), title="filled: trained, mean ± sd over seeds; hollow: untrained twin",
               title_fontsize=8)
    return fig, (row if new else axes)


def effect_intervals(e1: pd.DataFrame, e2: pd.DataFrame, axes: Any = None) -> tuple[plt.Figure, np.ndarray]:
    """The registered tests with their intervals: E1 (trained minus each seed's own twin, left) and
    E2 (a decoder minus each comparison space, right), one row each, estimate and 95% interval,
    grouped by extraction point; a filled marker where the Holm-adjusted p is below 0.05.

    ``e1``, ``e2``: the rows of :func:`alignnb.measure.effects.seed_tests` to draw (columns
    extraction, model, estimate, ci_low, ci_high, p_holm; E2 also versus).
    """
    height = 0.28 * max(len(e1), len(e2)) + 1.6
    fig, grid, new = new_axes_grid(axes, 1, 2, (13, height))
    for ax, table, title in ((grid[0, 0], e1, "E1: trained − its own untrained twin"),
                             (grid[0, 1], e2, "E2: decoder − comparison space")):
        labels = [f"{r.extraction} · {r.model}" + (f" − {r.versus}" if "versus" in table else "")
                  for r in table.itertuples()]
        y = np.arange(len(table))[::-1]
        for yi, r in zip(y, table.itertuples()):
            colour = family_color(r.model)
            ax.plot([r.ci_low, r.ci_high], [yi, yi], color=colour, lw=2)
            decided = not pd.isna(r.p_holm) and r.p_holm < 0.05
            ax.plot(r.estimate, yi, "o", color=colour, mfc=colour if decided else "white", ms=6)
        ax.axvline(0, color="0.4", lw=1, ls="--")
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlabel("difference in precision@k (95% interval)")
        ax.set_title(title, fontsize=10)
        for j in range(1, len(table)):  # a line between extraction points
            if table["extraction"].iloc[j] != table["extraction"].iloc[j - 1]:
                ax.axhline(y[j] + 0.5, color="0.85", lw=0.8)
    if new:
        fig.text(0.5, -0.01, "filled: Holm-adjusted p < 0.05 in the registered family; open: not decided",
                 ha="center", fontsize=8)
        fig.tight_layout()
    return fig, (grid[0] if new else axes)


def alignment_over_training(per_seed: pd.DataFrame, models: Sequence[str], extractions: Sequence[str], k: int,
                            chance: float, x: str = "step", axes: Any = None) -> tuple[plt.Figure, np.ndarray]:
    """precision@k of each agent snapshot along training, one line per learner and seed.

    ``per_seed``: the first table of :func:`alignnb.measure.trajectory.alignment_over_training`.
    One panel per reference model (rows) and extraction point (columns); ``x`` is ``"step"``
    (the untrained twin at 0) or ``"success"`` (the snapshot's mean success over levels; the
    twin, whose success is not played, is left out). Dotted: chance k/(n-1). Draws on ``axes``
    ([len(models), len(extractions)]) when given.
    """
    from alignnb.show.style import LEARNER_COLORS

    fig, grid, new = new_axes_grid(axes, len(models), len(extractions),
                                   (3.3 * len(extractions), 2.4 * len(models)), sharex=True, sharey="row")
    for i, model in enumerate(models):
        for j, point in enumerate(extractions):
            ax = grid[i, j]
            rows = per_seed[(per_seed["model"] == model) & (per_seed["extraction"] == point)]
            for (learner, seed), line in rows.groupby(["learner", "seed"], sort=False):
                line = line.dropna(subset=[x]).sort_values(["step", x])
                ax.plot(line[x], line["precision"], marker="o", ms=2.5, lw=1, alpha=0.8,
                        color=LEARNER_COLORS.get(learner, "grey"),
                        label=learner if (i, j) == (0, 0) and seed == rows[rows["learner"] == learner]["seed"].min()
                        else None)
            ax.axhline(chance, color="black", ls=":", lw=0.8)
            if i == 0:
                ax.set_title(point)
            if j == 0:
                ax.set_ylabel(f"{model}\nprecision@{k}", fontsize=8)
            if i == len(models) - 1:
                ax.set_xlabel("training step" if x == "step" else "success (mean over levels)")
    if new:
        fig.tight_layout()
    handles, labels = grid[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, frameon=False, fontsize=8, loc="upper center", ncol=max(len(labels), 1),
               bbox_to_anchor=(0.5, 0.0), title="one line per seed; dotted: chance k/(n-1)", title_fontsize=8)
    return fig, (grid if new else axes)
