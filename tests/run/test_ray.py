"""The Ray engine on a real local Ray instance with 2 CPUs (no mock)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from alignnb.run import cli, notebooks
from alignnb.collect import demos

from support import LEVELS

ray = pytest.importorskip("ray", reason='the Ray engine tests need Ray: pip install -e ".[ray]" (make test installs it)')

from alignnb.core.engines import InProcess  # noqa: E402
from alignnb.extract import spaces  # noqa: E402
from alignnb.run import ray_engine  # noqa: E402
from alignnb.run.engines import make_engine  # noqa: E402


@pytest.fixture(scope="module")
def local_ray(data_root):
    """A local Ray instance with 2 CPUs for this module; tasks see the session's data folder."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray_engine.connect(num_cpus=2)
    assert ray.cluster_resources()["CPU"] == 2
    yield
    ray_engine.shutdown()


def tiny_notebook(folder: Path) -> Path:
    """A one-cell study notebook that fails for seed 1 (a planted failure)."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('seed = 0  # seed\nquick = False  # quick\noutput_dir = ""  # figures')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell('assert seed != 1, "planted failure for seed 1"')]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "01_tiny.ipynb"
    nbformat.write(nb, path)
    return path


TIMINGS = {"train_seconds", "eval_seconds", "frames_per_second"}  # wall-clock, recorded in every checkpoint


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """Two checkpoints hold the same weights bit for bit and the same metrics but for timings."""
    import torch

    ca, cb = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for name, tensor in ca["state_dict"].items():
        assert torch.equal(tensor, cb["state_dict"][name]), name
    untimed = [{k: v for k, v in c["metrics"].items() if k not in TIMINGS} for c in (ca, cb)]
    assert untimed[0] == untimed[1]
    assert {k: v for k, v in ca.items() if k not in ("state_dict", "metrics")} == \
        {k: v for k, v in cb.items() if k not in ("state_dict", "metrics")}


def _collect_once(data_dir: str) -> tuple[int, str, bool]:
    """In a task: wait until both tasks are here (a file barrier), then ask for the same missing
    demonstrations; returns (pid, which process built them, whether this one waited for the lock)."""
    import contextlib
    import io
    import os
    import time

    barrier = Path(data_dir) / "barrier"
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    said = io.StringIO()
    with contextlib.redirect_stdout(said):  # io.file_lock says so when it has to wait
        d = demos.collect_demos(LEVELS[:1], 4, seed=11, workers=1, data_dir=data_dir, progress=False)
    return os.getpid(), d.meta["built_by"], "waiting" in said.getvalue()


@pytest.mark.slow
def test_two_tasks_that_need_one_missing_stage_build_it_once(local_ray, tmp_path):
    task = ray.remote(_collect_once).options(num_cpus=1)
    results = ray.get([task.remote(str(tmp_path)), task.remote(str(tmp_path))])  # both at once, 2 CPUs
    pids = {pid for pid, _, _ in results}
    builders = {built_by for _, built_by, _ in results}
    assert len(pids) == 2  # two processes needed the stage at the same moment
    assert len(builders) == 1  # one built it ...
    builder = int(builders.pop().rsplit(":", 1)[1])
    assert builder in pids
    assert [waited for pid, _, waited in results if pid != builder] == [True]  # ... the other waited, then reused it
    assert len([p for p in (tmp_path / "demos").iterdir() if not p.name.startswith(".")]) == 1  # and its lock


@pytest.mark.slow
def test_a_failing_point_names_value_notebook_and_cell_and_the_others_are_kept(local_ray, tmp_path):
    notebook = tiny_notebook(tmp_path / "nb")
    with pytest.raises(notebooks.SweepFailed) as failed:
        notebooks.run_sweep("seed", [0, 1], quick=True, output=tmp_path / "sweep", engine="ray", notebooks=[notebook],
                      progress=False)
    message = str(failed.value)
    assert "seed=1" in message and "01_tiny.ipynb failed in cell" in message
    assert "planted failure for seed 1" in message and "seed=0:" not in message
    tasks = pd.read_csv(tmp_path / "sweep" / "sweep_tasks.csv")
    assert list(tasks["seed"]) == [0, 1] and list(tasks["status"]) == ["ok", "failed"]
    assert {"cpus", "threads", "host", "seconds", "error"} <= set(tasks.columns)
    kept = next(p for p in (tmp_path / "sweep").iterdir() if p.name.startswith("seed=0"))
    assert (kept / "01_tiny.ipynb").exists()


@pytest.mark.slow
def test_a_quick_sweep_on_ray_equals_the_local_engine(local_ray, data_root, tmp_path):
    """`--sweep seed=0,1` of notebooks 01-02 (one agent per point): the Ray engine, in a fresh
    data folder, gives the same summary as the local engine, and the same weights, bit for bit
    (a checkpoint also records its wall-clock timings, so the files themselves differ)."""
    params = {"agent_seeds": 1, "recurrent_seeds": 0}
    local_base, local = notebooks.run_sweep("seed", [0, 1], params, quick=True, output=tmp_path / "local",
                                      only=["01", "02"], progress=False)
    fresh = tmp_path / "ray-data"
    ray_base, on_ray = notebooks.run_sweep("seed", [0, 1], {**params, "data_dir": str(fresh)}, quick=True,
                                     output=tmp_path / "ray", engine="ray", only=["01", "02"], progress=False)
    assert not local.empty and list(local.columns) == [0, 1, "mean", "sd"]
    pd.testing.assert_frame_equal(local, on_ray)
    assert (ray_base / "sweep_summary.csv").read_text() == (local_base / "sweep_summary.csv").read_text()
    built = sorted((fresh / "agents").iterdir())
    assert len(built) == 2  # one agent per seed, under the local engine's keys
    for run in built:
        assert_same_checkpoint(run / "agent.pt", Path(data_root) / "agents" / run.name / "agent.pt")
    tasks = pd.read_csv(ray_base / "sweep_tasks.csv")
    assert list(tasks["status"]) == ["ok", "ok"] and (tasks["cpus"] == 1).all() and (tasks["threads"] == 1).all()


def test_without_ray_the_ray_engine_says_how_to_install_it_and_local_never_imports_it(tmp_path):
    notebook = tiny_notebook(tmp_path / "nb")
    code = f"""
