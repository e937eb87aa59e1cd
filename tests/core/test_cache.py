"""alignnb.core.cache.cached: the one cache step (key, lock, load, recovery from damage, atomic write)."""

from __future__ import annotations

import json
import os

import pytest

from alignnb.core import cache


def _step(tmp_path, calls, **kw):
    def build(inputs):
        calls.append(dict(inputs))
        return {"value": inputs["x"] * 2}

    def load(path):
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise cache.CorruptCache(path, "not JSON", "delete it") from exc

    return cache.cached("demo", {"x": kw.pop("x", 21)}, build=build, load=load,
                        write=lambda made, path: cache.write_json(path, made),
                        path=lambda key: tmp_path / f"{key}.json", **kw)


def test_builds_once_then_loads(tmp_path):
    calls = []
    assert _step(tmp_path, calls) == {"value": 42}
    assert _step(tmp_path, calls) == {"value": 42}
    assert calls == [{"x": 21}]  # the builder received exactly the hashed inputs
    assert (tmp_path / f"{cache.key_of('demo', {'x': 21})}.json").exists()
    assert _step(tmp_path, calls, x=1) == {"value": 2} and len(calls) == 2  # other inputs, other key


def test_the_ledger_records_each_build_and_no_read(tmp_path):
    calls = []
    for _ in range(3):
        _step(tmp_path, calls)
    _step(tmp_path, calls, force=True)
    made = cache.builds(tmp_path)
    assert [r["path"] for r in made] == [f"{cache.key_of('demo', {'x': 21})}.json"] * 2  # built, then forced
    assert all(r["kind"] == "demo" and r["built_by"].endswith(f":{os.getpid()}") for r in made)


def test_key_is_the_hash_of_kind_and_inputs():
    assert cache.key_of("demo", {"x": 1}) == cache.cache_key({"kind": "demo", "x": 1})
    assert cache.key_of(None, {"x": 1}) == cache.cache_key({"x": 1})
    with pytest.raises(ValueError, match="kind"):
        cache.key_of("demo", {"kind": "other"})


def test_damage_is_reported_and_rebuilt(tmp_path):
    calls = []
    _step(tmp_path, calls)
    path = tmp_path / f"{cache.key_of('demo', {'x': 21})}.json"
    path.write_text("{trunc")
    with pytest.warns(RuntimeWarning, match="not JSON in the cached demo .*making it again"):
        assert _step(tmp_path, calls) == {"value": 42}
    assert len(calls) == 2 and json.loads(path.read_text()) == {"value": 42}


def test_force_rebuilds_and_discard_runs_first(tmp_path):
    calls, discarded = [], []
    _step(tmp_path, calls)
    _step(tmp_path, calls, force=True, discard=lambda path: discarded.append(path))
    assert len(calls) == 2 and len(discarded) == 1


def test_must_exist_builds_nothing(tmp_path):
    calls = []
    with pytest.raises(FileNotFoundError, match="run notebook 01"):
        _step(tmp_path, calls, must_exist="run notebook 01")
    assert calls == []
    _step(tmp_path, calls)
    (tmp_path / f"{cache.key_of('demo', {'x': 21})}.json").write_text("{trunc")
    with pytest.raises(cache.CorruptCache):
        _step(tmp_path, calls, must_exist="run notebook 01")


def test_a_failed_build_leaves_nothing(tmp_path):
    def build(inputs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.cached("demo", {"x": 1}, build=build, load=lambda p: p.read_text(),
                     write=lambda made, path: cache.write_json(path, made), path=lambda key: tmp_path / key)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_file_lock_waits_and_says_so(tmp_path, capsys):
    import fcntl
    import threading

    lock = tmp_path / ".x.lock"
    lock.touch()
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another holder (as the earlier hand-written lock took it)
        got = []
        t = threading.Thread(target=lambda: [got.append(1) for _ in [cache.file_lock(lock, "waiting for x").__enter__()]])
        t.start()
        t.join(0.5)
        assert not got
        fcntl.flock(held, fcntl.LOCK_UN)
    t.join(5)
    assert got and "waiting for x" in capsys.readouterr().out
