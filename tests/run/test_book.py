"""The rendered book (alignnb.run.book): built from a tiny fake run in seconds, and from a quick study run."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pytest

from alignnb.run.book import build_book, check_book, widget_text

README = """# fakestudy: a tiny study

Intro text that is not on the front page.

## Results (profile `offline`, the default)

The agents align with the models at RESULTS-TEXT-0.42.

![the x figure](figures/x.png)

See [the architecture](docs/architecture.md), [the first notebook](notebooks/01_first.ipynb),
[a folder](benchmarks/) and [a paper](https://arxiv.org/abs/2601.22948).

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
    (root / "repo" / "docs").mkdir()
    (root / "repo" / "docs" / "architecture.md").write_text("# Architecture\n", encoding="utf-8")
    (root / "repo" / "benchmarks").mkdir()
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
    assert "01_first.html" in index and "02_second.html" in index  # the contents
    assert re.search(r'href="01_first.html"[^>]*>(<span[^>]*>)?the first notebook', index)  # link to its page
    assert 'href="benchmarks/' not in index and "a folder" in index  # a folder: its text only
    assert "https://arxiv.org/abs/2601.22948" in index
    downloads = list((fake_book / "_downloads").rglob("architecture.md"))
    assert len(downloads) == 1 and re.search(r'href="_downloads/[^"]*architecture.md"', index)
    assert (fake_book / "_images" / "x.png").is_file()


def test_every_notebook_has_a_page_with_its_outputs(fake_book):
    first = (fake_book / "01_first.html").read_text(encoding="utf-8")
    second = (fake_book / "02_second.html").read_text(encoding="utf-8")
    assert "STREAM-ONE" in first and "STREAM-TWO" in second
    assert "<img" in first and "01 · First" in first
    assert "cdn.jsdelivr" not in first


def test_check_book_passes_and_fails(fake_book, tmp_path):
    assert check_book(fake_book) == []
    site = Path(shutil.copytree(fake_book, tmp_path / "site"))
    (site / "_images" / "x.png").unlink()
    page = site / "02_second.html"
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", '<a href="gone.html#top">x</a></body>'),
                    encoding="utf-8")
    (site / "01_first.html").unlink()
    problems = "\n".join(check_book(site))
    assert "x.png" in problems and "gone.html#top" in problems and "01_first.ipynb" in problems


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


@pytest.mark.slow
def test_book_of_a_quick_run(quick_run, tmp_path):
    site = build_book(quick_run, tmp_path / "book", repo_figures=quick_run / "figures", progress=False)
    for notebook in sorted(Path(quick_run).glob("[0-9][0-9]_*.ipynb")):
        assert (site / f"{notebook.stem}.html").is_file(), notebook.name
    assert check_book(site) == []
    assert "Results (profile" in (site / "index.html").read_text(encoding="utf-8")
