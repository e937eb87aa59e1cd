"""Crash soak: the quick study killed with SIGKILL at seeded random moments, restarted after each kill.

    .venv/bin/python benchmarks/soak.py [--kills 10] [--seed 0] [--work runs/soak]
    .venv/bin/python benchmarks/soak.py --concurrent      # two quick studies at once on one data folder

Kill mode. First one uninterrupted quick study (``alignnb run --quick``) from an empty data
folder: the reference, and each notebook's duration. Then cycles of five kills, each cycle from
its own empty data folder: the same study is started again and again, and each start is killed
with SIGKILL (the runner and every process below it: the kernels, which jupyter_client starts
in sessions of their own, and the collection and training workers) at a seeded random moment
inside the next notebook, collection, training, embedding, analysis, the explorer's figure in
turn. After a cycle's last kill its study runs to the end. Then, for each cycle:

- every table and figure of the last run is byte-identical to the reference's;
- every agent checkpoint holds bit-identical weights;
- no temporary file is left in the data folder or the run folder, and no lock is held;
- the build ledger (``alignnb.core.cache.builds``) says how often each cached result was made.

Concurrent mode: two quick studies started together on one empty data folder must both finish,
with identical tables and figures, each cached result built once.

Prints a table per mode; exits 1 if a check fails. Takes about 3 quick studies' time (kill mode).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
STAGES = ("01", "02", "03", "04", "05")
STARTED = re.compile(r"^\[alignnb\] (\d\d)_\S+\.ipynb -> ")


def start(data: Path, output: Path, log: Path) -> subprocess.Popen:
    """``alignnb run --quick`` in its own session, writing to its own ``log``."""
    env = dict(os.environ, ALIGNNB_DATA=str(data), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "alignnb.run.cli", "run", "--quick", "--output", str(output)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=REPO,
                            start_new_session=True)


def kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process below it (kernels run in sessions of their own, so one
    killpg does not reach them), then wait until all of them are gone."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(family, timeout=30)


def last_stage(log: Path) -> str | None:
    """The notebook a run's ``log`` says was started last."""
    found = [m.group(1) for line in log.read_text(errors="replace").splitlines() if (m := STARTED.match(line))]
    return found[-1] if found else None


def watch(proc: subprocess.Popen, log: Path, until_stage: str | None = None, poll: float = 0.05
          ) -> tuple[dict[str, float], str | None]:
    """Follow ``log`` while ``proc`` runs: {stage: monotonic time it started}; stops when
    ``until_stage`` starts (returns it) or the process ends (returns None)."""
    seen: dict[str, float] = {}
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            m = STARTED.match(line)
            if m and m.group(1) not in seen:
                seen[m.group(1)] = time.monotonic()
        if until_stage is not None and until_stage in seen:
            return seen, until_stage
        if proc.poll() is not None:
            return seen, None
        time.sleep(poll)


def reference(work: Path) -> tuple[Path, Path, dict[str, float]]:
    """One uninterrupted quick study: (data folder, run folder, each notebook's duration in s)."""
    data, run, log = work / "ref-data", work / "ref-run", work / "ref.log"
    proc = start(data, run, log)
    t0 = time.monotonic()
    seen, _ = watch(proc, log)
    end = time.monotonic()
    if proc.returncode != 0:
        sys.exit(f"the reference quick study failed (exit {proc.returncode}); see {log}")
    order = sorted(seen, key=seen.get)
    bounds = [seen[s] for s in order] + [end]
    durations = {s: bounds[i + 1] - bounds[i] for i, s in enumerate(order)}
    print(f"reference quick study: {end - t0:.0f} s  " + "  ".join(f"{s}: {d:.0f} s" for s, d in durations.items()))
    return data, run, durations


def outputs(run: Path) -> dict[str, bytes]:
    """The tables and figures of a run folder, by name."""
    return {p.name: p.read_bytes() for p in sorted((run / "figures").glob("*")) if p.is_file()}


