"""Figures: saved as PNG + PDF, byte-reproducible, parameters in metadata."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from alignnb import plots


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
