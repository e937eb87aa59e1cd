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
import seaborn as sns
from matplotlib.colors import to_rgb
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from alignnb.core import config
from alignnb.core import cache
from alignnb.measure import metrics
from alignnb.core.progress import tqdm
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
        with cache.atomic_file(path, "wb") as f:
            fig.savefig(f, format=ext, metadata=meta)
        written.append(path)
    return written


def save_table(df: pd.DataFrame, name: str, out_dir: str | os.PathLike | None = None,
               params: Mapping[str, Any] | None = None, index: bool = True, float_format: str = "%.4f") -> Path:
    """Write a results table as ``<out_dir>/<name>.csv`` (default ``figures/``), atomically, and
    the parameters that produced it beside it as ``<name>.params.json``."""
    path = config.figures_dir(out_dir) / f"{name}.csv"
    with cache.atomic_file(path, "w") as f:
        df.to_csv(f, index=index, float_format=float_format, lineterminator="\n")
    if params is not None:
        cache.write_json(path.with_suffix(".params.json"), json.loads(json.dumps(dict(params), default=str)))
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


# --------------------------------------------------------------------------------------
# stage 2: the agent
# --------------------------------------------------------------------------------------


def learning_curves(history: pd.DataFrame, levels: Sequence[str]) -> tuple[plt.Figure, np.ndarray]:
    """Left: training and validation loss per step. Right: success rate per level over training."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    h = history
    if "train_loss" in h:
        d = h.dropna(subset=["train_loss"])
        axes[0].plot(d["step"], d["train_loss"], label="train (running mean)", color="#555555")
    if "val_loss" in h:
        d = h.dropna(subset=["val_loss"])
        axes[0].plot(d["step"], d["val_loss"], "o-", ms=3, label="validation", color="#D55E00")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend(frameon=False)
    for i, level in enumerate(levels):
        col = f"success/{level}"
        if col in h:
            d = h.dropna(subset=[col])
            axes[1].plot(d["step"], d[col], "o-", ms=3, label=short_level(level), color=LEVEL_COLORS[i % len(LEVEL_COLORS)])
    axes[1].set_ylim(0, 1.02)
    axes[1].set_xlabel("optimizer step")
    axes[1].set_ylabel("success rate (greedy)")
    axes[1].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig, axes


def success_bars(greedy: pd.DataFrame, sampled: pd.DataFrame | None = None,
                 goals: Mapping[str, float] | None = None) -> tuple[plt.Figure, plt.Axes]:
    """Success rate per level, greedy (and sampled) actions, with goal marks."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
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
    fig.tight_layout()
    return fig, ax


def confusion(matrix: np.ndarray, names: Sequence[str]) -> tuple[plt.Figure, plt.Axes]:
    """Row-normalised confusion matrix: rows the bot's action, columns the agent's."""
    m = np.asarray(matrix, dtype=float)
    used = m.sum(1) > 0
    rows = m[used] / m[used].sum(1, keepdims=True)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(int(used.sum())), [n for n, u in zip(names, used) if u])
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            if rows[i, j] >= 0.005:
                ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.6 else "black")
    ax.set_xlabel("agent (argmax)")
    ax.set_ylabel("bot")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig, ax


# --------------------------------------------------------------------------------------
# stages 3-4: embeddings and alignment
# --------------------------------------------------------------------------------------


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


def embedding_sanity(spaces: Mapping[str, Any]) -> tuple[plt.Figure, np.ndarray]:
    """Per model: distribution of vector norms (relative to the median) and of pairwise cosine similarity."""
    keys = list(spaces)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(keys) + 1.6))
    norm_data, cos_data = [], []
    for key in keys:
        v = np.asarray(spaces[key].vectors, dtype=np.float64)
        norms = np.linalg.norm(v, axis=1)
        norm_data.append(norms / np.median(norms))
        u = v / norms[:, None]
        iu = np.triu_indices(len(u), 1)
        cos_data.append((u @ u.T)[iu])
    for ax, data, label in ((axes[0], norm_data, "norm / median norm"), (axes[1], cos_data, "pairwise cosine similarity")):
        parts = ax.violinplot(data, vert=False, showmedians=True, widths=0.8)
        for body, key in zip(parts["bodies"], keys):
            body.set_facecolor(family_color(key))
            body.set_alpha(0.7)
        ax.set_yticks(range(1, len(keys) + 1), keys)
        ax.set_xlabel(label)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    fig.tight_layout()
    return fig, axes


