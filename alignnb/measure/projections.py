"""What the figures draw, computed: 2-D projections, Procrustes pictures and the small
statistics that a figure shows (shares, row-normalised confusions, norm and cosine
distributions, the clustering of a heatmap).

A notebook computes with these, then hands the result to a :mod:`alignnb.show.plots`
function, which only draws. Nothing here draws or writes. ``umap`` is imported only inside
:func:`project_2d` when UMAP is asked for (the import takes about 20 s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from alignnb.core import streams
from alignnb.core.progress import tqdm
from alignnb.extract.embeddings import Embeddings
from alignnb.measure.procrustes import procrustes_map

# --------------------------------------------------------------------------------------
# 2-D projections
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """A space's sentences as 2-D points (``xy`` [n, 2], rows in the order of ``sentences``)."""

    model: str
    sentences: list[str]
    xy: np.ndarray
    method: str


def project_2d(X: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D projection [n, 2] of row-normalised vectors: PCA, or UMAP (imported only when asked: ~20 s).

    PCA: the centred unit vectors on their first two principal axes. UMAP: 15 neighbours,
    cosine metric, ``random_state=seed``.
    """
    if method not in ("pca", "umap"):
        raise ValueError(f"unknown projection {method!r}: use 'pca' or 'umap'")
    X = np.asarray(X, dtype=np.float64)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    if method == "umap":
        import umap  # slow import (numba): only here

        return umap.UMAP(n_neighbors=15, random_state=seed, metric="cosine").fit_transform(X)
    Xc = X - X.mean(0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ vt[:2].T


def project_spaces(spaces: Mapping[str, Embeddings], method: str = "pca", seed: int = 0) -> dict[str, Projection]:
    """Each space projected to 2-D with :func:`project_2d`, in the order of ``spaces``."""
    return {key: Projection(key, list(spaces[key].sentences), project_2d(spaces[key].vectors, method, seed), method)
            for key in tqdm(list(spaces), desc=f"{method} projections", leave=False)}


@dataclass(frozen=True)
class ProcrustesPicture:
    """A mapped onto B by Procrustes, in B's first two principal axes.

    ``mapped`` and ``target`` are [n, 2] (A mapped, B); ``lines`` the indices of the sentences
    whose mapped-to-target line is drawn; ``disparity`` is max(0, 1 - s²).
    """

    mapped: np.ndarray
    target: np.ndarray
    scale: float
    disparity: float
    lines: np.ndarray


def procrustes_2d(A: np.ndarray, B: np.ndarray, max_lines: int = 200, seed: int = 0) -> ProcrustesPicture:
    """A mapped onto B by Procrustes (common PCA dimension, :func:`alignnb.measure.procrustes.procrustes_map`),
    kept in B's first two principal axes, with up to ``max_lines`` sentences drawn at random (seeded)."""
    mapped, Zb, s = procrustes_map(np.asarray(A, np.float64), np.asarray(B, np.float64))
    rng = streams.rng("analysis", seed)
    lines = rng.choice(len(A), size=min(max_lines, len(A)), replace=False)
    return ProcrustesPicture(mapped[:, :2], Zb[:, :2], float(s), max(0.0, 1 - s ** 2), lines)


# --------------------------------------------------------------------------------------
# small statistics that figures show
# --------------------------------------------------------------------------------------


def embedding_distributions(spaces: Mapping[str, Embeddings]) -> dict[str, dict[str, np.ndarray]]:
    """Per space: ``norm``, each vector's norm over the median norm, and ``cosine``, the cosine
    similarity of every pair of sentences (upper triangle, row by row)."""
    out = {}
    for key in spaces:
        v = np.asarray(spaces[key].vectors, dtype=np.float64)
        norms = np.linalg.norm(v, axis=1)
        u = v / norms[:, None]
        iu = np.triu_indices(len(u), 1)
        out[key] = {"norm": norms / np.median(norms), "cosine": (u @ u.T)[iu]}
    return out


def action_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """Each row of ``counts`` (levels x actions) divided by its total: the share of each action per level."""
    return counts.div(counts.sum(axis=1), axis=0)


def confusion_rows(matrix: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The rows of a confusion matrix (rows the bot's action) that occur, each normalised to sum 1,
    and the names of those rows."""
    m = np.asarray(matrix, dtype=float)
    used = m.sum(1) > 0
    return m[used] / m[used].sum(1, keepdims=True), [n for n, u in zip(names, used) if u]


def similarity_linkage(matrix: pd.DataFrame) -> np.ndarray:
    """Average-linkage clustering of a symmetric similarity matrix (distance 1 - similarity,
    symmetrised, diagonal 0): the tree a clustered heatmap orders its rows by."""
    dist = 1 - matrix.to_numpy()
    np.fill_diagonal(dist, 0)
    return linkage(squareform(np.clip((dist + dist.T) / 2, 0, None), checks=False), method="average")