def weights(data: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every agent checkpoint under ``data`` (relative path -> its tensors as arrays)."""
    import torch

    out = {}
    for path in sorted(data.rglob("*.pt")):
        state = torch.load(path, map_location="cpu", weights_only=False)
        tensors = state.get("state_dict", state) if isinstance(state, dict) else {}
        out[str(path.relative_to(data))] = {k: v.numpy() for k, v in tensors.items() if hasattr(v, "numpy")}
    return out


def leftovers(*folders: Path) -> list[str]:
    """Temporary files of the atomic writers, and locks that someone still holds."""
    import filelock

    from alignnb.core import cache

    found = []
    for folder in folders:
        found += [str(p) for p in folder.rglob(f"*{cache.TEMP_SUFFIX}")]
        for lock in folder.rglob("*.lock"):
            try:
                with filelock.FileLock(str(lock), timeout=0):
                    pass
            except filelock.Timeout:
                found.append(f"{lock} (held)")
    return found


def compare(ref_run: Path, ref_data: Path, run: Path, data: Path) -> dict[str, object]:
    """The soak's checks: identical outputs and weights, nothing left behind, builds per result."""
    from alignnb.core import cache

    a, b = outputs(ref_run), outputs(run)
    differ = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n) and not n.endswith(".params.json"))
    wa, wb = weights(ref_data), weights(data)
    bad_weights = sorted(k for k in set(wa) | set(wb)
                         if k not in wa or k not in wb or wa[k].keys() != wb[k].keys()
                         or any(not np.array_equal(wa[k][t], wb[k][t]) for t in wa[k]))
    made = collections.Counter((r["folder"], r["path"]) for r in cache.builds(data))
    return {"outputs": len(a), "outputs_differ": differ, "checkpoints": len(wa), "weights_differ": bad_weights,
            "leftovers": leftovers(data, run), "results_built": len(made),
            "built_more_than_once": sum(1 for n in made.values() if n > 1)}


def kill_soak(work: Path, kills: int, seed: int) -> bool:
    ref_data, ref_run, durations = reference(work)
    rng = np.random.default_rng(seed)
    rows, cycles, ok = [], [], True
    for cycle in range(-(-kills // len(STAGES))):
        data, run = work / f"soak-{cycle}-data", work / f"soak-{cycle}-run"
        for i, stage in enumerate(STAGES[: min(len(STAGES), kills - cycle * len(STAGES))]):
            delay = float(rng.uniform(0.05, 0.95)) * durations.get(stage, 5.0)
            log = work / f"soak-{cycle}-{i}.log"
            proc = start(data, run, log)
            _, hit = watch(proc, log, until_stage=stage)
            if hit is not None:
                time.sleep(delay)
            alive = proc.poll() is None
            if alive:
                kill_all(proc)
            rows.append({"cycle": cycle, "kill": sum(r["kill"] != "-" for r in rows) + 1, "aimed_at": stage, "after_s": round(delay, 1),
                         "hit": last_stage(log) if alive else "-",
                         "outcome": "killed" if alive else f"ended first (exit {proc.returncode})"})
        log = work / f"soak-{cycle}-final.log"
        proc = start(data, run, log)
        watch(proc, log)
        rows.append({"cycle": cycle, "kill": "-", "aimed_at": "-", "after_s": None, "hit": "-",
                     "outcome": f"final run, exit {proc.returncode}"})
        checks = compare(ref_run, ref_data, run, data)
        cycles.append({"cycle": cycle, **{k: (v if not isinstance(v, list) else (v or "none")) for k, v in checks.items()}})
        ok &= (proc.returncode == 0 and not checks["outputs_differ"] and not checks["weights_differ"]
               and not checks["leftovers"])
    print(pd.DataFrame(rows).to_string(index=False))
    print(pd.DataFrame(cycles).to_string(index=False))
    killed = sum(r["outcome"] == "killed" for r in rows)
    ok &= killed >= min(kills, 10)
    print(f"kills: {killed} of {kills} aimed; {'PASS' if ok else 'FAIL'}")
    return ok


def concurrent(work: Path) -> bool:
    data = work / "shared-data"
    runs = [work / f"run-{i}" for i in (1, 2)]
    t0 = time.monotonic()
    procs = [start(data, run, work / f"run-{i}.log") for i, run in enumerate(runs, 1)]
    codes = [p.wait() for p in procs]
    a, b = outputs(runs[0]), outputs(runs[1])
    differ = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n) and not n.endswith(".params.json"))
    from alignnb.core import cache

    made = collections.Counter((r["folder"], r["path"]) for r in cache.builds(data))
    twice = [k for k, n in made.items() if n > 1]
    print(f"two quick studies on one data folder: exit codes {codes}, {time.monotonic() - t0:.0f} s; "
          f"{len(a)} outputs, differing: {differ or 'none'}; {len(made)} results built, "
          f"more than once: {twice or 'none'}; left behind: {leftovers(data, *runs) or 'nothing'}")
    ok = codes == [0, 0] and not differ and not twice and not leftovers(data, *runs)
    print("PASS" if ok else "FAIL")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(REPO / "runs" / "soak"))
    parser.add_argument("--concurrent", action="store_true", help="two quick studies at once instead")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ok = concurrent(work) if args.concurrent else kill_soak(work, args.kills, args.seed)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
