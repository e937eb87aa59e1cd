"""Figures: every figure function draws on the ax (or axes) it is given, returns (fig, ax),
makes its own figure without one, and saves byte-identical PNG + PDF when drawn twice."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from alignnb.extract.embeddings import Embeddings
from alignnb.measure import projections
from alignnb.show import agent_figures, alignment_figures, demo_figures, embedding_figures, plots

LEVELS = ["BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0"]
ACTIONS = ["left", "right", "forward", "pickup"]
MODELS = ["agent", "smollm2-135m", "gemma3-270m", "bag-of-words"]


def synthetic_inputs() -> dict:
    """Small, seeded inputs of the shapes the notebooks pass, one entry per figure's data."""
    rng = np.random.default_rng(0)
    d: dict = {"levels": LEVELS}
    d["episodes"] = pd.DataFrame({"level": np.repeat(LEVELS, 20), "length": rng.integers(3, 25, 40)})
    d["counts"] = pd.DataFrame(rng.integers(0, 50, (2, 4)), index=LEVELS, columns=ACTIONS)
    frames = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(7)]
    d["examples"] = [(LEVELS[0], "go to the red ball", frames), (LEVELS[1], "pick up the key", frames[:6])]
    d["actions"] = [[2, 0, 1, 2, 2, 3], [2, 3, 1]]
    steps = np.arange(0, 200, 10)
    d["history"] = pd.DataFrame({"step": steps, "train_loss": 2.0 / (1 + steps / 20),
                                 "val_loss": np.where(steps % 40 == 0, 2.2 / (1 + steps / 25), np.nan),
                                 **{f"success/{lv}": np.where(steps % 40 == 0, np.linspace(0, 0.9 + 0.05 * i, 20), np.nan)
                                    for i, lv in enumerate(LEVELS)}})
    d["greedy"] = pd.DataFrame({"level": LEVELS, "success_rate": [0.97, 0.91], "episodes": [100, 100]})
    d["sampled"] = pd.DataFrame({"level": LEVELS, "success_rate": [0.93, 0.85], "episodes": [100, 100]})
    d["goals"] = {LEVELS[0]: 0.95, LEVELS[1]: 0.9}
    d["confusion"] = np.array([[30, 2, 1, 0], [1, 25, 3, 0], [0, 0, 0, 0], [2, 1, 4, 40]])
    d["success"] = pd.DataFrame({"learner": ["transformer"] * 4 + ["gru-film-lstm"] * 2,
                                 "seed": [0, 0, 1, 1, 0, 0], "level": LEVELS * 3,
                                 "success_rate": [0.97, 0.92, 0.96, 0.9, 0.8, 0.7], "episodes": 100})
    d["learner_goals"] = {"transformer": d["goals"], "gru-film-lstm": {lv: 0.8 for lv in LEVELS}}
    verbs, colors, objects = ["go to", "pick up"], ["red", "green", "blue"], ["ball", "key", "box"]
    rows = [(f"{v} the {c} {o}", v, c, o) for v in verbs for c in colors for o in objects]
    sentences = [r[0] for r in rows]
    d["attributes"] = pd.DataFrame(rows, columns=["sentence", "verb", "color", "object"]).set_index("sentence")
    base = rng.normal(size=(len(sentences), 6))
    d["spaces"] = {m: Embeddings(m, sentences, (base + 0.3 * (i + 1) * rng.normal(size=base.shape)).astype(np.float32))
                   for i, m in enumerate(MODELS)}
    n = len(MODELS)
    sim = rng.uniform(0.2, 0.8, (n, n))
    sim = (sim + sim.T) / 2
    np.fill_diagonal(sim, 1.0)
    d["matrix"] = pd.DataFrame(sim, index=MODELS, columns=MODELS)
    ks = np.arange(1, 12)
    d["curves"] = pd.concat([pd.DataFrame({"model": m, "family": "control" if m == "bag-of-words" else "decoder LLM",
                                           "k": ks, "precision": 0.3 + 0.05 * i + 0.02 * ks,
                                           "null_low": ks / 17 - 0.02, "null_high": ks / 17 + 0.03, "chance": ks / 17})
                             for i, m in enumerate(MODELS[1:])], ignore_index=True)
    sizes = [6, 12, 18]
    pairs = [("agent", "smollm2-135m"), ("agent", "bag-of-words"), ("smollm2-135m", "gemma3-270m")]
    d["by_n"] = pd.DataFrame([{"subset": subset, "model_a": a, "model_b": b, "n": size, "k": 3,
                               "precision": 0.4 + 0.1 * j - 0.01 * size, "precision_sd": 0.02,
                               "rnx": 0.3 + 0.1 * j - 0.01 * size, "chance": 3 / (size - 1)}
                              for subset in ("random", "level") for j, (a, b) in enumerate(pairs) for size in sizes])
    d["sweeps"] = pd.DataFrame([{"model": m, "pooling": pool, "layer": layer, "precision": 0.2 + 0.05 * layer - 0.1 * i}
                                for i, m in enumerate(MODELS[1:3]) for pool in ("mean", "last") for layer in range(5)])
    d["shares"] = pd.DataFrame([{"model": m, "attribute": a, "share": 0.3 + 0.1 * i + 0.05 * j, "chance": 0.2 + 0.05 * j}
                                for i, m in enumerate(MODELS) for j, a in enumerate(["verb", "color", "object"])])
    points = ["instruction", "memory", "policy"]
    d["variant_summary"] = pd.DataFrame([{"learner": lr, "model": m, "extraction": p,
                                          "precision_mean": 0.3 + 0.1 * i + 0.05 * j, "precision_sd": np.nan if j else 0.02}
                                         for lr in ("transformer", "transformer-untrained", "gru-film-lstm")
                                         for i, m in enumerate(MODELS[1:]) for j, p in enumerate(points)])
    d["ceiling"] = pd.DataFrame([{"pair": "seed to seed", "learner_a": lr, "extraction": p, "precision_mean": 0.6,
                                  "precision_sd": np.nan if p == "policy" else 0.03}
                                 for lr in ("transformer", "gru-film-lstm") for p in points])
    d["e1"] = pd.DataFrame([{"extraction": p, "model": m, "estimate": 0.02 * i - 0.01, "ci_low": 0.02 * i - 0.05,
                             "ci_high": 0.02 * i + 0.03, "p_holm": 0.01 if i else 0.4}
                            for p in points for i, m in enumerate(MODELS[1:])])
    d["e2"] = d["e1"].assign(versus="bag-of-words")
    snaps = [("untrained", 0, np.nan), ("step 1000", 1000, 0.6), ("final", 2000, 0.9)]
    d["trajectory"] = pd.DataFrame([
        {"learner": ln, "seed": s, "snapshot": name, "step": step, "extraction": x, "model": m,
         "precision": 0.1 + 0.1 * i + 0.02 * s, "success": success}
        for ln in ("transformer", "gru-film-lstm") for s in (0, 1) for i, (name, step, success) in enumerate(snaps)
        for x in ("embedding", "behaviour") for m in ("smollm2-135m", "bag-of-words")])
    return d


