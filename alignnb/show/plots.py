"""Every figure of the study, in one namespace (what the notebooks import as ``plots``).

The figures live in one module per stage: :mod:`~alignnb.show.demo_figures` (notebook 01),
:mod:`~alignnb.show.agent_figures` (02), :mod:`~alignnb.show.embedding_figures` (03-04),
:mod:`~alignnb.show.alignment_figures` (04-05); the one style, the colours and the writers
(``save_figure``, ``save_table``) in :mod:`~alignnb.show.style`.

Every figure function draws on the ``ax=`` (or ``axes=`` for a grid) it is given, or on a new
figure when it is not, returns ``(fig, ax)`` (or ``(fig, axes)``), never saves, and computes
nothing: projections, Procrustes maps and statistics come from
:mod:`alignnb.measure.projections` and :mod:`alignnb.measure.analysis`, computed first by the
notebook.
"""

from __future__ import annotations

from alignnb.show.agent_figures import agent_success_grid, confusion, curves_grid, learning_curves, success_bars
from alignnb.show.alignment_figures import (
                                            alignment_over_training,
                                            attribute_shares,
                                            effect_intervals,
                                            layer_sweep_plot,
                                            metric_heatmap,
                                            precision_curves,
                                            precision_heatmap,
                                            precision_vs_n,
                                            variant_alignment,
)
from alignnb.show.demo_figures import action_distribution, episode_lengths, frame_grid
from alignnb.show.embedding_figures import embedding_sanity, procrustes_picture, projection_grid, scatter_by
from alignnb.show.style import (
                                            FAMILY_COLORS,
                                            LEARNER_COLORS,
                                            LEVEL_COLORS,
                                            family_color,
                                            model_styles,
                                            save_figure,
                                            save_table,
                                            set_style,
                                            short_level,
)

#: The figure functions, in notebook order (each takes ``ax=`` or ``axes=`` and returns ``(fig, ax)``).
FIGURES = (episode_lengths, action_distribution, frame_grid,
           learning_curves, curves_grid, success_bars, confusion, agent_success_grid,
           embedding_sanity, projection_grid, procrustes_picture,
           precision_heatmap, metric_heatmap, precision_curves, precision_vs_n, layer_sweep_plot, attribute_shares,
           variant_alignment, effect_intervals, alignment_over_training)

__all__ = ["FAMILY_COLORS", "FIGURES", "LEARNER_COLORS", "LEVEL_COLORS", "action_distribution", "agent_success_grid",
           "alignment_over_training", "attribute_shares", "confusion", "effect_intervals", "curves_grid", "embedding_sanity", "episode_lengths", "family_color", "frame_grid",
           "layer_sweep_plot", "learning_curves", "metric_heatmap", "model_styles", "precision_curves",
           "precision_heatmap", "precision_vs_n", "procrustes_picture", "projection_grid", "save_figure",
           "save_table", "scatter_by", "set_style", "short_level", "success_bars", "variant_alignment"]