def precision_heatmap(matrix: pd.DataFrame, k: int = 15, title: str | None = None):
    """Clustered heatmap of a symmetric precision@k matrix, rows coloured by model family."""
    dist = 1 - matrix.to_numpy()
    np.fill_diagonal(dist, 0)
    link = linkage(squareform(np.clip((dist + dist.T) / 2, 0, None), checks=False), method="average")
    colors = pd.Series([family_color(k_) for k_ in matrix.index], index=matrix.index, name="family")
    g = sns.clustermap(matrix, row_linkage=link, col_linkage=link, row_colors=colors, annot=True, fmt=".2f",
                       cmap="viridis", vmin=0, vmax=1, figsize=(1.0 * len(matrix) + 3, 0.9 * len(matrix) + 2.5),
                       annot_kws={"fontsize": 8}, dendrogram_ratio=0.12)
    g.ax_cbar.set_title(f"precision@{k}", fontsize=9, loc="left")  # a side label would collide with the ticks
    g.ax_heatmap.set_xlabel("")
    g.ax_heatmap.set_ylabel("")
    if title:
        g.figure.suptitle(title, y=1.02)
    return g.figure, g.ax_heatmap


def precision_curves(curves: pd.DataFrame, reference: str = "agent") -> tuple[plt.Figure, plt.Axes]:
    """precision@k against k for each model vs the reference, with the 95% permutation-null band."""
    fig, ax = plt.subplots(figsize=(7, 4))
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
    fig.tight_layout()
    return fig, ax


