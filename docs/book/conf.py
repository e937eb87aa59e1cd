"""Sphinx configuration of the study's book (``make book``; :mod:`alignnb.run.book` builds it).

The book renders the committed executed notebooks of the last full run (``results/``) with
MyST-NB, never executing them; its front page includes the README's results section
(``index.md``). ``alignnb.run.book.build_book`` copies this file, ``index.md``, the README,
the figures and the notebooks into one source folder and runs ``sphinx-build -W --keep-going``:
any warning (a missing image, an unknown link or reference) fails the build.
"""

project = "alignnb"
html_title = "alignnb"
extensions = ["myst_nb"]
html_theme = "sphinx_book_theme"
html_theme_options = {"home_page_in_toc": True, "show_toc_level": 2, "use_download_button": True}
root_doc = "index"
# README.md is included by index.md, not a page of its own
exclude_patterns = ["README.md", "**.ipynb_checkpoints", "_build"]
nb_execution_mode = "off"  # the notebooks are shown as the run left them
nb_render_markdown_format = "myst"  # text/markdown outputs hold tables
nb_ipywidgets_js = {}  # no CDN scripts: widgets were replaced by their static text
myst_heading_anchors = 3
language = "en"
