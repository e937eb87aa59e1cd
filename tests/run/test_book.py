"""The rendered book (alignnb.run.book): from a tiny fake run, from the committed results/ and from a quick run."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pytest

from alignnb.core import paths
from alignnb.run.book import build_book, widget_text

README = """# fakestudy: a tiny study

Intro text that is not on the front page.

<!-- book: results start -->
## Results (profile `offline`, the default)

The agents align with the models at RESULTS-TEXT-0.42.

![the x figure](figures/x.png)

See [a paper](https://arxiv.org/abs/2601.22948).

<!-- book: results end -->
## Models and profiles

OTHER-SECTION-TEXT
"""


def _png() -> str:
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _notebook(title: str, text: str, png: str | None = None, executed: bool = True) -> nbformat.NotebookNode:
    """A notebook with a markdown heading and one code cell with a stream (and image) output."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"},
                                            "language_info": {"name": "python"}})
    code = nbformat.v4.new_code_cell("print('hi')")
    if executed:
        code.execution_count = 1
        code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        if png:
            code.outputs.append(nbformat.v4.new_output("display_data", data={"image/png": png,
                                                                               "text/plain": "<Figure>"}))
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nWhat it does."), code]
    return nb


def _fake_study(root: Path) -> tuple[Path, Path, Path]:
    """A run folder with two executed notebooks, a README and its figures and docs."""
    run, figures = root / "run", root / "repo" / "figures"
    run.mkdir(parents=True)
    figures.mkdir(parents=True)
    nbformat.write(_notebook("01 · First", "STREAM-ONE", _png()), run / "01_first.ipynb")
    nbformat.write(_notebook("02 · Second", "STREAM-TWO"), run / "02_second.ipynb")
    readme = root / "repo" / "README.md"
    readme.write_text(README, encoding="utf-8")
    (figures / "x.png").write_bytes(base64.b64decode(_png()))
    return run, readme, figures


@pytest.fixture(scope="module")
def fake_book(tmp_path_factory) -> Path:
    """The book of the fake run, built once for this module."""
    root = tmp_path_factory.mktemp("book")
    run, readme, figures = _fake_study(root)
    return build_book(run, root / "out", readme=readme, repo_figures=figures, progress=False)


def test_front_page_is_the_readme_results(fake_book):
    index = (fake_book / "index.html").read_text(encoding="utf-8")
    assert "fakestudy: a tiny study" in index and "RESULTS-TEXT-0.42" in index
    assert "OTHER-SECTION-TEXT" not in index and "Intro text" not in index
    assert 'href="01_first.html"' in index and 'href="02_second.html"' in index  # the contents
    assert "https://arxiv.org/abs/2601.22948" in index
    assert (fake_book / "_images" / "x.png").is_file() and 'src="_images/x.png"' in index


def test_every_notebook_has_a_page_with_its_outputs(fake_book):
    first = (fake_book / "01_first.html").read_text(encoding="utf-8")
    second = (fake_book / "02_second.html").read_text(encoding="utf-8")
    assert "STREAM-ONE" in first and "STREAM-TWO" in second
    assert "<img" in first and "01 · First" in first
    assert "cdn.jsdelivr" not in first


def test_a_missing_image_or_an_unknown_link_fails_the_build(tmp_path):
    run, readme, figures = _fake_study(tmp_path)
    (figures / "x.png").unlink()
    with pytest.raises(RuntimeError, match=r"image file not readable: figures/x.png"):
        build_book(run, tmp_path / "out", readme=readme, repo_figures=figures, progress=False)
    (figures / "x.png").write_bytes(base64.b64decode(_png()))
    nb = nbformat.read(run / "02_second.ipynb", as_version=4)
    nb.cells[0].source += "\n\nSee [the gone page](gone.md)."
    nbformat.write(nb, run / "02_second.ipynb")
    with pytest.raises(RuntimeError, match=r"gone\.md"):
        build_book(run, tmp_path / "out", readme=readme, repo_figures=figures, progress=False)


def test_bad_runs_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="make study"):
        build_book(tmp_path / "nothing", tmp_path / "out", progress=False)
    run, readme, figures = _fake_study(tmp_path)
    nbformat.write(_notebook("03 · Third", "", executed=False), run / "03_third.ipynb")
    with pytest.raises(ValueError, match="03_third.ipynb has no outputs"):
        build_book(run, tmp_path / "out", readme=readme, repo_figures=figures, progress=False)
    (run / "03_third.ipynb").unlink()
    with pytest.raises(FileExistsError, match="not made by build_book"):
        build_book(run, readme.parent, readme=readme, repo_figures=figures, progress=False)


def test_widget_text_reads_a_saved_progress_bar():
    state = {"box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_a", "IPY_MODEL_b", "IPY_MODEL_c"]}},
             "a": {"model_name": "HTMLModel", "state": {"value": "models:\u2007100%"}},
             "b": {"model_name": "FloatProgressModel", "state": {"value": 10.0, "max": 10.0}},
             "c": {"model_name": "HTMLModel", "state": {"value": "\u200710/10\u2007[00:00&lt;00:00]"}}}
    assert widget_text("box", state) == "models: 100%|" + "\u2588" * 10 + "| 10/10 [00:00<00:00]"
    assert widget_text("missing", state) is None


def test_book_of_the_committed_results(tmp_path):
    """What `make book` does in a fresh clone: the committed results/, README and figures/, no run."""
    committed = paths.study_notebooks(paths.results_dir())
    assert [p.name for p in committed] == [p.name for p in paths.study_notebooks()], "results/ lacks a notebook"
    site = build_book(out_dir=tmp_path / "book", progress=False)
    for notebook in committed:
        assert (site / f"{notebook.stem}.html").is_file(), notebook.name
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "Results (profile" in index and "Models and profiles" not in index


@pytest.mark.slow
def test_book_of_a_quick_run(quick_run, tmp_path):
    site = build_book(quick_run, tmp_path / "book", progress=False)
    for notebook in sorted(Path(quick_run).glob("[0-9][0-9]_*.ipynb")):
        assert (site / f"{notebook.stem}.html").is_file(), notebook.name
    assert "Results (profile" in (site / "index.html").read_text(encoding="utf-8")
