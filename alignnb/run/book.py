"""The rendered book: a static HTML site of an executed run, and a checker for it.

DESIGN.md lists ``make book`` (the rendered study) beside ``make study``. The book is built
with Sphinx, myst-nb and sphinx-book-theme, the pure-Python Executable Books stack, so it
builds offline (Jupyter Book 2 needs Node.js). It never executes a notebook: it renders the
outputs that ``alignnb run`` stored in ``runs/<name>/``.

The site has one page per notebook (``NN_*.ipynb``, in numeric order) and a front page made
from the README: its title line and its section ``## Results ...`` up to the next ``## ``
heading. Nothing is written by hand. Figures that the section shows are copied in; links to
other repository files become downloads, links to a notebook of the run become links to its
page, and a link whose target does not exist becomes its plain text. Saved widgets (tqdm
bars under papermill) are shown as the static text of their final state, so no page needs
the widget JavaScript from a CDN.

:func:`check_book` reports what would be broken in a built site: a missing notebook page, a
missing image, an internal link to a missing file.
"""

from __future__ import annotations

import html
import json
import posixpath
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import nbformat

from alignnb.core import paths

#: Marks a folder made by :func:`build_book`, the only kind it will clean.
MARKER = ".alignnb-book"
#: Written into the site: the notebook pages it must have (read by :func:`check_book`).
MANIFEST = "_book.json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_RUN_HINT = "run the study first: `make study` (full run, runs/default/) or `alignnb run --quick` (runs/quick/)"


def executed_notebooks(run_dir: Path) -> list[Path]:
    """The executed notebooks ``NN_*.ipynb`` of ``run_dir`` in run order, or a FileNotFoundError."""
    run_dir = Path(run_dir)
    found = paths.study_notebooks(run_dir) if run_dir.is_dir() else []
    if not found:
        where = "does not exist" if not run_dir.exists() else "has no executed notebooks (NN_*.ipynb)"
        raise FileNotFoundError(f"{run_dir} {where}: {_RUN_HINT}")
    return found


def results_front_page(readme: Path) -> tuple[str, str]:
    """The README's title (its first ``# `` line, without the ``# ``) and its ``## Results`` section.

    The section runs from its heading to the line before the next ``## `` heading (fenced code
    is skipped when looking for it); a README without a title or that section is a ValueError.
    """
    lines = Path(readme).read_text(encoding="utf-8").splitlines()
    title, start, end, fence = None, None, None, False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        if fence:
            continue
        if title is None and line.startswith("# "):
            title = line[2:].strip()
        elif line.startswith("## "):
            if start is None and line.startswith("## Results"):
                start = i
            elif start is not None:
                end = i
                break
    if title is None or start is None:
        missing = "a title line ('# ...')" if title is None else "a section '## Results ...'"
        raise ValueError(f"{readme} has no {missing}: the book's front page is made from it")
    return title, "\n".join(lines[start:end]).strip() + "\n"


# --- links of the front page -------------------------------------------------------------

_CODE = re.compile(r"(^(?:```|~~~).*?^(?:```|~~~)[^\n]*$|`[^`\n]*`)", re.S | re.M)
_MD_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_ATTR = re.compile(r"""(<(?:img|a)\b[^>]*?\b(?:src|href)=)(["'])([^"']*)\2""", re.I)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _is_external(target: str) -> bool:
    return not target or target.startswith("#") or bool(_SCHEME.match(target))


def _plain(text: str) -> str:
    """Link text without markdown emphasis or code marks."""
    return re.sub(r"[*_`<>]", "", text).strip()


