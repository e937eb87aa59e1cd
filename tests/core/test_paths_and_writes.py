"""The base of every stage: paths, versions, seeds, cache keys and atomic writes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
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


# --------------------------------------------------------------------------------------
# a full disk and failing writes: one message naming the path and the free space, nothing left behind
# --------------------------------------------------------------------------------------

def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "no space left"), (errno.EIO, "input/output error")])
@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_an_injected_write_failure_names_the_path_and_leaves_nothing(code, says, where, tmp_path, monkeypatch):
    from alignnb.core import cache

    final = tmp_path / "out" / "table.json"
    real = getattr(os, where)

    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, where, failing)
    with pytest.raises(cache.WriteFailed) as caught:
        cache.write_json(final, {"a": 1})
    message = str(caught.value)
    assert str(final) in message and says in message and "free" in message, message
    assert caught.value.errno == code and isinstance(caught.value, OSError)  # the CLI's OSError handler prints it
    assert _leftovers(final.parent) == []  # no partial final file, no temporary file
    monkeypatch.setattr(os, where, real)
    cache.write_json(final, {"a": 1})  # with the device back, the next write succeeds
    assert json.loads(final.read_text()) == {"a": 1}


def test_a_failing_write_inside_an_atomic_folder_leaves_nothing(tmp_path):
    from alignnb.core import cache

    final = tmp_path / "run"
    with pytest.raises(cache.WriteFailed, match=str(final)):
        with cache.atomic_dir(final) as tmp:
            (tmp / "part").write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert _leftovers(tmp_path) == []


def test_other_errors_pass_through_unchanged(tmp_path):
    from alignnb.core import cache

    with pytest.raises(PermissionError):
        with cache.atomic_file(tmp_path / "x", "w"):
            raise PermissionError(errno.EACCES, "denied")


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB file system (tmpfs), where the machine lets this process mount one (root)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_real_full_disk_names_the_path_and_the_free_space_and_recovers(tiny_disk):
    from alignnb.core import cache

    big = tiny_disk / "embeddings.npy"
    with pytest.raises(cache.WriteFailed) as caught:
        with cache.atomic_file(big) as f:
            f.write(b"\0" * 1_000_000)
    assert str(big) in str(caught.value) and "no space left" in str(caught.value) and "MB free" in str(caught.value)
    assert _leftovers(tiny_disk) == []
    with cache.atomic_file(tiny_disk / "small.txt", "w") as f:
        f.write("fits")
    assert (tiny_disk / "small.txt").read_text() == "fits"