def precision_vs_n(table: pd.DataFrame, paper_band: tuple[float, float] | None = (0.70, 0.73),
                   subset: str = "random", axes: np.ndarray | None = None) -> tuple[plt.Figure, np.ndarray]:
    """precision@k (left) and R_NX (right) against the number of sentences N, one line per pair.

    Lines of the reference against a model are solid (dashed for controls); lines between two
    language models are dotted. Bands: ±1 sd over the draws; the dotted black line is chance
    k/(N-1); the grey band is the paper's precision@15 of 0.70-0.73 (whose N it does not give).
    Draws on ``axes`` (two axes) when given.
    """
    d = table[table["subset"] == subset]
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    fig = axes[0].figure
    styles = model_styles(list(dict.fromkeys([*d["model_a"], *d["model_b"]])))
    for (a, b), g in d.groupby(["model_a", "model_b"], sort=False):
        lm_pair = family_of(a) != "agent"
        color = styles[a if lm_pair else b]["color"]  # a pair of language models: the first one's colour
        ls = ":" if lm_pair else ("--" if family_of(b) == "control" else "-")
        label = f"{a} vs {b}" if lm_pair else b
        for ax, col in zip(axes, ("precision", "rnx")):
            ax.plot(g["n"], g[col], color=color, marker=styles[b]["marker"], ms=3.5, ls=ls, lw=1.5, label=label)
        axes[0].fill_between(g["n"], g["precision"] - g["precision_sd"], g["precision"] + g["precision_sd"],
                             color=color, alpha=0.1, lw=0)
    chance = d.drop_duplicates("n").sort_values("n")
    axes[0].plot(chance["n"], chance["chance"], color="black", ls=":", lw=1, label="chance k/(N-1)")
    axes[1].axhline(0, color="black", ls=":", lw=1)
    if paper_band is not None:
        axes[0].axhspan(*paper_band, color="#BBBBBB", alpha=0.5, lw=0, label="paper: 0.70-0.73 (N not given)")
    k = int(d["k"].iloc[0])
    sizes = sorted(d["n"].unique())
    for ax, label in zip(axes, (f"precision@{k}", f"R_NX({k})")):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(int(v)) for v in sizes])
        ax.minorticks_off()
        ax.set_xlabel(f"number of sentences N ({subset} subsets)")
        ax.set_ylabel(label)
        ax.set_ylim(-0.05 if label.startswith("R") else 0, 1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=4, frameon=False, fontsize=7, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig, axes


def layer_sweep_plot(sweeps: pd.DataFrame, k: int = 15) -> tuple[plt.Figure, plt.Axes]:
    """precision@k with the agent against relative layer depth, one line per (model, pooling)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    styles = model_styles(sweeps["model"])
    for (model, pooling), d in sweeps.groupby(["model", "pooling"], sort=False):
        depth = d["layer"] / max(d["layer"].max(), 1)
        ax.plot(depth, d["precision"], ms=3.5, color=styles[model]["color"], marker=styles[model]["marker"],
                ls="-" if pooling == "mean" else "--", label=f"{model} ({pooling})")
    ax.set_xlabel("relative layer depth (0 = input embeddings)")
    ax.set_ylabel(f"precision@{k} with the agent")
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig, ax


def attribute_shares(shares: pd.DataFrame) -> tuple[plt.Figure, plt.Axes]:
    """Share of a sentence's neighbours with the same verb / colour / object / location, per model."""
    attrs = list(dict.fromkeys(shares["attribute"]))
    models = list(dict.fromkeys(shares["model"]))
    fig, ax = plt.subplots(figsize=(8, 3.4))
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
    fig.tight_layout()
    return fig, ax


def _scatter_by(ax, xy: np.ndarray, labels: Sequence[str], title: str, legend: bool) -> None:
    values = list(dict.fromkeys(labels))
    palette = dict(zip(values, LEVEL_COLORS * 3))
    if set(values) <= {"red", "green", "blue", "purple", "yellow", "grey", "none"}:
        palette = {"red": "#D62728", "green": "#2CA02C", "blue": "#1F77B4", "purple": "#9467BD",
                   "yellow": "#E6C200", "grey": "#7F7F7F", "none": "#000000"}
    for v in values:
        sel = np.asarray(labels) == v
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=palette[v], label=v, alpha=0.8, lw=0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if legend:
        ax.legend(frameon=False, fontsize=6, markerscale=2, loc="best")


def project_2d(X: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D projection of row-normalised vectors: PCA, or UMAP (imported only when asked: ~20 s)."""
    X = np.asarray(X, dtype=np.float64)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    if method == "umap":
        import umap  # slow import (numba): only here

        return umap.UMAP(n_neighbors=15, random_state=seed, metric="cosine").fit_transform(X)
    Xc = X - X.mean(0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ vt[:2].T


def projection_grid(spaces: Mapping[str, Any], attributes: pd.DataFrame, by: Sequence[str] = ("verb", "color", "object"),
                    method: str = "pca", seed: int = 0) -> tuple[plt.Figure, np.ndarray]:
    """Each space projected to 2-D (rows) and coloured by each attribute (columns)."""
    keys = list(spaces)
    fig, axes = plt.subplots(len(keys), len(by), figsize=(3.1 * len(by), 2.7 * len(keys)), squeeze=False)
    for r, key in enumerate(tqdm(keys, desc=f"{method} projections", leave=False)):
        xy = project_2d(spaces[key].vectors, method, seed)
        for c, col in enumerate(by):
            labels = attributes.loc[spaces[key].sentences, col].fillna("none").astype(str).to_list()
            _scatter_by(axes[r, c], xy, labels, f"{key} · {col}", legend=(r == 0))
    fig.tight_layout()
    return fig, axes


def procrustes_picture(A: np.ndarray, B: np.ndarray, labels: Sequence[str], name_a: str, name_b: str,
                       max_lines: int = 200, seed: int = 0) -> tuple[plt.Figure, plt.Axes]:
    """A mapped onto B by Procrustes (common PCA dimension), both shown in B's first two principal
    axes, with a line from each sentence's mapped A point to its B point."""
    mapped, Zb, s = metrics.procrustes_map(np.asarray(A, np.float64), np.asarray(B, np.float64))
    pa, pb = mapped[:, :2], Zb[:, :2]  # Zb's columns are B's principal axes
    fig, ax = plt.subplots(figsize=(6, 5))
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(A), size=min(max_lines, len(A)), replace=False):
        ax.plot([pa[i, 0], pb[i, 0]], [pa[i, 1], pb[i, 1]], color="#BBBBBB", lw=0.5, zorder=1)
    values = list(dict.fromkeys(labels))
    for j, v in enumerate(values):
        sel = np.asarray(labels) == v
        col = LEVEL_COLORS[j % len(LEVEL_COLORS)]
        ax.scatter(pb[sel, 0], pb[sel, 1], s=10, color=col, marker="o", label=f"{v} ({name_b})", zorder=2)
        ax.scatter(pa[sel, 0], pa[sel, 1], s=14, color=col, marker="x", lw=0.8, label=f"{v} ({name_a} mapped)", zorder=3)
    ax.set_title(f"{name_a} mapped onto {name_b} (Procrustes disparity {max(0.0, 1 - s ** 2):.2f})", fontsize=10)
    ax.set_xlabel(f"{name_b} PC 1")
    ax.set_ylabel(f"{name_b} PC 2")
    ax.legend(frameon=False, fontsize=6, ncols=2)
    fig.tight_layout()
    return fig, ax


def agent_success_grid(table: pd.DataFrame, goals: Mapping[str, Mapping[str, float]] | None = None,
                       ax: plt.Axes | None = None) -> tuple[plt.Figure, plt.Axes]:
    """Greedy success of every trained agent (columns learner, seed, level, success_rate), one
    group of bars per level, with each learner's goal marked."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.5, 3.2))
    agents = list(dict.fromkeys(zip(table["learner"], table["seed"])))
    levels = list(dict.fromkeys(table["level"]))
    width = 0.8 / max(len(agents), 1)
    learner_colors = {"transformer": "#D55E00", "gru-film-lstm": "#0072B2"}
    for j, (learner, seed) in enumerate(agents):
        rows = table[(table["learner"] == learner) & (table["seed"] == seed)].set_index("level")
        x = np.arange(len(levels)) - 0.4 + width * (j + 0.5)
        base = np.array(to_rgb(learner_colors.get(learner, "#999999")))
        shade = base + (1 - base) * (0.45 * (seed % 3) / 2)
        ax.bar(x, rows.loc[levels, "success_rate"], width, color=shade, label=f"{learner}, seed {seed}")
    for i, level in enumerate(levels):
        for learner, g in (goals or {}).items():
            if level in g:
                ax.hlines(g[level], i - 0.42, i + 0.42, color=learner_colors.get(learner, "black"), lw=1, ls="--")
    ax.set_xticks(np.arange(len(levels)), [short_level(lv) for lv in levels])
    low = float(table["success_rate"].min())
    ax.set_ylim(max(0.0, min(0.9, low - 0.02)), 1.005)
    ax.set_ylabel(f"greedy success ({int(table['episodes'].iloc[0])} episodes)")
    ax.legend(frameon=False, fontsize=7, ncol=2, loc="lower left")
    ax.set_title("dashed: each learner's goal", fontsize=9)
    fig.tight_layout()
    return fig, ax


def variant_alignment(summary: pd.DataFrame, ceiling: pd.DataFrame, chance: float, k: int,
                      axes: Sequence[plt.Axes] | None = None) -> tuple[plt.Figure, np.ndarray]:
    """precision@k of each agent extraction point with each reference space, one panel per learner.

    ``summary``: :func:`alignnb.measure.analysis.variant_summary` (mean and sd over seeds; untrained
    learners are drawn as hollow markers). ``ceiling``: :func:`alignnb.measure.analysis.ceiling_summary`;
    its seed-to-seed mean (± sd) at each extraction point is the grey bar. Dotted: chance k/(n-1).
    """
    learners = [lr for lr in dict.fromkeys(summary["learner"]) if not lr.endswith("-untrained")]
    if axes is None:
        fig, axes = plt.subplots(1, len(learners), figsize=(6.2 * len(learners), 4.0), squeeze=False,
                                 sharey=True)
        axes = axes[0]
    fig = axes[0].figure
    models = list(dict.fromkeys(summary["model"]))
    styles = model_styles(models)
    for ax, learner in zip(axes, learners):
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
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, frameon=False, fontsize=8, loc="upper center", ncol=min(len(labels), 6),
               bbox_to_anchor=(0.5, 0.0), title="filled: trained, mean ± sd over seeds; hollow: untrained twin",
               title_fontsize=8)
    return fig, np.asarray(axes)
