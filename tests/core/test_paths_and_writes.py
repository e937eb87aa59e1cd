"""The base of every stage: paths, versions, seeds, cache keys and atomic writes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml
from packaging.version import Version

from alignnb.core import streams
from alignnb.core import cache

ROOT = Path(__file__).resolve().parents[2]


def test_episode_seed_is_deterministic_and_splits_are_disjoint():
    a = [streams.episode_seed(0, "L", i) for i in range(2000)]
    assert a == [streams.episode_seed(0, "L", i) for i in range(2000)]
    b = [streams.episode_seed(0, "L", i, "eval") for i in range(2000)]
    assert all(s % 2 == 0 for s in a) and all(s % 2 == 1 for s in b)
    assert not set(a) & set(b)
    assert streams.episode_seed(1, "L", 0) != streams.episode_seed(0, "L", 0)
    assert streams.episode_seed(0, "M", 0) != streams.episode_seed(0, "L", 0)
    with pytest.raises(ValueError, match="split"):
        streams.episode_seed(0, "L", 0, "test")


def test_cache_key_depends_on_content_not_order():
    assert cache.cache_key({"a": 1, "b": [1, 2]}) == cache.cache_key({"b": [1, 2], "a": 1})
    assert cache.cache_key({"a": 1}) != cache.cache_key({"a": 2})
    assert cache.cache_key({"a": np.int64(3)}) == cache.cache_key({"a": 3})
    with pytest.raises(TypeError):
        cache.cache_key({"a": object()})


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with cache.atomic_dir(target) as tmp:
            (tmp / "x.txt").write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with cache.atomic_dir(target) as tmp:
        (tmp / "x.txt").write_text("whole")
    assert (target / "x.txt").read_text() == "whole"
    with pytest.raises(FileExistsError):
        with cache.atomic_dir(target) as tmp:
            pass
    with cache.atomic_dir(target, overwrite=True) as tmp:
        (tmp / "y.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["y.txt"]


def test_atomic_file_and_json_round_trip(tmp_path):
    path = tmp_path / "a" / "b.json"
    cache.write_json(path, {"x": np.float32(0.5), "y": [1, 2]})
    assert cache.read_json(path) == {"x": 0.5, "y": [1, 2]}
    with pytest.raises(ValueError):
        with cache.atomic_file(path, "w") as f:
            f.write("partial")
            raise ValueError
    assert cache.read_json(path) == {"x": 0.5, "y": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_silenced_stdout(capsys):
    with cache.silenced_stdout():
        print("Sampling rejected: unreachable object")
    assert capsys.readouterr().out == ""


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    torch_pin = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert torch_pin == "torch==2.13.0"
    assert torch_pin in pip_section
    assert any(line.startswith("-e .") for line in pip_section), "environment.yml must install the package"
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    minimum = Version(project["requires-python"].removeprefix(">="))
    assert Version(py.split("=")[1]) >= minimum  # versions compared as versions: "3.9" < "3.10"
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
