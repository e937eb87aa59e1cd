"""The computations behind the figures (alignnb.measure.projections) give known values.

(They moved out of show/ so that figures only draw; this file sits beside the figure tests.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist

from alignnb.extract.embeddings import Embeddings
from alignnb.measure import projections


def _rotation(dim: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def test_pca_recovers_a_planted_plane():
    rng = np.random.default_rng(1)
    plane = rng.normal(size=(60, 2)) * [3.0, 1.0]
    X = plane @ _rotation(12, 2)[:2]  # the plane, turned into 12-D
    xy = projections.project_2d(X, "pca")
    assert xy.shape == (60, 2)
    unit = plane / np.linalg.norm(plane, axis=1, keepdims=True)  # the projection works on unit vectors
    centred = unit - unit.mean(0)
    np.testing.assert_allclose(pdist(xy), pdist(centred), atol=1e-10)  # the plane, up to rotation
    np.testing.assert_allclose(xy.mean(0), 0, atol=1e-12)
    assert xy[:, 0].var() >= xy[:, 1].var()  # first axis first
    assert np.abs(np.corrcoef(xy.T)[0, 1]) < 1e-8  # principal axes are uncorrelated


def test_pca_projection_ignores_vector_length_and_rejects_unknown_methods():
    X = np.random.default_rng(3).normal(size=(20, 5))
    scaled = X * np.random.default_rng(4).uniform(0.5, 4, size=(20, 1))
    np.testing.assert_allclose(projections.project_2d(X), projections.project_2d(scaled), atol=1e-12)
    with pytest.raises(ValueError, match="pca"):
        projections.project_2d(X, "tsne")


def test_project_spaces_keeps_order_and_sentences():
    rng = np.random.default_rng(5)
    sentences = [f"s{i}" for i in range(10)]
    spaces = {m: Embeddings(m, sentences, rng.normal(size=(10, 4)).astype(np.float32)) for m in ("b", "a")}
    out = projections.project_spaces(spaces, "pca", seed=0)
    assert list(out) == ["b", "a"] and out["a"].sentences == sentences and out["a"].method == "pca"
    np.testing.assert_array_equal(out["a"].xy, projections.project_2d(spaces["a"].vectors))


def test_procrustes_of_a_rotated_scaled_shifted_copy_recovers_it():
    rng = np.random.default_rng(6)
    A = rng.normal(size=(40, 6))
    B = 2.5 * A @ _rotation(6, 7) + 3.0
    pic = projections.procrustes_2d(A, B, max_lines=15, seed=0)
    assert pic.mapped.shape == pic.target.shape == (40, 2)
    np.testing.assert_allclose(pic.mapped, pic.target, atol=1e-10)
    assert pic.disparity == pytest.approx(0, abs=1e-10) and pic.scale == pytest.approx(1)
    assert len(pic.lines) == 15 and len(set(pic.lines)) == 15
    np.testing.assert_array_equal(pic.lines, projections.procrustes_2d(A, B, max_lines=15, seed=0).lines)
    assert len(projections.procrustes_2d(A, B, max_lines=500).lines) == 40


def test_procrustes_of_unrelated_spaces_has_a_large_disparity():
    rng = np.random.default_rng(8)
    pic = projections.procrustes_2d(rng.normal(size=(200, 5)), rng.normal(size=(200, 5)))
    assert pic.disparity > 0.8


def test_embedding_distributions_known_values():
    e = Embeddings("m", ["a", "b", "c"], np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], dtype=np.float32))
    out = projections.embedding_distributions({"m": e})["m"]
    np.testing.assert_allclose(out["norm"], [0.5, 1.0, 1.5])
    np.testing.assert_allclose(out["cosine"], [0.0, 1.0, 0.0], atol=1e-12)  # pairs (a,b), (a,c), (b,c)


def test_action_shares_and_confusion_rows():
    counts = pd.DataFrame([[1, 3], [5, 5]], index=["L1", "L2"], columns=["left", "right"])
    pd.testing.assert_frame_equal(projections.action_shares(counts),
                                  pd.DataFrame([[0.25, 0.75], [0.5, 0.5]], index=["L1", "L2"], columns=["left", "right"]))
    rows, names = projections.confusion_rows(np.array([[2, 2, 0], [0, 0, 0], [1, 0, 3]]), ["x", "y", "z"])
    assert names == ["x", "z"]
    np.testing.assert_allclose(rows, [[0.5, 0.5, 0.0], [0.25, 0.0, 0.75]])


def test_similarity_linkage_joins_the_similar_pairs_first():
    from scipy.cluster.hierarchy import fcluster

    keys = ["a", "b", "c", "d"]
    sim = np.array([[1, 0.9, 0.1, 0.2], [0.9, 1, 0.15, 0.1], [0.1, 0.15, 1, 0.8], [0.2, 0.1, 0.8, 1]])
    link = projections.similarity_linkage(pd.DataFrame(sim, index=keys, columns=keys))
    assert link[0, 2] == pytest.approx(0.1) and link[1, 2] == pytest.approx(0.2)  # distances 1 - 0.9, 1 - 0.8
    labels = fcluster(link, 2, "maxclust")
    assert labels[0] == labels[1] != labels[2] == labels[3]
