"""Bad inputs, table-driven: each gives a clear error (or is repaired, saying so), never a silent wrong answer.

Four tables: the command line, the metrics, model references, and damaged cache files. Then
the safety properties: run folders visible whole, cut-short runs kept unfinished, concurrent
identical work, file permissions, stray temporary files, and cache keys that see content.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from alignnb.measure import analysis
from alignnb.core import paths
from alignnb.run import cli, notebooks
from alignnb.collect import demos
from alignnb.extract import encoders
from alignnb.core import cache
from alignnb.measure import metrics
from alignnb.measure import nulls
from alignnb.extract import models
from alignnb.agents import checkpoints
from alignnb.agents import evaluation, train
from alignnb.extract.embeddings import Embeddings
from alignnb.extract.models import ModelSpec, ModelUnavailable
from support import LEVELS, SMALL

# --------------------------------------------------------------------------------------
# the command line: exit code 1 or 2 and a message naming the problem, before any notebook runs
# --------------------------------------------------------------------------------------

CLI_CASES = [
    (["run", "-p", "k", "0"], "k"),
    (["run", "-p", "profile", "gpt"], "profile"),
    (["run", "-p", "models", "minilm-l6"], "models"),
    (["run", "-p", "seed", "1.5"], "seed"),
    (["run", "-p", "agent_seeds", "no"], "agent_seeds"),
    (["run", "-p", "quick", "True"], "--quick"),
    (["run", "-p", "output_dir", "x"], "--output"),
    (["run", "-p", "no_such_parameter", "1"], "unknown parameter"),
    (["run", "--only", "99"], "--only"),
    (["run", "--sweep", "seed=0,,1"], "empty value"),
    (["run", "--sweep", "seed"], "NAME=V1,V2"),
    (["run", "--sweep", "seed=../../x"], "seed"),
    (["run", "-p", "levels", "['BabyAI-GoToLocl-v0']"], "GoToLocal"),
    (["collect", "--levels", "BabyAI-Nope-v0"], "Nope"),
    (["collect", "--episodes", "0"], "episodes"),
    (["collect", "--workers", "-1"], "workers"),
    (["run", "--bogus"], "unrecognized"),
    # known before collection: the default levels say at most 560 distinct missions
    (["run", "-p", "k", "100000"], "k=100000"),
    (["run", "--engine", "ray", "--task-cpus", "0"], "at least 1"),
    (["run", "--engine", "ray", "--task-cpus", "-2"], "at least 1"),
    (["explore", "--port", "99999"], "1 to 65535"),
    (["explore", "--port", "0"], "1 to 65535"),
    (["explore", "--port", "http"], "not an integer"),
]


@pytest.mark.parametrize("argv, says", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_bad_input_is_one_clear_line(argv, says, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "runs_dir", lambda: tmp_path / "runs")
    ran = []
    monkeypatch.setattr(notebooks.papermill, "execute_notebook", lambda *a, **k: ran.append(a))
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code in (1, 2) and says in err, err
    assert "Traceback" not in err and not ran
    assert not (tmp_path.parent / "x").exists()  # a sweep value never becomes a path outside --output


def test_k_beyond_what_the_levels_can_say_fails_before_collection(tmp_path):
    from alignnb.run.settings import StudyConfig

    empty = tmp_path / "no-cache"  # nothing collected: the bound of the levels' mission counts applies
    with pytest.raises(ValueError, match="at most 560 distinct missions"):
        StudyConfig.from_dict({"k": 559}).check_sentence_count(empty)
    assert StudyConfig.from_dict({"k": 558}).check_sentence_count(empty) is None  # the largest k that may fit


def test_the_mission_counts_are_those_a_full_collection_found():
    """levels.LEVELS' mission counts (the bound above) against the committed full run's inventory."""
    import pandas as pd

    from alignnb.collect import levels

    inventory = pd.read_csv(paths.REPO_ROOT / "figures" / "instruction_inventory.csv").set_index("level")["missions"]
    assert inventory.drop("all levels").to_dict() == {lv: levels.LEVELS[lv].missions for lv in levels.DEFAULT_LEVELS}
    assert inventory["all levels"] == levels.most_missions(levels.DEFAULT_LEVELS) == 560  # (verbs differ: no overlap)
    assert levels.most_missions(["BabyAI-GoToObj-v0"]) is None  # not counted: only a collection tells


def test_explore_on_a_port_in_use_names_the_port_before_looking_for_the_study(capsys, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(["explore", "--port", str(port), "--data-dir", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 1 and f"port {port}" in err and "in use" in err and "Traceback" not in err, err


def test_collect_cannot_write_reports_the_folder(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = cli.main(["collect", "--episodes", "2", "--levels", LEVELS[0], "--data-dir", str(blocker / "data")])
    err = capsys.readouterr().err
    assert code == 1 and str(blocker) in err and "Traceback" not in err


# --------------------------------------------------------------------------------------
# the metrics
# --------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
A = RNG.normal(size=(40, 8)).astype(np.float32)
B = A + 0.3 * RNG.normal(size=A.shape).astype(np.float32)

METRIC_CASES = [
    ("k = 0", lambda: metrics.precision_at_k(A, B, 0), "k"),
    ("k = n", lambda: metrics.precision_at_k(A, B, 40), "smaller than the number of sentences"),
    ("NaN row", lambda: metrics.precision_at_k(np.where(np.arange(40)[:, None] == 3, np.nan, A), B, 5), "NaN"),
    ("complex", lambda: metrics.precision_at_k(A + 1j, B, 5), "complex"),
    ("1-D", lambda: metrics.precision_at_k(A[:, 0], B, 5), "2-D"),
    ("row count", lambda: metrics.precision_at_k(A, B[:30], 5), "same sentences"),
    ("zero row", lambda: metrics.precision_at_k(np.vstack([A[:39], np.zeros((1, 8), np.float32)]), B, 5),
     "zero vector"),
    ("strings", lambda: metrics.precision_at_k(np.full((40, 8), "a"), B, 5), "numeric"),
    ("booleans", lambda: metrics.cka(A > 0, B), "numeric"),
    ("RSA of a constant space", lambda: metrics.rsa(np.ones((40, 8)), B), "RSA is undefined"),
    ("CKA of a constant space", lambda: metrics.cka(np.ones((40, 8)), B), "no variance"),
    ("procrustes dim=-1", lambda: metrics.procrustes(A, B, dim=-1), "dim"),
    ("procrustes dim too large", lambda: metrics.procrustes_disparity(A, B[:, :4], dim=6), "dim"),
    ("subsample fraction 0", lambda: nulls.subsample_interval(metrics.precision_at_k, A, B, fraction=0), "fraction"),
    ("unknown metric", lambda: metrics.get_metric("precison"), "precision"),
    ("precision_vs_k with every k >= n",
     lambda: analysis.precision_vs_k({"agent": Embeddings("agent", [f"s{i}" for i in range(40)], A),
                                      "b": Embeddings("b", [f"s{i}" for i in range(40)], B)}, ks=[50, 60]),
     "[50, 60]"),
]


@pytest.mark.parametrize("name, call, says", METRIC_CASES, ids=[c[0] for c in METRIC_CASES])
def test_metric_bad_input_is_a_value_error_that_says_why(name, call, says):
    with pytest.raises((ValueError, KeyError)) as info:
        call()
    assert says in str(info.value)


def test_extreme_but_finite_rows_give_the_right_answer():
    """Rows near the largest floats are still compared by direction (no overflow to inf or 0)."""
    base = metrics.precision_at_k(A, B, 5)
    assert metrics.precision_at_k(A * np.float32(1e20), B, 5) == pytest.approx(base, abs=2e-3)
    assert metrics.precision_at_k(A.astype(np.float64) * 1e200, B, 5) == pytest.approx(base, abs=2e-3)
    assert metrics.rsa(A * np.float32(1e20), B) == pytest.approx(metrics.rsa(A, B), abs=1e-6)
    assert metrics.cka(A * np.float32(1e20), B) == pytest.approx(metrics.cka(A, B), abs=1e-6)
    assert metrics.rsa(A.astype(np.float64) * 1e200, B) == pytest.approx(metrics.rsa(A, B), abs=1e-6)


# --------------------------------------------------------------------------------------
# model references
# --------------------------------------------------------------------------------------

SENTENCES = ["go to the red ball", "pick up a key", "open the door", "put the box next to the ball"]


def test_a_float_seed_never_shares_an_integer_seeds_cache_entry():
    with pytest.raises(ValueError, match="integer"):
        demos.demos_key(LEVELS, 10, 1.5)
    with pytest.raises(ValueError, match="integer"):
        checkpoints.run_key("abc", SMALL, RECIPE, 1.5)
    assert demos.demos_key(LEVELS, 10, np.int64(1)) == demos.demos_key(LEVELS, 10, 1)


def test_model_reference_errors(tmp_path):
    with pytest.raises(KeyError, match="minilm-l6"):
        encoders.embed("minilm-l7", SENTENCES, data_dir=tmp_path, progress=False)
    typo = ModelSpec("typo", "encoder LM", "hf", str(tmp_path / "modles" / "bert"))
    with pytest.raises(ModelUnavailable, match="no model folder .* check the spelling"):
        encoders.embed(typo, SENTENCES, data_dir=tmp_path, progress=False)
    with pytest.raises(ModelUnavailable, match="no model folder"):
        encoders.embed("encoder:./no/such/folder", SENTENCES, data_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="pooling"):
        encoders.embed("bag-of-words", SENTENCES, pooling="garbage", data_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="agent_checkpoints"):
        encoders.embed("agent", SENTENCES, data_dir=tmp_path, progress=False)
    with pytest.raises(TypeError, match="string key"):
        models.get_spec(3)


def test_a_local_folder_is_identified_by_content_tokenizer_included(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    (folder / "tokenizer.json").write_text('{"vocab": "abc"}')
    spec = ModelSpec("local", "encoder LM", "hf", str(folder))
    first = encoders.weights_identity(spec, tmp_path)
    assert first == encoders.weights_identity(spec, tmp_path)  # stable
    (folder / "model.safetensors").write_bytes(b"\x01" * 64)  # new weights, same size
    second = encoders.weights_identity(spec, tmp_path)
    assert second != first
    (folder / "tokenizer.json").write_text('{"vocab": "abd"}')  # a new tokenizer, same size
    assert encoders.weights_identity(spec, tmp_path) != second


def test_embedding_cache_keys_hold_device_dtype_and_versions():
    numerics = encoders.network_numerics(models.get_spec("minilm-l6"), "cpu")
    assert numerics["device"] == "cpu" and numerics["dtype"] == "float32"
    assert {"torch", "transformers"} <= set(numerics)
    assert encoders.network_numerics(models.get_spec("minilm-l6"), "cuda:1")["dtype"] == "float16"
    assert encoders.network_numerics(models.get_spec("bag-of-words"), None) == {}


# --------------------------------------------------------------------------------------
# damaged cache files: rebuilt with a warning, or an error naming the file and the fix
# --------------------------------------------------------------------------------------


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _garble(path: Path) -> None:
    path.write_bytes(b"\x00garbage{")


@pytest.mark.parametrize("damage", ["truncate actions.npy", "garble meta.json", "garble episodes.csv",
                                    "truncate images.npy"])
def test_damaged_demonstrations_are_reported_and_rebuilt(damage, tmp_path):
    data = demos.collect_demos(LEVELS[:1], 4, seed=3, workers=1, data_dir=tmp_path, progress=False)
    actions = np.array(data.actions)  # a copy: the memory map must not see the damage
    path = data.path
    del data
    how, name = damage.split()
    (_truncate if how == "truncate" else _garble)(path / name)
    with pytest.raises(cache.CorruptCache) as info:
        demos.load_demos(path)
    assert str(path) in str(info.value) and "rm -r" in str(info.value)
    with pytest.warns(RuntimeWarning, match="cached demonstrations.*making it again"):
        again = demos.collect_demos(LEVELS[:1], 4, seed=3, workers=1, data_dir=tmp_path, progress=False)
    assert np.array_equal(np.asarray(again.actions), actions)
    assert len(again.episodes) == 4


def test_every_layer_sets_load_and_mismatched_shapes_do_not(tmp_path):
    layers = Embeddings("m", SENTENCES, np.ones((3, 4, 2), np.float32))  # [layers, sentences, dim]
    layers.save(tmp_path / "layers.npz")
    assert Embeddings.load(tmp_path / "layers.npz").vectors.shape == (3, 4, 2)
    Embeddings("m", SENTENCES[:3], np.ones((3, 3), np.float32)).save(tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as z:  # the same file with one sentence too many
        arrays = dict(z)
    arrays["sentences"] = np.array(SENTENCES)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(cache.CorruptCache, match="for 4 sentences"):
        Embeddings.load(tmp_path / "bad.npz")


def test_damaged_embeddings_are_recomputed(tmp_path):
    first = encoders.embed("bag-of-words", SENTENCES, data_dir=tmp_path, progress=False)
    path = next((tmp_path / "embeddings").glob("*.npz"))
    _truncate(path)
    with pytest.raises(cache.CorruptCache, match="rm "):
        Embeddings.load(path)
    with pytest.raises(cache.CorruptCache):
        encoders.embed("bag-of-words", SENTENCES, data_dir=tmp_path, progress=False, must_exist=True)
    with pytest.warns(RuntimeWarning, match="making it again"):
        again = encoders.embed("bag-of-words", SENTENCES, data_dir=tmp_path, progress=False)
    assert np.array_equal(again.vectors, first.vectors)


RECIPE = replace(train.TrainConfig(), steps=12, batch_episodes=8, warmup=2, val_every=6, check_every=0,
                 goal_checks=0, checkpoint_every=6)


def _train(small_demos, root, **kw):
    return train.train_agent(small_demos, SMALL, RECIPE, seed=5, data_dir=root, final_eval_episodes=1,
                             progress=False, **kw)


@pytest.mark.parametrize("name, damage", [("agent.pt", _truncate), ("meta.json", _garble),
                                          ("history.csv", _garble), ("untrained.pt", _garble)])
def test_a_damaged_finished_run_is_reported_and_trained_again(name, damage, small_demos, tmp_path):
    run = _train(small_demos, tmp_path)
    damage(run.path / name)
    with pytest.raises(cache.CorruptCache) as info:
        checkpoints.load_run(run.path)
    assert str(run.path) in str(info.value) and "rm -r" in str(info.value)
    with pytest.warns(RuntimeWarning, match="finished run.*making it again"):
        again = _train(small_demos, tmp_path)
    for key, p in run.agent.state_dict().items():  # the same recipe and seed: the same agent
        assert torch.equal(again.agent.state_dict()[key], p)


def test_a_damaged_training_state_restarts_the_run(small_demos, tmp_path, monkeypatch):
    whole = _train(small_demos, tmp_path / "a")
    real = evaluation.play  # the final evaluation, after the last step: the run is interrupted there
    monkeypatch.setattr(evaluation, "play", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _train(small_demos, tmp_path / "b")
    state = next((tmp_path / "b" / "agents").iterdir()) / "state.pt"
    _truncate(state)
    monkeypatch.setattr(evaluation, "play", real)
    with pytest.warns(RuntimeWarning, match="starting this run again"):
        again = _train(small_demos, tmp_path / "b")
    for key, p in whole.agent.state_dict().items():
        assert torch.equal(again.agent.state_dict()[key], p)


# --------------------------------------------------------------------------------------
# safety: whole runs, cut-short runs, concurrency, permissions, stray temporary files
# --------------------------------------------------------------------------------------


def test_an_unfinished_run_folder_is_never_embedded(small_demos, tmp_path):
    run = _train(small_demos, tmp_path)
    (run.path / "meta.json").unlink()  # as if the writer died before its last file
    assert not checkpoints.is_finished(run.path)
    files = {"trained": run.path / "agent.pt", "untrained": run.path / "untrained.pt",
             "replicate": run.path / "agent.pt"}
    with pytest.raises(FileNotFoundError, match="not finished"):
        encoders.embed("agent", SENTENCES[:3], agent_checkpoints=files, data_dir=tmp_path, progress=False)
    with pytest.raises(ModelUnavailable, match="not finished"):
        encoders.embed("agent-replicate", SENTENCES[:3], agent_checkpoints=files, data_dir=tmp_path,
                       progress=False)


def test_a_run_cut_short_stays_unfinished_and_resumes(small_demos, tmp_path):
    limited = replace(RECIPE, steps=4000, max_minutes=1e-4)
    with pytest.raises(train.TrainingCutShort, match="resumes"):
        train.train_agent(small_demos, SMALL, limited, seed=5, data_dir=tmp_path, final_eval_episodes=1,
                          progress=False)
    folder = checkpoints.run_dir(checkpoints.run_key(small_demos.key, SMALL, limited, 5), tmp_path)
    assert (folder / "state.pt").exists() and not checkpoints.is_finished(folder)
    # the same key without the limit (the limit is not part of the recipe): it resumes and finishes
    unlimited = replace(limited, steps=40, max_minutes=0)
    assert checkpoints.run_key(small_demos.key, SMALL, replace(limited, max_minutes=0), 5) == folder.name
    state = torch.load(folder / "state.pt", weights_only=True)
    assert 0 < state["step"] < 4000
    # a second session goes on from there (each session gets max_minutes of its own)
    short = replace(RECIPE, steps=40, max_minutes=1e-4)
    with pytest.raises(train.TrainingCutShort):
        train.train_agent(small_demos, SMALL, short, seed=6, data_dir=tmp_path, final_eval_episodes=1, progress=False)
    first = torch.load(checkpoints.run_dir(checkpoints.run_key(small_demos.key, SMALL, short, 6), tmp_path) / "state.pt",
                       weights_only=True)["step"]
    done = train.train_agent(small_demos, SMALL, unlimited, seed=6, data_dir=tmp_path, final_eval_episodes=1,
                             progress=False)
    assert 0 < first < 40 and done.meta["metrics"]["steps"] == 40 and done.path.name == checkpoints.run_key(
        small_demos.key, SMALL, short, 6)


def test_two_identical_collections_at_once_share_one_result(tmp_path):
    results, errors = [], []

    def collect():
        try:
            results.append(demos.collect_demos(LEVELS[:1], 6, seed=11, workers=1, data_dir=tmp_path, progress=False))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=collect) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and results[0].path == results[1].path
    assert [p.name for p in (tmp_path / "demos").iterdir() if not p.name.startswith(".")] == [results[0].path.name]


def test_cache_files_are_readable_by_others_and_stray_temporaries_are_removed(tmp_path):
    old = os.umask(0o022)
    try:
        cache.write_json(tmp_path / "a.json", {"x": 1})
        with cache.atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    host = cache.host_name()
    dead = tmp_path / f".b.json.{host}-999999999.abc.tmp"  # no process has that pid
    dead.write_text("left by a killed run")
    dead_dir = tmp_path / f".c.{host}-999999999.xyz.tmp"
    dead_dir.mkdir()
    alive = tmp_path / f".d.json.{host}-{os.getpid()}.abc.tmp"  # a writer that still runs
    alive.write_text("in progress")
    elsewhere = tmp_path / ".e.json.otherhost-999999999.abc.tmp"  # another machine's: not ours to judge
    elsewhere.write_text("in progress elsewhere")
    cache.write_json(tmp_path / "b.json", {"x": 2})
    assert not dead.exists() and not dead_dir.exists() and alive.exists() and elsewhere.exists()


def test_a_damaged_run_crosses_a_process_boundary_whole():
    import pickle

    exc = cache.CorruptCache("/x/agent.pt", "truncated", "rm -r /x")
    back = pickle.loads(pickle.dumps(exc))
    assert isinstance(back, cache.CorruptCache) and str(back) == str(exc) and back.fix == "rm -r /x"


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    cache.write_json(tmp_path / "a.json", {"x": 1})
    assert synced  # the file (and its folder, where the file system allows)


def test_a_result_made_meanwhile_by_another_process_is_kept(tmp_path):
    final = tmp_path / "result"
    with cache.atomic_dir(final, exist_ok=True) as tmp:
        (tmp / "mine").write_text("mine")
        final.mkdir()  # another process finished first
        (final / "theirs").write_text("theirs")
    assert (final / "theirs").exists() and not (final / "mine").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FileExistsError):
            with cache.atomic_dir(final) as tmp:
                pass