import sys
from alignnb.run import cli, notebooks
base, _ = notebooks.run_sweep("seed", [0], quick=True, output={str(tmp_path / "sweep")!r}, notebooks=[{str(notebook)!r}],
                        progress=False)
assert "ray" not in sys.modules, "the local engine imported ray"
sys.modules["ray"] = None  # as if Ray were not installed
assert cli.main(["run", "--engine", "ray", "--quick", "--only", "01"]) == 1
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'pip install -e ".[ray]"' in done.stderr
    assert (tmp_path / "sweep" / "sweep_summary.csv").exists()


def _run_cli(argv: list[str], tmp_path: Path, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """``alignnb`` in its own process (Ray's connection settings and state stay out of this one)."""
    import time

    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "alignnb.run.cli", *argv, "--output", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    return done, time.monotonic() - t0


@pytest.mark.slow
def test_an_unreachable_address_fails_in_seconds_naming_it(tmp_path):
    done, seconds = _run_cli(["run", "--quick", "--engine", "ray", "--address", "127.0.0.1:1", "--sweep", "seed=0,1"],
                             tmp_path, timeout=180)
    ours = [line for line in done.stderr.splitlines() if line.startswith("alignnb run:")]
    assert done.returncode == 1 and len(ours) == 1 and "'127.0.0.1:1'" in ours[0] and "ray start --head" in ours[0]
    assert "Traceback" not in done.stderr and seconds < 75, (seconds, done.stderr[-2000:])
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.ipynb"))  # nothing ran


def test_a_malformed_address_fails_at_once_naming_it(tmp_path):
    done, seconds = _run_cli(["run", "--quick", "--engine", "ray", "--address", "head-node:port"], tmp_path, timeout=120)
    assert done.returncode == 1 and "'head-node:port'" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert seconds < 30, seconds


def test_address_needs_the_ray_engine(capsys):
    assert cli.main(["run", "--quick", "--address", "auto"]) == 1
    assert "--address needs --engine ray" in capsys.readouterr().err


def test_a_large_model_asks_for_a_gpu_only_when_there_is_one():
    from alignnb.extract.models import get_spec

    big, small = get_spec("qwen2.5-7b"), get_spec("smollm2-135m")
    assert spaces.wants_gpu(big, engine_gpus=1) and not spaces.wants_gpu(big, engine_gpus=0)
    assert not spaces.wants_gpu(small, engine_gpus=4)


@pytest.mark.slow
def test_agents_as_ray_tasks_equal_the_local_engine_bit_for_bit(local_ray, small_demos, tmp_path):
    """With the Ray engine (what the kernels of `alignnb run --engine ray` build), each missing
    agent is a Ray task with num_cpus = its recipe's thread count; the checkpoints are the local engine's."""
    from dataclasses import replace


    from alignnb.agents import jobs
    from support import CHECKED_RECIPE as RECIPE
    from support import SMALL

    tc = replace(RECIPE, steps=30, check_every=0, goal_checks=0)
    todo = [jobs.TrainJob(str(small_demos.path), SMALL, tc, seed, final_eval_episodes=2) for seed in (0, 1)]
    local = jobs.train_all(todo, tmp_path / "local", engine=InProcess(), progress=False)
    engine = make_engine("ray", ray.get_runtime_context().gcs_address)
    assert isinstance(engine, ray_engine.RayEngine) and engine.remote
    on_ray = jobs.train_all(todo, tmp_path / "ray", engine=engine, progress=False)
    for a, b in zip(local, on_ray):
        assert a.path.name == b.path.name and b.meta["torch_threads"] == 1
        assert_same_checkpoint(a.path / "agent.pt", b.path / "agent.pt")


@pytest.mark.slow
def test_language_model_embeddings_as_ray_tasks_fill_the_local_engines_cache(local_ray, tmp_path):
    """Each language model is one task (on CPU here: no GPU, and a tiny model); it writes every
    set that stage 4 needs under the local engine's keys, so the local pass only reads them."""
    import numpy as np
    import torch

    from support import ENCODER_SENTENCES as SENTENCES
    from support import tiny, word_tokenizer

    torch.manual_seed(0)
    model, tok_kind, _ = tiny("bert")
    folder = tmp_path / "tiny-bert"
    model.save_pretrained(folder)
    word_tokenizer(tok_kind).save_pretrained(folder)
    ref = f"encoder:{folder}"
    engine = ray_engine.RayEngine(ray.get_runtime_context().gcs_address)
    devices = spaces.embed_as_tasks([ref], SENTENCES, None, None, ("mean", "last"), tmp_path / "ray", engine,
                                    progress=False)
    assert devices == {ref: None}  # a tiny model on a cluster without GPUs: the caller's device (CPU)
    on_ray, layers, skipped = spaces.study_embeddings([ref], SENTENCES, data_dir=tmp_path / "ray", progress=False,
                                                      must_exist=True)  # only reads: the task made them all
    local, _, _ = spaces.study_embeddings([ref], SENTENCES, data_dir=tmp_path / "local", progress=False)
    assert not skipped and {(ref, "mean"), (ref, "last")} <= set(layers)
    names = lambda d: sorted(p.name for p in (tmp_path / d / "embeddings").glob("*.npz"))  # noqa: E731
    assert names("ray") == names("local")  # the same keys
    np.testing.assert_allclose(on_ray[ref].vectors, local[ref].vectors, rtol=0, atol=1e-6)
