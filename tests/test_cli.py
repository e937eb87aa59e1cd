"""The batch runner: failures name notebook and cell; sweeps summarise runs."""

from __future__ import annotations

import nbformat
import pandas as pd
import pytest

from alignnb import cli


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
    with pytest.raises(cli.NotebookFailed, match=r"02_broken.ipynb failed in cell \d+.*RuntimeError.*data are gone"):
        cli.run_notebooks({"x": 2}, quick=True, output=tmp_path / "out", notebooks=[good, bad], progress=False)
    assert (tmp_path / "out" / "01_fine.ipynb").exists() and (tmp_path / "out" / "02_broken.ipynb").exists()
    ran = nbformat.read(tmp_path / "out" / "01_fine.ipynb", 4)
    injected = next(c for c in ran.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "x = 2" in injected.source and "quick = True" in injected.source  # Python values, not strings


def test_main_exits_non_zero_on_failure(tmp_path, monkeypatch, capsys):
    def boom(*a, **k):
        raise cli.NotebookFailed("03_x.ipynb failed in cell 4")

    monkeypatch.setattr(cli, "run_notebooks", boom)
    assert cli.main(["run", "--quick"]) == 1
    assert "03_x.ipynb failed in cell 4" in capsys.readouterr().err


def test_parse_value_and_run_names():
    assert cli.parse_value("3") == 3 and cli.parse_value("false") is False and cli.parse_value("[1, 2]") == [1, 2]
    assert cli.parse_value("BabyAI-GoToLocal-v0") == "BabyAI-GoToLocal-v0"
    assert cli.run_name(False, {}) == "default"
    assert cli.run_name(True, {"seed": 1}) == "quick_seed=1"


def test_sweep_summary(tmp_path):
    dirs = {}
    for seed, (sr, p) in {0: (0.9, 0.5), 1: (1.0, 0.7)}.items():
        fig = tmp_path / f"seed={seed}" / "figures"
        fig.mkdir(parents=True)
        pd.DataFrame({"level": ["L"], "success_rate": [sr], "episodes": [10]}).to_csv(fig / "agent_success.csv", index=False)
        pd.DataFrame({"model": ["m"], "precision_at_15": [p]}).to_csv(fig / "alignment_summary.csv", index=False)
        dirs[seed] = tmp_path / f"seed={seed}"
    table = cli.sweep_summary(dirs, "seed")
    assert table.loc["success L", "mean"] == pytest.approx(0.95)
    assert table.loc["precision@15 agent vs m", "sd"] == pytest.approx(0.1414, abs=1e-3)
