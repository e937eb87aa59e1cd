"""Notebooks: parameters cells parse, quick runs under papermill, outputs stay in their run folder."""

from __future__ import annotations

import ast
import json

import nbformat
import pandas as pd
import pytest

from alignnb.run import notebooks
from alignnb.core import paths
from alignnb.run.settings import StudyConfig

from support import LEVELS

NOTEBOOKS = paths.study_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_clean_and_parameters_parse(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and not c.get("execution_count") for c in code), "stored with outputs"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    assigned = [n.targets[0].id for n in ast.parse("".join(params[0]["source"])).body]
    # papermill silently drops a line it cannot parse; every assignment must be seen by it
    assert list(notebooks.notebook_parameters(path)) == assigned
    assert {"quick", "output_dir", "seed"} <= set(assigned)
    # a notebook declares its own stage's parameters, what identifies the study, and run settings only
    number = int(path.name[:2])
    own = set(StudyConfig.names(number))
    runner = (set(notebooks.RUNNER_PARAMETERS) - {"quick"}) | {"data_dir"}
    assert set(assigned) - runner == own
    if number in (2, 3):  # the stages with work to spread: the runner passes its engine
        assert {"engine", "engine_address"} <= set(assigned)
    assert "study" in assigned


def test_runner_rejects_unknown_parameters(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter"):
        notebooks.run_notebooks({"sede": 1}, quick=True, output=tmp_path)


@pytest.mark.slow
def test_quick_run_of_notebook_01(data_root, tmp_path, capfd):
    before = sorted(p.name for p in paths.record_figures_dir().glob("*"))
    published = {p.name: p.stat().st_mtime_ns for p in paths.results_dir().glob("*")}
    # its own cache folder, so it collects (other tests may have cached the quick study's demos)
    fresh = tmp_path / "data"
    run_dir = notebooks.run_notebooks({"data_dir": str(fresh)}, quick=True, output=tmp_path / "run", only=["01"],
                                progress=True)
    out, err = capfd.readouterr()  # the kernel writes its warnings to the inherited stderr
    assert "without encryption" not in out + err and "WARNING" not in err, err[-2000:]
    # the kernel's collection bars are drawn on the command line too, one per level
    assert all(level.removeprefix("BabyAI-") in err for level in LEVELS), err[-2000:]
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    for name in ("demo_episode_lengths", "demo_action_distribution", "demo_example_frames"):
        assert {f"{name}.png", f"{name}.pdf"} <= figures
    assert "instruction_inventory.csv" in figures
    assert (run_dir / "01_collect_demos.ipynb").exists()
    assert sorted(p.name for p in paths.record_figures_dir().glob("*")) == before  # committed figures untouched
    assert {p.name: p.stat().st_mtime_ns for p in paths.results_dir().glob("*")} == published  # and results/
    assert any((fresh / "demos").iterdir())


@pytest.mark.slow
def test_quick_run_of_the_whole_study(quick_run):
    """`alignnb run --quick` end to end: every notebook, every figure the README shows."""
    run_dir = quick_run
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    for name in ("agent_learning_curves", "agent_success", "agent_rollouts", "agent_action_confusion",
                 "embedding_sanity", "precision_heatmap", "precision_vs_k", "precision_vs_n", "layer_sweep",
                 "neighbour_attributes", "spaces_pca", "procrustes_agent_vs_lm", "explorer_default_selection",
                 "effect_intervals"):
        assert {f"{name}.png", f"{name}.pdf"} <= figures, name
    for table in ("alignment_summary", "sensitivity", "robust_conclusions", "precision_matrix", "paper_comparison",
                  "precision_vs_n", "training_effect", "model_contrasts"):
        assert f"{table}.csv" in figures, table
    summary = pd.read_csv(run_dir / "figures" / "alignment_summary.csv")
    assert set(summary["seed"].astype(str)) == {"0", "1", "mean"}  # the quick run's two agent seeds and their mean
    e1 = pd.read_csv(run_dir / "figures" / "training_effect.csv")
    registered = e1[e1["p_holm"].notna()]
    assert set(registered["extraction"]) == {"embedding", "film", "behaviour"} and (registered["seeds"] == 2).all()
    assert (registered["inits"] == 2).all()  # the quick run's random initialisations
    contract = ["model", "family", "k", "n", "precision", "chance", "rnx", "calibrated", "ci_low", "ci_high",
                "null_q95", "p_value", "precision_centred", "rnx_centred", "procrustes_disparity", "procrustes_p",
                "retrieval_top1", "cka", "cka_p"]
    assert set(contract) <= set(summary.columns)
    assert {"agent-untrained", "agent-replicate", "bag-of-attributes", "bag-of-words", "tf-idf", "smollm2-135m",
            "minilm-l6", "minilm-l6-q4_0"} <= set(summary["model"])
    by_n = pd.read_csv(run_dir / "figures" / "precision_vs_n.csv")
    assert {"model_a", "model_b", "n", "subset", "k", "precision", "chance", "rnx"} <= set(by_n.columns)
    conclusions = pd.read_csv(run_dir / "figures" / "robust_conclusions.csv")
    assert set(conclusions["metric"]) == {"precision", "rnx", "calibrated", "permutation null"}
    sens = pd.read_csv(run_dir / "figures" / "sensitivity.csv")
    assert {"k", "sentences", "N", "hygiene", "pooling", "layer"} <= set(sens["choice"])
    assert summary["precision"].between(0, 1).all() and (summary["k"] == 15).all()
    readme = (paths.REPO_ROOT / "README.md").read_text()
    import re

    for shown in re.findall(r"figures/([\w-]+)\.png", readme):
        assert f"{shown}.png" in figures, f"README shows figures/{shown}.png but the run does not make it"
    table = pd.read_csv(run_dir / "figures" / "agent_success.csv")
    assert list(table.columns) == ["learner", "seed", "level", "success_rate", "episodes", "ci_low", "ci_high"]
    assert ((table["ci_low"] <= table["success_rate"]) & (table["success_rate"] <= table["ci_high"])).all()
    # quick: two transformer seeds and one of the second learner, four levels each
    assert sorted(set(zip(table["learner"], table["seed"]))) == [("gru-film-lstm", 0), ("transformer", 0),
                                                                  ("transformer", 1)]
    assert len(table) == 12 and table["success_rate"].between(0, 1).all()
    # every extraction point of both learners (and the untrained twins) against every reference space
    variants = pd.read_csv(run_dir / "figures" / "agent_variants.csv")
    assert list(variants.columns) == ["learner", "seed", "extraction", "model", "k", "precision", "rnx", "ci_low",
                                      "ci_high"]
    points = variants.groupby("learner")["extraction"].unique().map(list).to_dict()
    assert points["transformer"] == ["words", "layer 1", "layer 2", "embedding", "film", "memory", "behaviour"]
    assert points["gru-film-lstm"] == ["words", "embedding", "film", "memory", "behaviour"]
    assert {"transformer-untrained", "gru-film-lstm-untrained"} <= set(points)
    assert {"smollm2-135m", "bag-of-words", "bot-behaviour"} <= set(variants["model"])
    assert (variants["ci_low"] <= variants["precision"] + 1e-9).all()
    assert (variants["precision"] <= variants["ci_high"] + 1e-9).all()
    agreement = pd.read_csv(run_dir / "figures" / "agent_agreement.csv")
    assert set(agreement["pair"]) == {"seed to seed", "learner to learner"}
    assert {"agent_variants.png", "agent_success_all.png"} <= figures
    # E3: every agent at every snapshot kept (a quick run keeps no success checks: its twin and its end)
    from alignnb.measure import trajectory

    over = pd.read_csv(run_dir / "figures" / "alignment_over_training.csv")
    assert list(over.columns) == list(trajectory.SEED_COLUMNS)
    assert over.groupby(["learner", "seed"])["snapshot"].unique().map(sorted).map(tuple).unique().tolist() == [
        ("final", "untrained")]
    assert set(over["extraction"]) == {"embedding", "film", "behaviour"}
    assert (over.query("snapshot == 'untrained'")["twin_effect"] == 0).all()
    assert over.query("snapshot == 'final'")["success"].between(0, 1).all()
    modes = pd.read_csv(run_dir / "figures" / "agent_success_modes.csv")
    assert (modes["greedy"].to_numpy() == table["success_rate"].to_numpy()).all()
    assert modes["sampled"].between(0, 1).all()
    assert {"alignment_over_training.png", "alignment_over_success.png", "matched_success.csv",
            "alignment_trend.csv", "alignment_over_training_effects.csv"} <= figures


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_cell_rebinds_a_parameter(path):
    """A later cell that imports or assigns a parameter's name (``from alignnb.extract import models``
    beside ``models = []``) would silently replace what the runner injected."""
    nb = nbformat.read(path, as_version=4)
    params, bound = set(), set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        if "parameters" in cell.metadata.get("tags", []):
            params = {n.targets[0].id for n in tree.body if isinstance(n, ast.Assign)}
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update(a.asname or a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
    assert params and not params & bound, sorted(params & bound)


@pytest.mark.slow
def test_a_notebook_run_by_hand_with_an_edited_parameter_leaves_the_committed_figures_alone(quick_run, tmp_path):
    """Notebook 05 as a reader runs it (papermill without the runner: output_dir left empty), with k edited."""
    import time

    import papermill

    record = paths.record_figures_dir()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in record.iterdir()}
    interactive = paths.figures_dir()  # where an empty output_dir writes
    assert interactive == paths.runs_dir() / "interactive" / "figures" and interactive != record
    started = time.time_ns()
    source = paths.notebooks_dir() / "05_explore.ipynb"
    papermill.execute_notebook(str(source), str(tmp_path / "05.ipynb"), parameters={"quick": True, "k": 5},
                               cwd=str(source.parent), progress_bar=False)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in record.iterdir()} == before
    written = interactive / "explorer_default_selection.png"
    assert written.exists() and written.stat().st_mtime_ns >= started
    said = "".join(o.get("text", "") for c in nbformat.read(tmp_path / "05.ipynb", 4).cells for o in c.get("outputs", []))
    assert "output_dir is empty" in said and str(interactive) in said