def figure_calls(d: dict) -> dict[str, tuple[Callable, tuple[int, int] | None]]:
    """Per figure function: a call drawing it on ``target`` (an ax, an axes grid or None), and the
    grid it takes (rows, columns), or None for a single ax."""
    pictures = projections.project_spaces(d["spaces"], "pca", seed=0)
    procrustes = projections.procrustes_2d(d["spaces"]["agent"].vectors, d["spaces"]["smollm2-135m"].vectors,
                                           max_lines=20, seed=0)
    verbs = d["attributes"]["verb"].tolist()
    shares = projections.action_shares(d["counts"])
    rows, row_names = projections.confusion_rows(d["confusion"], ACTIONS)
    link = projections.similarity_linkage(d["matrix"])
    return {
        "episode_lengths": (lambda t: plots.episode_lengths(d["episodes"], d["levels"], axes=t), (1, 2)),
        "action_distribution": (lambda t: plots.action_distribution(shares, ax=t), None),
        "frame_grid": (lambda t: plots.frame_grid(d["examples"], 5, ACTIONS, d["actions"], axes=t), (2, 5)),
        "learning_curves": (lambda t: plots.learning_curves(d["history"], d["levels"], axes=t), (1, 2)),
        "curves_grid": (lambda t: plots.curves_grid({("transformer", 0): d["history"], ("transformer", 1): d["history"],
                                                     ("gru-film-lstm", 0): d["history"]}, d["levels"],
                                                    d["learner_goals"], axes=t), (2, len(d["levels"]) + 1)),
        "success_bars": (lambda t: plots.success_bars(d["greedy"], d["sampled"], d["goals"], ax=t), None),
        "confusion": (lambda t: plots.confusion(rows, row_names, ACTIONS, ax=t), None),
        "agent_success_grid": (lambda t: plots.agent_success_grid(d["success"], d["learner_goals"], ax=t), None),
        "embedding_sanity": (lambda t: plots.embedding_sanity(projections.embedding_distributions(d["spaces"]), axes=t),
                             (1, 2)),
        "projection_grid": (lambda t: plots.projection_grid(pictures, d["attributes"], axes=t), (len(MODELS), 3)),
        "procrustes_picture": (lambda t: plots.procrustes_picture(procrustes, verbs, "agent", "smollm2-135m", ax=t),
                               None),
        "precision_heatmap": (lambda t: plots.precision_heatmap(d["matrix"], 5, "title", linkage=link, ax=t), None),
        "metric_heatmap": (lambda t: plots.metric_heatmap(d["matrix"], "precision@5", ("agent", "gemma3-270m"), ax=t),
                           None),
        "precision_curves": (lambda t: plots.precision_curves(d["curves"], "agent", ax=t), None),
        "precision_vs_n": (lambda t: plots.precision_vs_n(d["by_n"], axes=t), (1, 2)),
        "layer_sweep_plot": (lambda t: plots.layer_sweep_plot(d["sweeps"], 5, ax=t), None),
        "attribute_shares": (lambda t: plots.attribute_shares(d["shares"], ax=t), None),
        "variant_alignment": (lambda t: plots.variant_alignment(d["variant_summary"], d["ceiling"], 0.1, 5, axes=t),
                              (1, 2)),
        "effect_intervals": (lambda t: plots.effect_intervals(d["e1"], d["e2"], axes=t), (1, 2)),
        "alignment_over_training": (lambda t: plots.alignment_over_training(
            d["trajectory"], ["smollm2-135m", "bag-of-words"], ["embedding", "behaviour"], 5, 0.1, x="success",
            axes=t), (2, 2)),
    }


