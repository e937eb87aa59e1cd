"""The published executed notebooks (alignnb.run.results): what is stripped, what is kept, and the committed results/."""

from __future__ import annotations

import copy
import json

import nbformat

from alignnb.core import paths
from alignnb.run import results

REPO = "/home/someone/alignnb"


def _executed() -> nbformat.NotebookNode:
    """A notebook as papermill leaves it: timings, an injected cell with a random id, a widget, a path."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"duration": 3.2, "start_time": "2026-12-02T20:59:38", "end_time": "2026-12-02T21:00",
                                "input_path": f"{REPO}/notebooks/01.ipynb", "parameters": {"k": 15},
                                "environment_variables": {}, "exception": None}
    params = nbformat.v4.new_code_cell("k = 5", metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell("k = 15", metadata={"tags": ["injected-parameters"]})
    work = nbformat.v4.new_code_cell("run()", execution_count=3, metadata={
        "execution": {"iopub.execute_input": "2026-12-02T20:59:38Z"},
        "papermill": {"duration": 0.1, "status": "completed"}, "tags": []})
    work.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=f"{REPO}/.venv/lib/umap.py:1: warning\n"),
        nbformat.v4.new_output("execute_result", execution_count=3,
                               data={"text/plain": f"PosixPath('{REPO}/figures/x.csv')"}),
        nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "m1", "version_major": 2},
            "text/plain": "HBox()"}),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), params, injected, work]
    for i, cell in enumerate(nb.cells):  # a notebook's own cell ids are fixed; only papermill's is random
        cell["id"] = f"cell-{i}" if i != 2 else "3bcd7302"
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {
        "m1": {"model_name": "FloatProgressModel", "state": {"value": 5, "max": 10}}}}}
    return nb


def test_stable_strips_what_a_rerun_changes_and_keeps_the_results():
    nb = results.stable(_executed(), repo=REPO)
    assert nb.metadata["papermill"] == {"parameters": {"k": 15}}
    assert "widgets" not in nb.metadata
    injected, work = nb.cells[2], nb.cells[3]
    assert injected["id"] == results.INJECTED_ID and "hide-input" in injected.metadata["tags"]
    assert "execution" not in work.metadata and "papermill" not in work.metadata
    text = json.dumps(nb)
    assert REPO not in text
    assert work.outputs[0]["text"] == "<repo>/.venv/lib/umap.py:1: warning\n"
    assert work.outputs[1]["data"]["text/plain"] == "PosixPath('<repo>/figures/x.csv')"
    assert work.outputs[2]["data"] == {"text/plain": "|" + "\u2588" * 5 + " " * 5 + "|"}  # the widget's final state
    assert work.outputs[3]["data"]["image/png"] == "iVBORw0KGgo=" and work.execution_count == 3
    assert nb.cells[1].source == "k = 5" and nb.cells[0].source == "# title"
    nbformat.validate(nb)


def test_stable_is_idempotent_and_two_runs_that_differ_only_in_timing_publish_the_same():
    once = results.stable(_executed(), repo=REPO)
    assert results.stable(copy.deepcopy(once), repo=REPO) == once
    later = _executed()
    later.metadata["papermill"]["duration"] = 99.0
    later.cells[2]["id"] = "ffffffff"
    later.cells[3].metadata["papermill"]["duration"] = 7.0
    assert results.stable(later, repo=REPO) == once


def test_publish_writes_exactly_the_run(tmp_path):
    run, target = tmp_path / "run", tmp_path / "results"
    run.mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb"):
        nbformat.write(_executed(), run / name)
    target.mkdir()
    nbformat.write(_executed(), target / "03_old.ipynb")  # a notebook the run no longer has
    written = results.publish(run, target)
    assert [p.name for p in written] == ["01_a.ipynb", "02_b.ipynb"]
    assert sorted(p.name for p in target.iterdir()) == ["01_a.ipynb", "02_b.ipynb"]  # no temporary file left
    assert "duration" not in (target / "01_a.ipynb").read_text()


def test_the_committed_results_are_a_stable_full_default_run_of_todays_notebooks():
    """results/ holds one executed copy of every notebook, already stable, run with the default
    parameters, and with exactly the code of notebooks/ (a notebook edited since must be rerun)."""
    published = paths.study_notebooks(paths.results_dir())
    sources = paths.study_notebooks()
    assert [p.name for p in published] == [p.name for p in sources]
    for path, source in zip(published, sources):
        nb = nbformat.read(path, as_version=4)
        assert results.stable(copy.deepcopy(nb)) == nb, f"{path.name} has volatile metadata"
        params = nb.metadata["papermill"]["parameters"]
        # the one run that writes the repository's figures/ (passed by the runner; the path written <repo>)
        assert params.get("quick") is False and params.get("output_dir") == "<repo>/figures", path.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code if c.source.strip()), f"{path.name} is not fully executed"
        assert not any(o.get("output_type") == "error" for c in code for o in c.outputs), path.name
        ran = [c.source for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        clean = [c.source for c in nbformat.read(source, as_version=4).cells]
        assert ran == clean, f"{path.name} was run from another version of notebooks/{source.name}: rerun make study"