class _FrontPageLinks:
    """Rewrites the links of README text for the book's source folder, copying what they need."""

    def __init__(self, repo: Path, figures: Path, src: Path, notebooks: Sequence[str]) -> None:
        self.repo, self.figures, self.src = repo, figures, src
        self.notebooks = {Path(n).stem: n for n in notebooks}
        self.warnings: list[str] = []

    def source_of(self, target: str) -> Path:
        """The file a README link points at: ``figures/...`` from the figures folder, the rest from the repo."""
        rel = posixpath.normpath(unquote(target).lstrip("/"))
        if rel.startswith("figures/"):
            return self.figures / rel[len("figures/"):]
        return self.repo / rel

    def copy(self, target: str, into: str = "") -> str | None:
        """Copy the target file under ``src/into`` at its own relative path; return that path, or None if missing."""
        source = self.source_of(target)
        if not source.is_file():
            return None
        rel = posixpath.normpath(unquote(target).lstrip("/"))
        if rel.startswith("../"):  # outside the repository: keep only its name
            rel = posixpath.basename(rel)
        rel = posixpath.join(into, rel) if into else rel
        dest = self.src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
        return rel

    def markdown_link(self, match: re.Match) -> str:
        bang, text, target = match.group(1), match.group(2), match.group(3)
        if _is_external(target):
            return match.group(0)
        path = target.split("#", 1)[0]
        if bang:
            rel = self.copy(path)
            if rel is None:
                self.warnings.append(f"README image {target} not found in {self.source_of(path).parent}: "
                                     "shown as its text")
                return f"*[{_plain(text) or path}]*"
            return f"![{text}]({rel})"
        stem = Path(path).stem
        if path.endswith(".ipynb") and stem in self.notebooks:
            return f"[{text}]({self.notebooks[stem]})"
        rel = self.copy(path, "_files")
        if rel is None:
            self.warnings.append(f"README link {target} has no file in this book: shown as text")
            return text
        return f"[{text or posixpath.basename(rel)}](path:{rel})"  # myst's path: scheme makes a download

    def html_link(self, match: re.Match) -> str:
        target = match.group(3)
        if _is_external(target):
            return match.group(0)
        if self.copy(target.split("#", 1)[0], "_extra") is None:  # html_extra_path: served at the site's root
            self.warnings.append(f"README HTML link {target} not found: left as is")
        return match.group(0)

    def rewrite(self, markdown: str) -> str:
        """``markdown`` with every relative link and image made to work in the book (code is left alone)."""
        parts = _CODE.split(markdown)
        for i in range(0, len(parts), 2):  # even parts are outside code
            parts[i] = _HTML_ATTR.sub(self.html_link, _MD_LINK.sub(self.markdown_link, parts[i]))
        return "".join(parts)


# --- notebooks -------------------------------------------------------------------------------

def _is_executed(nb: nbformat.NotebookNode) -> bool:
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    return not code or any(c.get("outputs") or c.get("execution_count") is not None for c in code)


def widget_text(model_id: str, state: dict[str, Any]) -> str | None:
    """The static text of a saved widget: its labels and progress bars in order, a bar drawn as ten
    blocks (a tqdm bar reads ``models: 100%|██████████| 10/10 [...]``); None for any other widget."""
    model = state.get(model_id)
    if model is None:
        return None
    name, values = model.get("model_name", ""), model.get("state", {})
    if name in ("HBoxModel", "VBoxModel", "BoxModel"):
        pieces = [widget_text(str(c).removeprefix("IPY_MODEL_"), state) for c in values.get("children", [])]
        if any(p is None for p in pieces):
            return None
        return ("" if name == "HBoxModel" else "\n").join(pieces)
    if name in ("HTMLModel", "HTMLMathModel", "LabelModel"):
        return html.unescape(re.sub(r"<[^>]+>", "", str(values.get("value", "")))).replace("\u2007", " ")
    if name in ("FloatProgressModel", "IntProgressModel"):
        span = float(values.get("max", 100)) - float(values.get("min", 0))
        done = (float(values.get("value", 0)) - float(values.get("min", 0))) / span if span > 0 else 0.0
        filled = max(0, min(10, round(10 * done)))
        return "|" + "\u2588" * filled + " " * (10 - filled) + "|"
    return None


