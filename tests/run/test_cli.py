"""The batch runner: failures name notebook and cell; sweeps summarise runs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from alignnb.run import cli, notebooks


def write_notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    params = nbformat.v4.new_code_cell('x = 1  # a number\nquick = False  # quick\noutput_dir = ""  # figures')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


def test_failing_notebook_names_notebook_and_cell(tmp_path, capsys):
    good, bad = tmp_path / "01_fine.ipynb", tmp_path / "02_broken.ipynb"
    write_notebook(good, ["y = x + 1"])
    write_notebook(bad, ["y = x + 1", "raise RuntimeError('the data are gone')"])
    with pytest.raises(notebooks.NotebookFailed, match=r"02_broken.ipynb failed in cell \d+.*RuntimeError.*data are gone"):
        notebooks.run_notebooks({"x": 2}, quick=True, output=tmp_path / "out", notebooks=[good, bad], progress=False)
    assert (tmp_path / "out" / "01_fine.ipynb").exists() and (tmp_path / "out" / "02_broken.ipynb").exists()
    ran = nbformat.read(tmp_path / "out" / "01_fine.ipynb", 4)
    injected = next(c for c in ran.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "x = 2" in injected.source and "quick = True" in injected.source  # Python values, not strings


def test_main_exits_non_zero_on_failure(tmp_path, monkeypatch, capsys):
    def boom(*a, **k):
        raise notebooks.NotebookFailed("03_x.ipynb failed in cell 4")

    monkeypatch.setattr(notebooks, "run_notebooks", boom)
    assert cli.main(["run", "--quick"]) == 1
    assert "03_x.ipynb failed in cell 4" in capsys.readouterr().err


def test_parse_value_and_run_names():
    assert cli.parse_value("3") == 3 and cli.parse_value("false") is False and cli.parse_value("[1, 2]") == [1, 2]
    assert cli.parse_value("BabyAI-GoToLocal-v0") == "BabyAI-GoToLocal-v0"
    assert notebooks.run_name(False, {}) == "default"
    assert notebooks.run_name(True, {"seed": 1}).startswith("quick_seed=1_")
    # names are unique: settings that read alike after character replacement do not share a folder
    assert notebooks.run_name(False, {"models": ["a/b"]}) != notebooks.run_name(False, {"models": ["a-b"]})
    assert cli.parse_sweep("seed=0,1") == ("seed", [0, 1])
    assert cli.parse_sweep('models=["a","b"],["c"]') == ("models", [["a", "b"], ["c"]])
    for bad in ("seed=0,,1", "seed=", "=1,2", "seed"):
        with pytest.raises(ValueError, match="--sweep"):
            cli.parse_sweep(bad)


def test_sweep_summary(tmp_path):
    dirs = {}
    for seed, (sr, p) in {0: (0.9, 0.5), 1: (1.0, 0.7)}.items():
        fig = tmp_path / f"seed={seed}" / "figures"
        fig.mkdir(parents=True)
        pd.DataFrame({"level": ["L"], "success_rate": [sr], "episodes": [10]}).to_csv(fig / "agent_success.csv", index=False)
        pd.DataFrame({"model": ["m"], "k": [15], "precision": [p]}).to_csv(fig / "alignment_summary.csv", index=False)
        dirs[seed] = tmp_path / f"seed={seed}"
    table = notebooks.sweep_summary(dirs, "seed")
    assert table.loc["success L", "mean"] == pytest.approx(0.95)
    assert table.loc["precision@15 agent vs m", "sd"] == pytest.approx(0.1414, abs=1e-3)


def test_bad_parameters_fail_before_any_notebook(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(notebooks.papermill, "execute_notebook", lambda *a, **k: started.append(a))
    for params, message in [({"k": 0}, "k=0"), ({"seed": 1.5}, "seed must be an integer"),
                            ({"profile": "gpt"}, "unknown profile"), ({"models": "minilm-l6"}, "list of strings"),
                            ({"agent_seeds": "no"}, "an integer"), ({"sede": 1}, "unknown parameter"),
                            ({"quick": True}, "use --quick"), ({"output_dir": "x"}, "use --output")]:
        with pytest.raises(ValueError, match=message):
            notebooks.run_notebooks(params, quick=True, output=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="no notebook starts with"):
        notebooks.run_notebooks({}, quick=True, output=tmp_path / "run", only=["99"], progress=False)
    assert started == []


def test_each_notebook_receives_its_parameters_and_the_study(tmp_path, monkeypatch):
    calls = {}
    monkeypatch.setattr(notebooks.papermill, "execute_notebook",
                        lambda src, out, parameters, **k: calls.setdefault(Path(src).name[:2], parameters))
    notebooks.run_notebooks({"k": 5, "episodes_per_level": 100}, quick=True, output=tmp_path / "run", progress=False)
    assert calls["04"]["k"] == 5 and "episodes_per_level" not in calls["04"]
    assert calls["04"]["study"]["episodes_per_level"] == 100 and calls["01"]["episodes_per_level"] == 100
    assert all(c["quick"] is True and c["study"]["quick"] is True for c in calls.values())
    assert calls["05"]["interactive"] is False and calls["01"]["output_dir"].endswith("figures")


@pytest.mark.slow
@pytest.mark.parametrize("sweep", ["k=5,15", "seed=0,1"])
def test_quick_sweeps_produce_a_summary(sweep, quick_run, data_root, tmp_path, capsys):
    # the seed sweep trains one agent per seed (no replicate, no second learner) and stops after
    # notebook 02 (tests/run/test_ray.py reruns it on Ray); the k sweep reruns the analysis alone, on
    # the quick study that `quick_run` cached
    extra = (["-p", "agent_seeds", "1", "-p", "recurrent_seeds", "0", "--only", "01", "02"] if sweep.startswith("seed")
             else ["--only", "04"])
    assert cli.main(["run", "--quick", "--sweep", sweep, *extra, "--output", str(tmp_path / "sweep")]) == 0
    table = pd.read_csv(tmp_path / "sweep" / "sweep_summary.csv", index_col=0)
    name, values = cli.parse_sweep(sweep)
    assert [str(v) for v in values] == [c for c in table.columns if c not in ("mean", "sd")]
    if name == "seed":  # success per level of each seed's agent, with mean and sd across seeds
        success = [q for q in table.index if q.startswith("success ")]
        assert len(success) == 4 and table.loc[success].notna().all().all()
        assert table.loc[success, "mean"].between(0, 1).all()
        return
    shown = [q for q in table.index if q.startswith("precision@")]
    # the replicate exists only where it was trained (agent_seeds 1 skips it): every other space has a value
    always = [q for q in shown if not q.endswith("agent-replicate")]
    assert always and table.loc[always].notna().all().all()
    assert all(q.startswith("precision@k " if name == "k" else "precision@15 ") for q in shown)


def test_explore_without_a_cached_study_says_what_to_run(tmp_path):
    from alignnb.run import dashboard

    with pytest.raises(dashboard.StudyNotCached, match=r"make study.*alignnb run --quick"):
        dashboard.cached_study(data_dir=tmp_path / "empty")
    assert cli.main(["explore", "--quick", "--data-dir", str(tmp_path / "empty")]) == 1


def test_a_relative_data_folder_means_the_same_folder_in_the_kernels(tmp_path, monkeypatch):
    """The kernels run in notebooks/, the runner wherever it was started: a relative ALIGNNB_DATA or
    data_dir is made absolute before any kernel starts (two quick studies on one relative
    ALIGNNB_DATA once wrote their data under notebooks/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALIGNNB_DATA", "shared")
    calls = {}
    monkeypatch.setattr(notebooks.papermill, "execute_notebook",
                        lambda src, out, parameters, **k: calls.setdefault(Path(src).name[:2], parameters))
    notebooks.run_notebooks({"data_dir": "mine"}, quick=True, output=tmp_path / "run", progress=False)
    import os

    assert os.environ["ALIGNNB_DATA"] == str(tmp_path / "shared")
    assert {c["data_dir"] for c in calls.values() if "data_dir" in c} == {str(tmp_path / "mine")}


def test_only_the_full_default_run_writes_the_repositorys_figures(tmp_path, monkeypatch):
    """The runner passes figures/ as output_dir in the full default run alone (and publishes
    results/ then); --only, -p or --output runs write under their own run folder."""
    from alignnb.core import paths
    from alignnb.run import results

    monkeypatch.setattr(paths, "runs_dir", lambda: tmp_path / "runs")
    published = []
    monkeypatch.setattr(results, "publish", lambda run_dir: published.append(run_dir) or [Path(run_dir) / "x"])
    for kwargs, record in [({}, True), ({"only": ["04"]}, False), ({"parameters": {"k": 5}}, False),
                           ({"output": tmp_path / "out"}, False)]:
        calls = {}
        monkeypatch.setattr(notebooks.papermill, "execute_notebook",
                            lambda src, out, parameters, **k: calls.setdefault(Path(src).name[:2], parameters))
        published.clear()
        notebooks.run_notebooks(progress=False, **kwargs)
        given = {c["output_dir"] for c in calls.values()}
        assert len(given) == 1, given
        assert (given == {str(paths.record_figures_dir())}) is record, (kwargs, given)
        assert bool(published) is record
        if not record:
            assert str(tmp_path) in given.pop()
