"""Demonstration collection: episodes/s and env steps/s, 1 vs 2 workers, against the bare bot loop.

Measured side by side in one run:
  bare loop   bot.replan + env.step, nothing recorded (one process)
  minigrid's view  the same loop with minigrid's own gen_obs / gen_obs_grid instead of
              alignnb.collect.observation's table (the bot takes the same steps: checked)
  collect w=1 collect_demos with 1 worker (records, stacks and writes the data set)
  collect w=2 the same with 2 worker processes
Goals: storage costs under 15% of the bare loop; 2 workers >= 1.7x one.

    .venv/bin/python benchmarks/bench_demos.py [episodes_per_level]
"""

from __future__ import annotations

import sys
import tempfile
import time

import gymnasium as gym

from alignnb.collect import levels
from alignnb.core import streams
from alignnb.collect import demos


def bare_loop(levels, episodes, seed, minigrid_view=False):
    steps = 0
    t0 = time.perf_counter()
    for level in levels:
        env = gym.make(level).unwrapped if minigrid_view else demos.make_env(level)
        for i in range(episodes):
            steps += demos.run_bot_episode(env, streams.episode_seed(seed, level, i), record=False)["length"]
    return time.perf_counter() - t0, steps


def collect(levels, episodes, seed, workers):
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        d = demos.collect_demos(levels, episodes, seed, workers, tmp, progress=False)
        return time.perf_counter() - t0, len(d)


def main(episodes: int = 500) -> None:
    level_ids = list(levels.DEFAULT_LEVELS)
    n_ep = episodes * len(level_ids)
    rows = [("bare loop (1 process)", *bare_loop(level_ids, episodes, 0))]
    rows.append(("bare loop, minigrid's view", *bare_loop(level_ids, episodes, 0, minigrid_view=True)))
    if rows[1][2] != rows[0][2]:
        raise AssertionError(f"the bot took {rows[1][2]} steps with minigrid's view, {rows[0][2]} with the table's")
    rows.append(("collect_demos, 1 worker", *collect(level_ids, episodes, 0, 1)))
    rows.append(("collect_demos, 2 workers", *collect(level_ids, episodes, 0, 2)))
    base = rows[0][1]
    print(f"{episodes} episodes x {len(level_ids)} levels ({n_ep} episodes)")
    print(f"{'':28s}{'seconds':>9s}{'episodes/s':>12s}{'steps/s':>10s}{'vs bare':>9s}")
    for name, sec, steps in rows:
        print(f"{name:28s}{sec:9.2f}{n_ep / sec:12.0f}{steps / sec:10.0f}{base / sec:9.2f}x")
    print(f"the table's view vs minigrid's in the bare loop: {rows[1][1] / base:.2f}x (same {rows[0][2]} steps)")
    overhead = rows[2][1] / base - 1
    speedup = rows[2][1] / rows[3][1]
    print(f"storage overhead of 1 worker over the bare loop: {overhead:+.1%} (goal < 15%)")
    print(f"2 workers vs 1: {speedup:.2f}x (goal >= 1.7x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
