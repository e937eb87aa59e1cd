"""Stage 1: expert demonstrations from minigrid's BabyAI bot, stored as a compact data set.

A data set is a folder ``<data>/demos/<key>/`` whose key hashes every parameter that
determines it (levels, episodes per level, seed, minigrid version, storage format)::

    images.npy      uint8  [n_frames, 7, 7, 3]  symbolic egocentric view before each action
    directions.npy  uint8  [n_frames]           agent direction (0..3)
    actions.npy     uint8  [n_frames]           the bot's action (minigrid's 7 actions)
    episode.npy     int32  [n_frames]           row of the episode table
    step.npy        int16  [n_frames]           time step within the episode
    mission.npy     int32  [n_frames]           index into missions.json
    episodes.csv    one row per attempted episode: level, index, seed, mission, length,
                    success, start (first frame, -1 for excluded failures)
    missions.json   the distinct missions, in level order then alphabetical
    meta.json       parameters, versions, counts, timings

Only bot successes contribute frames; failures (never seen on the default levels) are kept
in the episode table with ``success=False`` and counted in ``meta.json``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI environments)
import numpy as np
import pandas as pd
from minigrid.utils.baby_ai_bot import BabyAIBot
from alignnb.core.progress import tqdm

from alignnb.core import compute
from alignnb.collect import levels, observation
from alignnb.core import paths
from alignnb.core import streams
from alignnb.collect.levels import babyai_level_ids, check_levels  # noqa: F401  (re-exported)
from alignnb.core import cache

FORMAT_VERSION = 1
ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
ARRAYS = ("images", "directions", "actions", "episode", "step", "mission")


class DemoCollectionError(RuntimeError):
    """A worker failed on one episode; the message names the level and the seed."""


# --------------------------------------------------------------------------------------
# environments
# --------------------------------------------------------------------------------------


def make_env(level: str, render: bool = False) -> Any:
    """The bare (unwrapped) minigrid environment of a BabyAI level.

    Its partial view is computed by :mod:`alignnb.collect.observation` (equal to minigrid's,
    3.6x faster per call).
    """
    env = gym.make(level, render_mode="rgb_array" if render else None)
    return observation.install(env.unwrapped)


def reset_quietly(env: Any, seed: int) -> dict:
    """``env.reset(seed=seed)`` with minigrid's "Sampling rejected" chatter discarded."""
    with cache.silenced_stdout():
        obs, _ = env.reset(seed=int(seed))
    return obs


def run_bot_episode(env: Any, seed: int, record: bool = True, render: bool = False,
                    max_frames: int | None = None) -> dict[str, Any]:
    """Play one episode with ``BabyAIBot`` from ``env.reset(seed)``.

    Returns the mission, success flag, length and the actions taken; with ``record`` also the
    observations seen before each action, with ``render`` the RGB frames (the first one before
    any action; at most ``max_frames``).
    """
    obs = reset_quietly(env, seed)
    bot = BabyAIBot(env)
    mission = obs["mission"]
    images, directions, actions = [], [], []
    frames = [env.render()] if render else []
    reward, done, n = 0.0, False, 0
    while not done and (max_frames is None or len(frames) < max_frames):
        action = int(bot.replan())
        if record:
            images.append(obs["image"])
            directions.append(obs["direction"])
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        n += 1
        if render:
            frames.append(env.render())
    out: dict[str, Any] = {"mission": mission, "success": bool(reward > 0), "length": n,
                           "actions": np.asarray(actions, dtype=np.uint8)}
    if record:
        out["images"] = np.asarray(images, dtype=np.uint8)
        out["directions"] = np.asarray(directions, dtype=np.uint8)
    if render:
        out["frames"] = frames
    return out


def _collect_chunk(level: str, base_seed: int, start: int, stop: int) -> dict[str, Any]:
    """Worker: episodes ``start..stop-1`` of ``level``; arrays plus one row per episode."""
    env = make_env(level)
    rows, images, directions, actions = [], [], [], []
    for index in range(start, stop):
        seed = streams.layout_seed("demos", base_seed, level, index)
        try:
            ep = run_bot_episode(env, seed)
        except Exception as exc:  # re-raised with context
            raise DemoCollectionError(
                f"the bot failed on level {level}, episode {index}, seed {seed}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        rows.append({"level": level, "index": index, "seed": seed, "mission": ep["mission"],
                     "length": ep["length"], "success": ep["success"]})
        if ep["success"]:
            images.append(ep["images"])
            directions.append(ep["directions"])
            actions.append(ep["actions"])
    return {"level": level, "start": start, "rows": rows, "images": images,
            "directions": directions, "actions": actions}