def for_the_book(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook as the book shows it: each widget output replaced by the text of its saved
    state (or its own text/plain fallback) and the widget state removed, so no page loads widget
    JavaScript; papermill's injected-parameters cell collapsed (``hide-input``)."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                text = widget_text(str(data[WIDGET_VIEW].get("model_id", "")), state)
                del data[WIDGET_VIEW]
                if text is not None:
                    data["text/plain"] = text
                elif not data:
                    data["text/plain"] = "[interactive widget: run the notebook to use it]"
    return nb


# --- the build -------------------------------------------------------------------------------

def _conf(title: str, extra: bool) -> str:
    settings = {
        "project": "alignnb",
        "html_title": title,
        "extensions": ["myst_nb"],
        "html_theme": "sphinx_book_theme",
        "html_theme_options": {"home_page_in_toc": True, "show_toc_level": 2, "use_download_button": True},
        "html_extra_path": ["_extra"] if extra else [],
        "exclude_patterns": ["_files", "_extra", "**.ipynb_checkpoints"],
        "nb_execution_mode": "off",
        "nb_render_markdown_format": "myst",  # text/markdown outputs hold tables
        "nb_ipywidgets_js": {},  # no CDN scripts: widgets are static text
        "nb_mime_priority_overrides": [("html", WIDGET_VIEW, None)],
        "myst_heading_anchors": 3,
        "language": "en",
    }
    body = "\n".join(f"{key} = {value!r}" for key, value in settings.items())
    return f'"""Sphinx configuration written by alignnb.run.book.build_book; do not edit."""\n\n{body}\n'


def _index(title: str, section: str, notebooks: Sequence[str]) -> str:
    toc = "\n".join(Path(n).stem for n in notebooks)
    return f"# {title}\n\n```{{toctree}}\n:maxdepth: 1\n:caption: Notebooks\n\n{toc}\n```\n\n{section}"


def _clean(out_dir: Path) -> None:
    """Empty ``out_dir`` for a fresh build, but only if build_book made it (it holds MARKER)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise NotADirectoryError(f"{out_dir} is a file: give build_book a folder for the book")
        if any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
            raise FileExistsError(f"{out_dir} is not empty and was not made by build_book: "
                                  "choose an empty or new folder for the book")
        for child in ("src", "html", "doctrees", "jupyter_execute"):
            shutil.rmtree(out_dir / child, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("made by alignnb.run.book.build_book; its subfolders are rebuilt on each build\n")


def _sphinx(src: Path, out_dir: Path, log: Path) -> int:
    """Build ``src`` into ``out_dir/html`` in-process; warnings go to ``log``. Returns the warning count."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    with log.open("a", encoding="utf-8") as stream, patch_docutils(src), docutils_namespace(), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # Sphinx 11 deprecations in the theme
        warnings.simplefilter("ignore", DeprecationWarning)
        app = Sphinx(src, src, out_dir / "html", out_dir / "doctrees", "html",
                     status=None, warning=stream, freshenv=True, keep_going=True)
        app.build(force_all=True)
        return int(getattr(app, "_warncount", 0))


def build_book(run_dir: Path, out_dir: Path, readme: Path | None = None, repo_figures: Path | None = None,
               progress: bool = True) -> Path:
    """Build the study's book from the executed notebooks of ``run_dir`` into ``out_dir``; return the site folder.

    ``out_dir`` receives ``src/`` (conf.py, index.md, copies of the notebooks, the front page's
    figures), ``html/`` (the site, returned), ``doctrees/`` and ``warnings.log`` (Sphinx's
    warnings, which never fail the build). ``readme`` defaults to the repository's README.md,
    ``repo_figures`` to ``figures/``: the README's ``figures/NAME`` links are taken from there.
    Notebooks are rendered as stored, never executed.
    """
    t0 = time.perf_counter()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    notebooks = []
    for path in executed_notebooks(run_dir):
        nb = nbformat.read(path, as_version=4)
        if not _is_executed(nb):
            raise ValueError(f"{path} has no outputs: it was never executed. Build the book from an executed "
                             f"run ({_RUN_HINT}), not from notebooks/")
        notebooks.append((path.name, for_the_book(nb)))
    if readme is None or repo_figures is None:
        readme = paths.REPO_ROOT / "README.md" if readme is None else readme
        repo_figures = paths.figures_dir() if repo_figures is None else repo_figures
    readme, figures = Path(readme), Path(repo_figures)
    if not readme.is_file():
        raise FileNotFoundError(f"README {readme} not found: the book's front page is made from its Results section")
    title, section = results_front_page(readme)

    _clean(out_dir)
    src = out_dir / "src"
    src.mkdir()
    for name, nb in notebooks:
        nbformat.write(nb, src / name)
    links = _FrontPageLinks(readme.parent, figures, src, [name for name, _ in notebooks])
    section = links.rewrite(section)
    (src / "index.md").write_text(_index(title, section, [name for name, _ in notebooks]), encoding="utf-8")
    (src / "conf.py").write_text(_conf(title, (src / "_extra").is_dir()), encoding="utf-8")

    log = out_dir / "warnings.log"
    log.write_text("".join(f"WARNING: {w}\n" for w in links.warnings), encoding="utf-8")
    if progress:
        print(f"book: {len(notebooks)} notebooks of {run_dir} -> {out_dir / 'html'}", flush=True)
    try:
        n_warnings = _sphinx(src, out_dir, log) + len(links.warnings)
    except Exception as err:
        raise RuntimeError(f"the book's Sphinx build failed ({type(err).__name__}: {err}); "
                           f"sources in {src}, warnings in {log}") from err
    site = out_dir / "html"
    (site / MANIFEST).write_text(json.dumps({"run": str(run_dir.resolve()),
                                             "notebooks": [name for name, _ in notebooks]}, indent=1))
    if progress:
        print(f"book: {site / 'index.html'} in {time.perf_counter() - t0:.1f} s; "
              f"{n_warnings} warning(s) in {log}", flush=True)
    return site


# --- the check --------------------------------------------------------------------------------

class _References(HTMLParser):
    """The targets a page loads or links to: (tag, attribute, value)."""

    WATCH = {"a": "href", "link": "href", "img": "src", "script": "src", "source": "src"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = self.WATCH.get(tag)
        for key, value in attrs:
            if key == attr and value is not None:
                self.found.append((tag, key, value))


def _local_target(page: Path, value: str, site: Path) -> Path | None:
    """The file an internal reference points at, or None for external, fragment-only or data URLs."""
    parts = urlsplit(value.strip())
    if parts.scheme or parts.netloc or not parts.path:
        return None
    path = unquote(parts.path)
    target = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    return target / "index.html" if path.endswith("/") else target


def check_book(site: Path, notebooks: Sequence[str] | None = None) -> list[str]:
    """Problems of a built book (empty: none): a notebook without its page, an ``<img src>``, script
    or stylesheet missing from the site, an internal link (with or without ``#fragment``) to a
    missing file. ``notebooks`` defaults to those the site was built from (its ``_book.json``)."""
    site = Path(site)
    if not (site / "index.html").is_file():
        return [f"{site} has no index.html: not a built book"]
    problems: list[str] = []
    if notebooks is None:
        manifest = site / MANIFEST
        if manifest.is_file():
            notebooks = json.loads(manifest.read_text())["notebooks"]
        else:
            problems.append(f"{manifest} missing: cannot tell which notebook pages the book must have")
            notebooks = []
    for name in notebooks:
        if not (site / f"{Path(name).stem}.html").is_file():
            problems.append(f"no page for notebook {name} ({Path(name).stem}.html)")
    resolved_site = site.resolve()
    for page in sorted(site.rglob("*.html")):
        if page.relative_to(site).parts[0] in ("_static", "_sources", "_downloads"):
            continue  # theme templates and copies, not pages
        parser = _References()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        for tag, attr, value in parser.found:
            target = _local_target(page, value, site)
            if target is None:
                continue
            where = page.relative_to(site)
            if not target.resolve().is_relative_to(resolved_site):
                problems.append(f"{where}: <{tag} {attr}={value!r}> points outside the site")
            elif not target.is_file():
                kind = "image" if tag == "img" else "link"
                problems.append(f"{where}: {kind} <{tag} {attr}={value!r}> points to a missing file")
    return problems

