"""The explorer's default selection and its heatmap (drawn by plots.metric_heatmap)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from alignnb.extract.embeddings import Embeddings
from alignnb.show import explorer


def test_an_empty_space_b_means_the_first_language_model():
    keys = ["agent", "smollm2-135m", "gemma3-270m", "bag-of-words"]
    assert explorer.default_space_b("", "agent", keys, ["smollm2-135m", "gemma3-270m"]) == "smollm2-135m"
    assert explorer.default_space_b("bag-of-words", "agent", keys, ["smollm2-135m"]) == "bag-of-words"
    assert explorer.default_space_b("", "agent", ["agent", "tf-idf"], []) == "tf-idf"  # no language model
    with pytest.raises(ValueError, match="no space to compare"):
        explorer.default_space_b("", "agent", ["agent"], [])


def test_the_default_instruction_is_the_given_one_or_the_first():
    sentences = ["go to the ball", "open the door"]
    assert explorer.default_instruction("open the door", sentences) == "open the door"
    assert explorer.default_instruction("", sentences) == "go to the ball"
    assert explorer.default_instruction("fly away", sentences) == "go to the ball"


def test_the_heatmap_outlines_the_selected_pair():
    rng = np.random.default_rng(0)
    sentences = [f"sentence {i}" for i in range(12)]
    spaces = {m: Embeddings(m, sentences, rng.normal(size=(12, 4)).astype(np.float32))
              for m in ("agent", "smollm2-135m", "bag-of-words")}
    ex = explorer.Explorer(spaces, "agent", "bag-of-words", k=3, n_perm=5)
    fig = ex.heatmap()
    ax = fig.axes[0]
    assert len(fig.axes) == 2 and len(ax.texts) == 9 and len(ax.patches) == 2  # the matrix, its colour bar
    corners = sorted(tuple(p.get_xy()) for p in ax.patches)
    assert corners == [(-0.5, 1.5), (1.5, -0.5)]  # cells (agent, bag-of-words) and its mirror
    plt.close(fig)
