"""The package's shape: its layering contracts, no import cycles, a light settings module, and
each rule written once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "alignnb"
STAGES = ["core", "collect", "agents", "extract", "measure", "show", "run"]


def test_the_import_contracts_hold():
    """import-linter's contracts of pyproject.toml: stages in notebook order, no cycles within a stage."""
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of a directed graph."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_back_even_lazily():
    """No cycle among all modules of the package, counting imports inside functions too."""
    graph = grimp.build_graph("alignnb")
    modules = {m for m in graph.modules if m.startswith("alignnb.")}
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d in modules and d != m} for m in modules}
    # a package's __init__ is a namespace here (all are empty), so an edge to it is not a dependency on its modules
    cycles = [sorted(c) for c in _strongly_connected(edges) if len(c) > 1]
    assert cycles == []


def test_the_strongly_connected_finder_finds_a_planted_cycle():
    found = _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert sorted(sorted(c) for c in found if len(c) > 1) == [["a", "b", "c"]]


def test_every_module_belongs_to_a_stage():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules outside the stage subpackages: {loose}"
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()) == sorted(STAGES)


@pytest.mark.parametrize("module", ["alignnb.run.settings", "alignnb.run.cli", "alignnb.core.streams",
                                    "alignnb.agents.recipes", "alignnb.collect.levels"])
def test_light_modules_import_neither_torch_nor_transformers(module):
    code = f"import sys, {module}; print('torch' in sys.modules, 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"], done.stdout + done.stderr


def test_a_study_config_builds_and_validates_without_torch():
    code = ("import sys; from alignnb.run.settings import StudyConfig\n"
            "cfg = StudyConfig(seed=3, k=10, models=('agent', 'tf-idf'), reference='agent', space_a='agent')\n"
            "cfg.agent_key(); cfg.demos_key; cfg.provenance(4)\n"
            "try:\n    StudyConfig(lr=2.0)\nexcept ValueError as e:\n    print('refused')\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["refused", "False"], done.stdout + done.stderr


def _grep(pattern: str) -> list[str]:
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line):
                hits.append(f"{path.relative_to(ROOT)}:{i}")
    return hits


def test_each_rule_is_written_once():
    """One notebook discovery, one success-goal table, one run-key derivation, no engine variable."""
    assert [h.split(":")[0] for h in _grep(r"glob\(.*\.ipynb")] == ["alignnb/core/paths.py"]
    assert len(_grep(r"^def run_key\(")) == 1
    assert len(_grep(r"^LEVELS: dict\[str, Level\]")) == 1
    assert _grep(r"SUCCESS_GOALS|RECURRENT_GOAL|ALIGNNB_ENGINE|ENGINE_ENV") == []
    assert _grep(r"\.get\(level, 0\.95\)") == []  # a level without a goal is an error, not 0.95


def test_the_tests_mirror_the_stages():
    """One test folder per stage (tests/<stage>/test_*.py); test modules share only tests/support.py."""
    tests = ROOT / "tests"
    for stage in STAGES:
        assert list((tests / stage).glob("test_*.py")), f"no tests for alignnb.{stage} in tests/{stage}/"
    for path in tests.rglob("test_*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) (test_\w+|conftest)\b", text, re.M), f"{path} imports a test module"
