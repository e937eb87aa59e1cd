"""A quick sweep of two seeds on the local engine against the Ray engine, side by side in one run.

Each engine gets its own empty data folder, so neither reuses the other's caches: every point
collects its demonstrations, trains its agents, embeds and analyses (the whole quick study, or
the notebooks given with --only). The Ray engine runs on a local instance with all the cores
(2 here), one CPU per sweep point. Also measured: Ray's start-up overhead (a local instance
started, one empty task run) and whether the two summaries are identical.

    .venv/bin/python benchmarks/bench_ray.py [--only 01 02] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from alignnb.run import notebooks
from alignnb.run import ray_engine


def _nothing() -> int:
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, help="notebooks to run (default: all five)")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    print(f"quick sweep seed={args.seeds}, notebooks {args.only or 'all'}, {os.cpu_count()} cores; folders in {root}",
          flush=True)

    t0 = time.perf_counter()
    _, local = notebooks.run_sweep("seed", seeds, {"data_dir": str(root / "data-local")}, quick=True,
                             output=root / "local", only=args.only, progress=False)
    local_s = time.perf_counter() - t0
    print(f"local engine: {local_s:.0f} s", flush=True)

    import ray

    t0 = time.perf_counter()
    ray_engine.connect(num_cpus=os.cpu_count())
    ray.get(ray.remote(_nothing).remote())
    startup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, on_ray = notebooks.run_sweep("seed", seeds, {"data_dir": str(root / "data-ray")}, quick=True, output=root / "ray",
                              engine="ray", only=args.only, progress=False)
    ray_s = time.perf_counter() - t0 + startup_s
    tasks = pd.read_csv(root / "ray" / "sweep_tasks.csv")
    ray_engine.shutdown()
    same = local.equals(on_ray)

    print()
    print(f"| engine | wall-clock s (sweep of {len(seeds)} seeds) | ratio |")
    print("|---|---|---|")
    print(f"| local (one point after another) | {local_s:.0f} | 1.00 |")
    print(f"| ray (local instance, {os.cpu_count()} CPUs, 1 per point; start-up included) | {ray_s:.0f} | "
          f"{local_s / ray_s:.2f}x faster |")
    print(f"\nRay start-up (local instance + one empty task): {startup_s:.1f} s")
    print(f"per point on Ray (s): {dict(zip(tasks['seed'], tasks['seconds']))}")
    print(f"summaries identical: {same}")
    if not same:
        print(local.compare(on_ray))


if __name__ == "__main__":
    main()