@pytest.fixture(scope="module")
def calls():
    plots.set_style()
    return figure_calls(synthetic_inputs())


NAMES = list(figure_calls(synthetic_inputs()))


def _flat(axes) -> list:
    return list(np.asarray(axes, dtype=object).ravel())


def test_every_figure_function_is_tested_and_takes_ax():
    modules = (demo_figures, agent_figures, embedding_figures, alignment_figures)
    public = {name for m in modules for name, f in vars(m).items()
              if inspect.isfunction(f) and f.__module__ == m.__name__ and not name.startswith("_")}
    public -= {"scatter_by"}  # a helper that draws on a required ax
    assert public == set(NAMES) == {f.__name__ for f in plots.FIGURES}
    for f in plots.FIGURES:
        params = inspect.signature(f).parameters
        target = params.get("ax") or params.get("axes")
        assert target is not None and target.default is None, f"{f.__name__} takes no ax=None / axes=None"
        assert f.__doc__ and inspect.signature(f).return_annotation is not inspect.Signature.empty


@pytest.mark.parametrize("name", NAMES)
def test_draws_on_the_given_ax(calls, name):
    call, grid = calls[name]
    if grid is None:
        fig, target = plt.subplots()
    else:
        fig, target = plt.subplots(*grid, squeeze=False)
    before = len(fig.axes)
    try:
        out_fig, out_ax = call(target)
        assert out_fig is fig and out_ax is target
        for ax in _flat(target):
            assert ax.has_data() or ax.texts, f"{name} drew nothing on {ax}"
        assert len(fig.axes) >= before  # only colour bars may be added beside the given axes
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name", NAMES)
def test_makes_its_own_figure_and_saves_the_same_bytes_twice(calls, name, tmp_path):
    call, _ = calls[name]
    files = []
    for run in range(2):
        n_open = len(plt.get_fignums())
        fig, ax = call(None)
        assert len(plt.get_fignums()) == n_open + 1
        assert all(a.figure is fig for a in _flat(ax))
        files.append(plots.save_figure(fig, f"{name}-{run}", tmp_path, {"seed": 0}))
        plt.close(fig)
    for a, b in zip(*files):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} and {b.name} differ"


def test_the_heatmaps_draw_every_cell_and_outline_the_selection(calls):
    d = synthetic_inputs()
    fig, ax = plots.metric_heatmap(d["matrix"], "precision@5", ("agent", "gemma3-270m"))
    assert len(ax.texts) == len(MODELS) ** 2 and len(ax.patches) == 2
    assert ax.texts[1].get_text() == f"{d['matrix'].iat[0, 1]:.2f}"
    plt.close(fig)
    fig, ax = plt.subplots()
    link = projections.similarity_linkage(d["matrix"])
    plots.precision_heatmap(d["matrix"], 5, linkage=link, ax=ax)
    assert sorted(t.get_text() for t in ax.get_yticklabels()) == sorted(MODELS) and len(ax.texts) == len(MODELS) ** 2
    plt.close(fig)


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


def test_save_table_writes_the_table_and_its_parameters(tmp_path):
    path = plots.save_table(pd.DataFrame({"a": [1.0 / 3]}), "t", tmp_path, {"k": 5}, index=False)
    assert path.read_text() == "a\n0.3333\n"
    assert '"k": 5' in path.with_suffix(".params.json").read_text()


def test_models_of_one_family_are_told_apart():
    from matplotlib.colors import to_rgb

    keys = ["agent", "agent-untrained", "bag-of-attributes", "smollm2-135m", "gemma3-270m", "minilm-l6"]
    styles = plots.model_styles(keys)
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == len(keys)
    # the first of each family keeps the family colour; the second is a shade of the same hue
    assert styles["smollm2-135m"]["color"] == to_rgb(plots.FAMILY_COLORS["decoder LLM"])
    assert styles["gemma3-270m"]["color"] != styles["smollm2-135m"]["color"]
    assert styles["agent-untrained"]["marker"] != styles["bag-of-attributes"]["marker"]


def test_short_level():
    assert plots.short_level("BabyAI-GoToLocal-v0") == "GoToLocal"
