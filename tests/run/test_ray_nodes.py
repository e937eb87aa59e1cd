"""Two real Ray nodes on one machine (``ray start``: a head and a worker, one CPU each) sharing one
data folder: a sweep across them builds each cached result once, equals the local engine, and
survives the loss of the worker node in the middle of a point."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason='the Ray engine tests need Ray: pip install -e ".[ray]" (make test installs it)')
psutil = pytest.importorskip("psutil")

from alignnb.core import cache  # noqa: E402
from alignnb.run import notebooks  # noqa: E402
from alignnb.run.dashboard import free_port  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))
SEEDS = [0, 1, 2, 3]


def point_notebook(folder: Path, attempts: Path) -> Path:
    """A study notebook whose points share one cached stage (tiny demonstrations, the same for every
    seed), last a few seconds, note each attempt's seed in ``attempts``, and write a table that the
    sweep summary reads."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('seed = 0  # seed\nquick = False  # quick\noutput_dir = ""  # figures')
    params.metadata["tags"] = ["parameters"]
    body = ("import time\nfrom pathlib import Path\nimport pandas as pd\nfrom alignnb.collect import demos\n"
            f"with open({str(attempts)!r}, 'a') as f:\n    f.write(f'{{seed}}\\n')\n"
            "d = demos.collect_demos(['BabyAI-GoToLocal-v0'], 4, seed=11, workers=1, progress=False)\n"
            "time.sleep(6)  # long enough for a node to be lost in the middle of the point\n"
            "Path(output_dir).mkdir(parents=True, exist_ok=True)\n"
            "pd.DataFrame({'level': ['GoToLocal'], 'success_rate': [seed / 10 + len(d.episodes) / 100]})"
            ".to_csv(Path(output_dir) / 'agent_success.csv', index=False)\n")
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "01_point.ipynb"
    nbformat.write(nb, path)
    return path


def _cluster_processes(temp: str) -> list:
    """The processes of the cluster whose session folders are under ``temp`` (and no other Ray's)."""
    return [p for p in psutil.process_iter(["cmdline"]) if any(temp in c for c in (p.info["cmdline"] or []))]


@pytest.fixture
def two_nodes(tmp_path):
    """(address, the worker node's raylet processes, env): a head and a worker node started with
    `ray start` in a session folder of their own; at the end only their processes are killed."""
    import shutil
    import tempfile

    port, worker_port = free_port(), free_port()
    # a loopback test cluster without Ray's token authentication (which `ray start --head` turns on)
    env = dict(os.environ, ALIGNNB_DATA=str(tmp_path / "shared-data"), RAY_DISABLE_USAGE_STATS="1",
               RAY_AUTH_MODE="disabled")
    temp = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        subprocess.run([RAY, "start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false",
                        "--temp-dir", temp], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1", "--temp-dir", temp,
                        "--node-manager-port", str(worker_port)], env=env, check=True, capture_output=True, timeout=120)
        worker = [p for p in _cluster_processes(temp)
                  if "raylet" in " ".join(p.info["cmdline"]) and f"--node_manager_port={worker_port}" in p.info["cmdline"]]
        assert len(worker) == 1, [p.info["cmdline"][:3] for p in _cluster_processes(temp)]
        yield f"127.0.0.1:{port}", worker, env
    finally:
        for p in _cluster_processes(temp):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_a_sweep_across_two_nodes_survives_losing_one_and_builds_each_stage_once(two_nodes, tmp_path, monkeypatch):
    address, worker, env = two_nodes
    shared = Path(env["ALIGNNB_DATA"])
    notebook = point_notebook(tmp_path / "nb", attempts=tmp_path / "attempts.txt")
    driver = ("from alignnb.run import notebooks\n"
              f"notebooks.run_sweep('seed', {SEEDS}, quick=True, output={str(tmp_path / 'cluster')!r}, engine='ray', "
              f"address={address!r}, notebooks=[{str(notebook)!r}], progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(shared.rglob(cache.BUILDS_LEDGER)) and time.monotonic() < deadline:  # the first point is under way
            time.sleep(0.2)
        assert list(shared.rglob(cache.BUILDS_LEDGER)), "no point started within 120 s"
        time.sleep(2)  # inside both running points' sleep
        for p in worker:
            p.kill()  # the worker node is lost (its raylet; its workers follow it)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    tasks = pd.read_csv(tmp_path / "cluster" / "sweep_tasks.csv")
    assert list(tasks["seed"]) == SEEDS and (tasks["status"] == "ok").all(), tasks.to_string()
    attempts = (tmp_path / "attempts.txt").read_text().split()
    assert sorted(set(attempts)) == [str(s) for s in SEEDS] and len(attempts) == len(SEEDS) + 1, attempts  # one re-ran
    assert [r["kind"] for r in cache.builds(shared)] == ["demos"]  # the shared stage was built once, on one node
    assert not list(shared.rglob(f"*{cache.TEMP_SUFFIX}"))
    monkeypatch.setenv("ALIGNNB_DATA", str(tmp_path / "local-data"))
    local_base, _ = notebooks.run_sweep("seed", SEEDS, quick=True, output=tmp_path / "local", notebooks=[notebook],
                                        progress=False)
    assert (tmp_path / "cluster" / "sweep_summary.csv").read_text() == (local_base / "sweep_summary.csv").read_text()
