"""Figures: saved as PNG + PDF, byte-reproducible, parameters in metadata."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from alignnb.show import plots


def test_save_figure_is_byte_reproducible(tmp_path):
    plots.set_style()
    paths = []
    for run in range(2):
        fig, ax = plt.subplots()
        ax.plot(np.arange(5), np.arange(5) ** 2, label="x")
        ax.legend()
        paths.append(plots.save_figure(fig, f"f{run}", tmp_path, {"seed": 3}))
        plt.close(fig)
    for a, b in zip(*paths):
        assert a.suffix == b.suffix and a.read_bytes() == b.read_bytes()
    assert b'"seed": 3' in paths[0][0].read_bytes()  # PNG tEXt Description
    assert paths[0][1].read_bytes().startswith(b"%PDF")


def test_models_of_one_family_are_told_apart():
    from matplotlib.colors import to_rgb

    keys = ["agent", "agent-untrained", "bag-of-attributes", "smollm2-135m", "gemma3-270m", "minilm-l6"]
    styles = plots.model_styles(keys)
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == len(keys)
    # the first of each family keeps the family colour; the second is a shade of the same hue
    assert styles["smollm2-135m"]["color"] == to_rgb(plots.FAMILY_COLORS["decoder LLM"])
    assert styles["gemma3-270m"]["color"] != styles["smollm2-135m"]["color"]
    assert styles["agent-untrained"]["marker"] != styles["bag-of-attributes"]["marker"]
