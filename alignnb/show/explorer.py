"""The explorer: pick two spaces, k and a metric; see the score with its null band, a chosen
instruction's nearest neighbours in both spaces side by side (shared ones highlighted), and a
heatmap that follows the selection.

All computing lives in plain methods (``score``, ``neighbours``, ``heatmap``) that tests call
directly; the widgets only call them. Under papermill a widget's callbacks draw nothing into
the saved notebook, so :meth:`Explorer.static` renders the current selection as ordinary
output (HTML + figure) for batch runs.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import HTML, display

from alignnb.extract.embeddings import Embeddings, check_all
from alignnb.measure.checks import check_k
from alignnb.measure import analysis, metrics, nulls
from alignnb.show import plots


def default_space_b(space_b: str, space_a: str, keys: Sequence[str], language_models: Sequence[str]) -> str:
    """The explorer's space B: ``space_b`` when given; empty means the first language model, or
    without one the first space other than ``space_a``."""
    if space_b:
        return space_b
    if language_models:
        return language_models[0]
    others = [m for m in keys if m != space_a]
    if not others:
        raise ValueError(f"no space to compare with {space_a!r}: the study has only {list(keys)}")
    return others[0]


def default_instruction(instruction: str, sentences: Sequence[str]) -> str:
    """The instruction the explorer starts on: ``instruction`` when it is one of ``sentences``,
    otherwise the first sentence."""
    return instruction if instruction in sentences else sentences[0]


class Explorer:
    """Interactive comparison of embedding spaces of the same sentences."""

    def __init__(self, spaces: Mapping[str, Embeddings], model_a: str | None = None, model_b: str | None = None,
                 k: int = 15, metric: str = "precision", sentence: str | None = None, n_perm: int = 200,
                 seed: int = 0):
        self.spaces = dict(spaces)
        keys = check_all(self.spaces)
        if len(keys) < 2:
            raise ValueError("the explorer needs at least two embedding sets")
        self.sentences = self.spaces[keys[0]].sentences
        self.n_perm, self.seed = n_perm, seed
        self._knn: dict[tuple[str, int], np.ndarray] = {}
        self._scores: dict[tuple, dict] = {}
        self.model_a = w.Dropdown(options=keys, value=model_a or keys[0], description="space A")
        self.model_b = w.Dropdown(options=keys, value=model_b or keys[1], description="space B")
        # a number box, not a slider: any k can be typed, and an impossible one gets a message
        self.k = w.IntText(value=k, description="k", layout=w.Layout(width="180px"))
        self.metric = w.ToggleButtons(options=[(m.display("k"), name) for name, m in metrics.METRICS.items()],
                                      value=metrics.get_metric(metric).name, description="metric")
        self.sentence = w.Dropdown(options=self.sentences, value=sentence or self.sentences[0],
                                   description="instruction", layout=w.Layout(width="520px"))
        self.score_html = w.HTML()
        self.neighbours_html = w.HTML()
        self.heatmap_png = w.Image(format="png")
        for control in (self.model_a, self.model_b, self.k, self.metric, self.sentence):
            control.observe(self._on_change, names="value")
        self.widget = w.VBox([w.HBox([self.model_a, self.model_b]), w.HBox([self.k]), self.metric, self.score_html,
                              self.sentence, self.neighbours_html, self.heatmap_png])
        # stable handles for a browser (tests/test_browser.py) and for styling
        for name, control in (("space-a", self.model_a), ("space-b", self.model_b), ("k", self.k),
                              ("metric", self.metric), ("instruction", self.sentence), ("score", self.score_html),
                              ("neighbours", self.neighbours_html), ("heatmap", self.heatmap_png),
                              ("explorer", self.widget)):
            control.add_class(f"alignnb-{name}")
        self.refresh()

    def problem(self) -> str | None:
        """Why the current selection cannot be computed (a sentence for the reader), or None."""
        try:
            check_k(self.k.value, len(self.sentences))
        except ValueError as exc:
            return f"k = {self.k.value} is not possible here: {exc}"
        return None

    # -- computations (tested directly) ----------------------------------------------
    def knn(self, model: str, k: int) -> np.ndarray:
        key = (model, k)
        if key not in self._knn:
            self._knn[key] = metrics.knn_indices(self.spaces[model].vectors, k)
        return self._knn[key]

    def score(self, a: str | None = None, b: str | None = None, k: int | None = None,
              metric: str | None = None) -> dict[str, Any]:
        """The selected metric for spaces a and b, with its permutation null (mean, 95% band)."""
        a, b = a or self.model_a.value, b or self.model_b.value
        k, metric = k or self.k.value, metric or self.metric.value
        cache_key = (a, b, k if metrics.get_metric(metric).uses_k else None, metric)
        if cache_key not in self._scores:
            A, B = self.spaces[a].vectors, self.spaces[b].vectors
            m = metrics.get_metric(metric)
            n_perm = m.null_draws(self.n_perm, 10, 20)  # the metrics that rescore per permutation draw fewer
            res = nulls.permutation_null(m, A, B, k, n_perm=n_perm, seed=self.seed)
            self._scores[cache_key] = {"a": a, "b": b, "k": k, "metric": metric, "value": res.observed,
                                       "null_mean": res.null_mean, "null_low": res.null_low,
                                       "null_high": res.null_high, "p_value": res.p_value,
                                       "chance": metrics.chance_precision(len(A), k) if m.uses_k else None}
        return self._scores[cache_key]

    def neighbours(self, sentence: str | None = None, a: str | None = None, b: str | None = None,
                   k: int | None = None) -> pd.DataFrame:
        """The k nearest neighbours of ``sentence`` in spaces a and b, rank by rank, with a shared flag.

        A list has to pick among sentences tied for the k-th place: it shows the lower index
        (the scores count ties fractionally, see :func:`alignnb.measure.metrics.knn_membership`).
        """
        sentence = sentence or self.sentence.value
        a, b, k = a or self.model_a.value, b or self.model_b.value, k or self.k.value
        i = self.sentences.index(sentence)
        na, nb = self.knn(a, k)[i], self.knn(b, k)[i]
        shared = set(na) & set(nb)
        return pd.DataFrame({"rank": np.arange(1, k + 1),
                             a: [self.sentences[j] for j in na], f"shared_{a}": [j in shared for j in na],
                             b: [self.sentences[j] for j in nb], f"shared_{b}": [j in shared for j in nb]})

    def heatmap(self) -> Any:
        """Pairwise matrix of the selected metric over all spaces, the selected pair outlined
        (drawn by :func:`alignnb.show.plots.metric_heatmap`); returns the figure."""
        metric, k = self.metric.value, self.k.value
        m = analysis.pairwise_matrix(self.spaces, metric, k)
        fig, _ = plots.metric_heatmap(m, metrics.get_metric(metric).display(k),
                                      selected=(self.model_a.value, self.model_b.value))
        return fig

    # -- rendering ---------------------------------------------------------------------
    def score_text(self) -> str:
        s = self.score()
        name = metrics.get_metric(s["metric"]).display(s["k"])
        chance = f"; chance {s['chance']:.3f}" if s["chance"] is not None else ""
        return (f"<b>{html.escape(s['a'])}</b> vs <b>{html.escape(s['b'])}</b>: {name} = <b class='alignnb-value'>{s['value']:.3f}</b> "
                f"(permutation null {s['null_mean']:.3f}, 95% band {s['null_low']:.3f}-{s['null_high']:.3f}, "
                f"p = {s['p_value']:.3g}{chance})")

    def neighbours_html_table(self) -> str:
        df = self.neighbours()
        a, b = df.columns[1], df.columns[3]
        def cell(text: str, hit: bool) -> str:
            return (f'<td style="background:#FDE2C8">{html.escape(text)}</td>' if hit
                    else f"<td>{html.escape(text)}</td>")

        rows = "".join(f"<tr><td>{r['rank']}</td>{cell(r[a], r[f'shared_{a}'])}{cell(r[b], r[f'shared_{b}'])}</tr>"
                       for _, r in df.iterrows())
        n_shared = int(df[f"shared_{a}"].sum())
        return (f"<p>Nearest neighbours of <i>{html.escape(self.sentence.value)}</i>: {n_shared} of {len(df)} shared "
                f"(highlighted)</p><table class='alignnb-table'><tr><th>#</th><th>{html.escape(a)}</th><th>{html.escape(b)}</th></tr>"
                f"{rows}</table>")

    def refresh(self) -> None:
        """Recompute the score, the neighbour table and the heatmap image for the current selection.

        A selection that cannot be computed (see :meth:`problem`), or one whose computation
        raises, shows a message in place of the score and empties the neighbour table; the
        heatmap keeps the last valid selection. No traceback reaches the page. Everything is
        computed first and the score line is written last, so a page whose score line has
        changed shows the rest of the new selection too.
        """
        why = self.problem()
        if why is None:
            try:
                self._draw()
                return
            except (ValueError, np.linalg.LinAlgError) as exc:
                why = f"cannot compute this selection: {exc}"
        self.neighbours_html.value = ""
        self.score_html.value = f'<p class="alignnb-message" style="color:#B00020"><b>{html.escape(why)}</b></p>'

    def _draw(self) -> None:
        score, table = self.score_text(), self.neighbours_html_table()
        fig = self.heatmap()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        self.neighbours_html.value = table
        self.heatmap_png.value = buf.getvalue()
        self.score_html.value = score

    def _on_change(self, change: dict) -> None:
        self.refresh()

    def static(self) -> Any:
        """Display the current selection as plain output (for headless runs); returns the heatmap figure."""
        why = self.problem()
        if why is not None:
            raise ValueError(why)
        display(HTML(self.score_text()))
        display(HTML(self.neighbours_html_table()))
        return self.heatmap()
