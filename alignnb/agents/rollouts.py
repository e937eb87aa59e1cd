"""Playing the agent in the environment: batched evaluation and single rendered rollouts.

Evaluation plays fresh episodes whose seeds are odd (the ``test`` and ``checks`` layout streams)
while every demonstration seed is even, so the agent is never scored on a training layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from alignnb.core.progress import tqdm

from alignnb.core import streams
from alignnb.collect import demos
from alignnb.collect import levels as level_table
from alignnb.agents.transformer import Agent

_BLANK_VIEW = np.zeros((7, 7, 3), np.uint8)


class _LevelEpisodes:
    """Environments of one level stepped together; each slot plays episodes one after another."""

    def __init__(self, level: str, episodes: int, seed: int, n_envs: int, stream: str = "test", step: int = 0):
        self.level, self.episodes, self.seed, self.stream, self.check_step = level, episodes, seed, stream, step
        self.envs = [demos.make_env(level) for _ in range(min(n_envs, episodes))]
        self.slots: list[dict | None] = [None] * len(self.envs)
        self.obs: list[dict | None] = [None] * len(self.envs)
        self.next_index = 0
        for k in range(len(self.envs)):
            self.start(k)

    def start(self, k: int) -> None:
        """Reset slot ``k`` to the level's next evaluation episode."""
        s = streams.layout_seed(self.stream, self.seed, self.level, self.next_index, step=self.check_step)
        self.obs[k] = demos.reset_quietly(self.envs[k], s)
        self.slots[k] = {"level": self.level, "index": self.next_index, "seed": s,
                         "mission": self.obs[k]["mission"], "length": 0}
        self.next_index += 1

    @property
    def running(self) -> bool:
        return any(s is not None for s in self.slots)

    def observations(self) -> tuple[list[str | None], torch.Tensor, torch.Tensor]:
        """Missions (None for a finished slot), views and directions; finished slots see a blank view."""
        live = [s is not None for s in self.slots]
        missions = [o["mission"] if ok else None for o, ok in zip(self.obs, live)]
        images = torch.from_numpy(np.stack([o["image"] if ok else _BLANK_VIEW for o, ok in zip(self.obs, live)]))
        dirs = torch.tensor([o["direction"] if ok else 0 for o, ok in zip(self.obs, live)])
        return missions, images, dirs

    def step(self, actions: list[int], lengths: torch.Tensor) -> list[dict]:
        """Apply one action per slot; return the records of episodes that ended (memory reset for them)."""
        finished = []
        for k, a in enumerate(actions):
            if self.slots[k] is None:
                lengths[k] = 0
                continue
            self.obs[k], reward, term, trunc, _ = self.envs[k].step(a)
            self.slots[k]["length"] += 1
            if term or trunc:
                finished.append({**self.slots[k], "success": bool(reward > 0)})
                self.slots[k] = None
                lengths[k] = 0
                if self.next_index < self.episodes:
                    self.start(k)
        return finished


def _play_level(agent: Agent, level: str, episodes: int, seed: int, greedy: bool, n_envs: int,
                gen: torch.Generator, progress: bool, stream: str, step: int) -> list[dict]:
    """Every evaluation episode of one level, stepped in a batch with cached memory."""
    batch = _LevelEpisodes(level, episodes, seed, n_envs, stream, step)
    # minigrid sets max_steps at reset; an episode never has more frames than that
    state = agent.new_memory_state(len(batch.envs), max(e.max_steps for e in batch.envs) + 1)
    instr_cache: dict[str, torch.Tensor] = {}
    zero = torch.zeros(agent.cfg.d_model)
    records: list[dict] = []
    with tqdm(total=episodes, desc=f"eval {level.removeprefix('BabyAI-')}", disable=not progress, leave=False) as bar:
        while batch.running:
            # every slot steps each time (finished ones on a blank view, their output unused),
            # so the history buffers are updated in place without copies
            missions, images, dirs = batch.observations()
            new = sorted({m for m in missions if m is not None and m not in instr_cache})
            if new:
                instr_cache.update(zip(new, agent.encode_instructions(new)))
            instr = torch.stack([instr_cache[m] if m is not None else zero for m in missions])
            logits = agent.act(instr, images, dirs, state)
            if greedy:
                actions = logits.argmax(1)
            else:
                actions = torch.multinomial(F.softmax(logits, 1), 1, generator=gen)[:, 0]
            state["prev"] = actions.clone()  # the previous-action input of the next step
            done = batch.step(actions.tolist(), state["lengths"])
            records += done
            bar.update(len(done))
    return records


def _success_tables(records: list[dict], levels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_episode = pd.DataFrame(records)
    per_episode["level"] = pd.Categorical(per_episode["level"], categories=list(dict.fromkeys(levels)))
    per_episode = per_episode.sort_values(["level", "index"], kind="stable").reset_index(drop=True)
    per_episode["level"] = per_episode["level"].astype(str)
    g = per_episode.groupby("level", sort=False)
    table = pd.DataFrame({"success_rate": g["success"].mean(), "episodes": g.size(),
                          "mean_length": g["length"].mean()}).reset_index()
    return table, per_episode


@torch.no_grad()
def evaluate(agent: Agent, levels, episodes: int = 500, seed: int = 0, greedy: bool = True,
             n_envs: int = 64, progress: bool = False, stream: str = "test",
             step: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Play ``episodes`` fresh episodes per level with environments stepped in batches.

    Episode ``i`` of a level starts from ``streams.layout_seed(stream, seed, level, i, step=step)``:
    the final test layouts (``stream="test"``) or a success check's at training step ``step``
    (``"checks"``). Sampled actions draw from the ``sampling`` stream of that layout stream's
    base seed. Returns (per-level table: level, success_rate, episodes, mean_length;
    per-episode table).
    """
    levels = level_table.check_levels(levels)
    agent.eval()
    gen = streams.torch_generator("sampling", streams.layout_base(stream, seed, step))
    records = [r for level in levels
               for r in _play_level(agent, level, episodes, seed, greedy, n_envs, gen, progress, stream, step)]
    agent.train()
    return _success_tables(records, levels)


@torch.no_grad()
def rollout(agent: Agent, level: str, seed: int, greedy: bool = True, render: bool = True) -> dict[str, Any]:
    """One episode from ``seed`` with rendering: mission, frames, actions, success."""
    agent.eval()
    env = demos.make_env(level, render=render)
    obs = demos.reset_quietly(env, seed)
    instr = agent.encode_instructions([obs["mission"]])
    state = agent.new_memory_state(1, env.max_steps + 1)  # after reset: max_steps is set
    frames, actions = ([env.render()] if render else []), []
    done, reward = False, 0.0
    while not done:
        logits = agent.act(instr, torch.from_numpy(obs["image"][None]), torch.tensor([obs["direction"]]), state)
        a = int(logits.argmax(1)) if greedy else int(torch.multinomial(F.softmax(logits, 1), 1))
        state["prev"] = torch.tensor([a])
        obs, reward, term, trunc, _ = env.step(a)
        done = term or trunc
        actions.append(a)
        if render:
            frames.append(env.render())
    agent.train()
    return {"level": level, "seed": seed, "mission": env.mission, "frames": frames, "actions": actions,
            "success": bool(reward > 0)}