def _chunks(levels: list[str], episodes: int, workers: int) -> list[tuple[str, int, int]]:
    size = int(np.clip(episodes // max(1, workers * 8), 10, 250))
    return [(lv, s, min(s + size, episodes)) for lv in levels for s in range(0, episodes, size)]


# --------------------------------------------------------------------------------------
# the data set
# --------------------------------------------------------------------------------------


@dataclass
class Demos:
    """A demonstration data set loaded from disk (arrays memory-mapped)."""

    path: Path
    images: np.ndarray
    directions: np.ndarray
    actions: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    mission: np.ndarray
    episodes: pd.DataFrame
    missions: list[str]
    meta: dict[str, Any]

    @property
    def levels(self) -> list[str]:
        return list(self.meta["params"]["levels"])

    @property
    def key(self) -> str:
        """The data set's cache key (its folder name): what later stages' keys derive from."""
        return self.path.name

    def __len__(self) -> int:
        return len(self.actions)

    def __repr__(self) -> str:
        ok = int(self.episodes["success"].sum())
        return (f"Demos({len(self.levels)} levels, {ok} successful episodes, {len(self)} frames, "
                f"{len(self.missions)} missions, path={self.path})")


def demos_inputs(levels: list[str], episodes_per_level: int, seed: int) -> dict[str, Any]:
    """Everything that determines a data set's contents: what :func:`collect_demos` builds from and hashes."""
    return {
        "format": FORMAT_VERSION, "levels": list(levels),
        "episodes_per_level": int(episodes_per_level), "seed": streams.check_seed(seed),
        # the libraries whose code draws the layouts and plays the bot
        "minigrid": paths.package_version("minigrid"), "gymnasium": paths.package_version("gymnasium"),
        "numpy": paths.package_version("numpy"),
    }


def demos_key(levels: list[str], episodes_per_level: int, seed: int) -> str:
    """Cache key of a data set: a hash of everything that determines its contents."""
    return cache.key_of("demos", demos_inputs(levels, episodes_per_level, seed))


def demos_path(levels: list[str], episodes_per_level: int, seed: int,
               data_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the data set with these parameters (it may not exist yet)."""
    return paths.data_dir(data_dir) / "demos" / demos_key(levels, episodes_per_level, seed)


def collect_demos(
    levels: list[str] | tuple[str, ...] = levels.DEFAULT_LEVELS,
    episodes_per_level: int = 50_000,
    seed: int = 0,
    workers: int | None = None,
    data_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
) -> Demos:
    """Collect (or load from the cache) bot demonstrations on ``levels``.

    Episode ``i`` of level ``L`` is played from the layout stream ``streams.layout_seed("demos",
    seed, L, i)``, so the data set is identical whatever the number of ``workers`` (default: all
    cores). Cached by :func:`alignnb.core.cache.cached` under :func:`demos_key`.
    """
    levels = check_levels(levels)
    if int(episodes_per_level) <= 0:
        raise ValueError(f"episodes_per_level must be a positive integer, got {episodes_per_level}")
    workers = compute.cpu_budget() if workers is None else int(workers)
    if workers <= 0:
        raise ValueError(f"workers must be a positive integer (or None for all cores), got {workers}")
    root = paths.data_dir(data_dir) / "demos"
    return cache.cached("demos", demos_inputs(levels, episodes_per_level, seed),
                        build=lambda inputs: _collect(inputs, workers, progress),
                        load=load_demos, write=lambda made, path: _write_demos(path, made),
                        path=lambda key: root / key, force=force, what="cached demonstrations")


def _collect(inputs: Mapping[str, Any], workers: int, progress: bool) -> dict[str, Any]:
    """Play every episode of the data set ``inputs`` describes; the chunks in order, and the timing."""
    levels, episodes_per_level, seed = list(inputs["levels"]), int(inputs["episodes_per_level"]), inputs["seed"]
    t0 = time.perf_counter()
    jobs = _chunks(levels, episodes_per_level, workers)
    bars = {lv: tqdm(total=episodes_per_level, desc=lv.removeprefix("BabyAI-"), unit="ep",
                     position=i, leave=True, disable=not progress) for i, lv in enumerate(levels)}
    results: dict[tuple[str, int], dict] = {}
    try:
        if workers == 1:
            for job in jobs:
                res = _collect_chunk(job[0], seed, job[1], job[2])
                results[(job[0], job[1])] = res
                bars[job[0]].update(job[2] - job[1])
        else:
            # fork: workers need no re-import of the caller's script (which has no __main__
            # guard in a notebook or a quick script); an executor raises if a worker dies
            # instead of waiting for ever, as multiprocessing.Pool would.
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
                futures = {pool.submit(_collect_chunk, lv, seed, a, b): (lv, a, b) for lv, a, b in jobs}
                try:
                    for fut in as_completed(futures):
                        lv, a, b = futures[fut]
                        results[(lv, a)] = fut.result()
                        bars[lv].update(b - a)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        for bar in bars.values():
            bar.close()
    return {"chunks": [results[(lv, s)] for lv, s, _ in jobs], "levels": levels,
            "episodes_per_level": episodes_per_level, "seed": seed, "workers": workers,
            "seconds": time.perf_counter() - t0}


def _mission_order(rows: list[dict], levels: list[str]) -> list[str]:
    missions: list[str] = []
    seen: set[str] = set()
    for level in levels:
        for m in sorted({r["mission"] for r in rows if r["level"] == level}):
            if m not in seen:
                seen.add(m)
                missions.append(m)
    return missions


def _write_demos(path: Path, made: dict[str, Any]) -> None:
    chunks, levels, episodes_per_level = made["chunks"], made["levels"], made["episodes_per_level"]
    seed, workers, seconds = made["seed"], made["workers"], made["seconds"]
    rows = [r for c in chunks for r in c["rows"]]
    missions = _mission_order(rows, levels)
    mission_index = {m: i for i, m in enumerate(missions)}
    table = pd.DataFrame(rows)
    success = table["success"].to_numpy(bool)
    lengths = table["length"].to_numpy(np.int64)
    ok_rows = np.flatnonzero(success)
    ok_lengths = lengths[ok_rows]
    starts = np.full(len(table), -1, dtype=np.int64)
    starts[ok_rows] = np.concatenate([[0], np.cumsum(ok_lengths)[:-1]]) if len(ok_rows) else []
    table["start"] = starts
    offset = int(ok_lengths.sum())
    ok_missions = np.array([mission_index[m] for m in table["mission"].to_numpy()[ok_rows]], dtype=np.int32)
    frames = {
        "images": [img for c in chunks for img in c["images"]],
        "directions": [d for c in chunks for d in c["directions"]],
        "actions": [a for c in chunks for a in c["actions"]],
        "episode": [np.repeat(ok_rows.astype(np.int32), ok_lengths)],
        "step": [np.concatenate([np.arange(n, dtype=np.int16) for n in ok_lengths])] if len(ok_rows) else [],
        "mission": [np.repeat(ok_missions, ok_lengths)],
    }
    empty = {"images": np.zeros((0, 7, 7, 3), np.uint8), "directions": np.zeros(0, np.uint8),
             "actions": np.zeros(0, np.uint8), "episode": np.zeros(0, np.int32),
             "step": np.zeros(0, np.int16), "mission": np.zeros(0, np.int32)}
    arrays = {k: (np.concatenate(v) if v else empty[k]) for k, v in frames.items()}
    n_fail = int((~table["success"]).sum())
    meta = {
        "format": FORMAT_VERSION,
        "params": {"levels": levels, "episodes_per_level": episodes_per_level, "seed": seed},
        "versions": paths.versions(),
        "workers": workers,
        "seconds": round(seconds, 3),
        "built_by": f"{socket.gethostname()}:{os.getpid()}",  # which process collected it (one per data set)
        "n_episodes": len(table),
        "n_failed_episodes_excluded": n_fail,
        "n_frames": int(offset),
        "n_missions": len(missions),
    }
    with cache.atomic_dir(path, overwrite=True) as tmp:  # under the step's lock: what is there is damaged
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        table.to_csv(tmp / "episodes.csv", index=False)
        cache.write_json(tmp / "missions.json", missions)
        cache.write_json(tmp / "meta.json", meta)


def load_demos(path: str | os.PathLike, mmap: bool = True) -> Demos:
    """Load a data set written by :func:`collect_demos` (arrays memory-mapped by default)."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise FileNotFoundError(
            f"no demonstration data set at {path}. Make one with alignnb.collect.demos.collect_demos(...) "
            "or by running notebooks/01_collect_demos.ipynb (or `alignnb collect`).")
    fix = (f"Delete the folder (rm -r {path}) and rerun notebooks/01_collect_demos.ipynb or `alignnb collect`, "
           "or call collect_demos(..., force=True)")
    meta = cache.read_json(path / "meta.json", fix)
    mode = "r" if mmap else None
    arrays = {}
    for name in ARRAYS:
        try:
            arrays[name] = np.load(path / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise cache.CorruptCache(path / f"{name}.npy", f"{type(exc).__name__}: {exc}", fix) from exc
        if len(arrays[name]) != meta.get("n_frames", len(arrays[name])):
            raise cache.CorruptCache(path / f"{name}.npy", f"{len(arrays[name])} frames where meta.json says "
                                  f"{meta['n_frames']}", fix)
    try:
        episodes = pd.read_csv(path / "episodes.csv")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise cache.CorruptCache(path / "episodes.csv", f"{type(exc).__name__}: {exc}", fix) from exc
    if len(episodes) != meta.get("n_episodes", len(episodes)):
        raise cache.CorruptCache(path / "episodes.csv", f"{len(episodes)} episodes where meta.json says "
                              f"{meta['n_episodes']}", fix)
    return Demos(path=path, episodes=episodes, missions=cache.read_json(path / "missions.json", fix), meta=meta,
                 **arrays)


def episode_frames(demos: Demos, row: int) -> dict[str, np.ndarray]:
    """The stored frames of one episode (a row of ``demos.episodes``)."""
    start = int(demos.episodes.loc[row, "start"])
    if start < 0:
        raise ValueError(f"episode row {row} was a bot failure and has no stored frames")
    stop = start + int(demos.episodes.loc[row, "length"])
    return {k: np.asarray(getattr(demos, k)[start:stop]) for k in ("images", "directions", "actions")}


def render_episode(level: str, seed: int, max_frames: int | None = None) -> tuple[str, list[np.ndarray], list[int]]:
    """Replay the bot from ``seed`` with rendering; return (mission, RGB frames, actions).

    The bot is deterministic, so the replay shows exactly the stored episode.
    """
    ep = run_bot_episode(make_env(level, render=True), seed, record=False, render=True, max_frames=max_frames)
    return ep["mission"], ep["frames"], ep["actions"].tolist()


def summarize(demos: Demos) -> pd.DataFrame:
    """Per-level table: episodes, bot success rate, frames, mean/max length, distinct missions."""
    ep = demos.episodes
    g = ep.groupby("level", sort=False)
    out = pd.DataFrame({
        "episodes": g.size(),
        "bot_success": g["success"].mean(),
        "frames": g.apply(lambda d: int(d.loc[d["success"], "length"].sum()), include_groups=False),
        "mean_length": g["length"].mean(),
        "max_length": g["length"].max(),
        "missions": g["mission"].nunique(),
    })
    return out.loc[[lv for lv in demos.levels if lv in out.index]]


def action_counts(demos: Demos) -> pd.DataFrame:
    """Frames per (level, action name)."""
    level_of_frame = demos.episodes["level"].to_numpy()[np.asarray(demos.episode)]
    df = pd.DataFrame({"level": level_of_frame, "action": np.asarray(demos.actions)})
    table = pd.crosstab(df["level"], df["action"]).reindex(columns=range(len(ACTION_NAMES)), fill_value=0)
    table.columns = list(ACTION_NAMES)
    return table.loc[[lv for lv in demos.levels if lv in table.index]]
