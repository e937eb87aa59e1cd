"""Stage 2: behavioral cloning of the bot, evaluation, checkpoints.

A training run lives in ``<data>/agents/<key>/``; the key hashes the demonstration data set,
the agent's configuration and every training setting:

    agent.pt        trained weights + config + vocabulary + final metrics
    untrained.pt    the same architecture and seed, no training (a control for stage 4)
    history.csv     step, train loss, validation loss/accuracy, success rates over time
    meta.json       parameters, versions, timings, final success per level
    state.pt        optimizer + RNG state while training (removed when done): resumable

Evaluation plays fresh episodes whose seeds are odd (``config.episode_seed(..., "eval")``)
while every demonstration seed is even, so the agent is never scored on a training layout.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from . import config, demos, io
from .agent import Agent, AgentConfig, Vocabulary, count_parameters

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Behavioral-cloning settings. The defaults are the study's full run."""

    steps: int = 13_000  # optimizer steps (about 25 minutes on 2 CPU cores)
    batch_episodes: int = 96  # whole episodes per batch
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200  # linear warm-up steps, then cosine decay to 5% of lr
    grad_clip: float = 1.0
    val_fraction: float = 0.03  # episodes held out for validation loss
    val_every: int = 500  # steps between validation losses
    eval_every: int = 2000  # steps between success-rate evaluations during training
    eval_episodes: int = 100  # episodes per level at those evaluations
    checkpoint_every: int = 500  # steps between resumable checkpoints
    max_minutes: float = 0.0  # stop early after this long (0 = no limit); such a run is flagged and warned about

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainedAgent:
    """A finished run: the agent, its untrained twin, history and metrics, and where they live."""

    path: Path
    agent: Agent
    untrained: Agent
    history: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    episodes: pd.DataFrame | None = None  # the final greedy evaluation, one row per episode

    def success_table(self, mode: str = "greedy") -> pd.DataFrame:
        """Final success per level: level, success_rate, episodes, mean_length (greedy or sampled)."""
        return pd.DataFrame(self.meta["metrics"][mode])


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def find_demos(levels, episodes_per_level: int, seed: int, data_dir=None) -> demos.Demos:
    """The stage-1 data set for these parameters, or an error saying how to make it."""
    levels = demos.check_levels(levels)
    path = demos.demos_path(levels, episodes_per_level, seed, data_dir)
    if not (path / "meta.json").exists():
        raise FileNotFoundError(
            f"no demonstrations for levels={levels}, episodes_per_level={episodes_per_level}, seed={seed} "
            f"under {path.parent}. Run notebooks/01_collect_demos.ipynb with the same parameters, or "
            f"alignnb.demos.collect_demos({levels!r}, {episodes_per_level}, {seed}).")
    return demos.load_demos(path)


class EpisodeBatches:
    """Whole-episode batches from a data set, as flat frames plus their padded layout."""

    def __init__(self, data: demos.Demos, vocab: Vocabulary, max_words: int, episodes: np.ndarray):
        self.images = torch.from_numpy(np.array(data.images))  # a writable in-memory copy
        self.directions = torch.from_numpy(np.asarray(data.directions).astype(np.int64))
        self.actions = torch.from_numpy(np.asarray(data.actions).astype(np.int64))
        self.mission = np.asarray(data.mission)
        self.mission_ids = vocab.encode(data.missions, max_words)
        table = data.episodes.loc[episodes]
        self.starts = table["start"].to_numpy(np.int64)
        self.lengths = table["length"].to_numpy(np.int64)
        self.n_frames = int(self.lengths.sum())

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, which: np.ndarray) -> dict[str, Any]:
        starts, lens = self.starts[which], self.lengths[which]
        total, max_len = int(lens.sum()), int(lens.max())
        offsets = np.repeat(np.cumsum(lens) - lens, lens)
        t = np.arange(total) - offsets
        frames = np.repeat(starts, lens) + t
        slot = np.repeat(np.arange(len(which)) * max_len, lens) + t
        uniq, inverse = np.unique(self.mission[frames], return_inverse=True)
        idx = torch.from_numpy(frames)
        return {"ids": self.mission_ids[torch.from_numpy(uniq)], "mission": torch.from_numpy(inverse),
                "images": self.images[idx], "directions": self.directions[idx],
                "slot": torch.from_numpy(slot), "n_episodes": len(which), "max_len": max_len,
                "actions": self.actions[idx]}

    def iterate(self, batch_episodes: int):
        """All episodes once, in order, in batches (for validation)."""
        order = np.argsort(self.lengths, kind="stable")  # similar lengths together: less padding
        for i in range(0, len(order), batch_episodes):
            yield self.batch(order[i:i + batch_episodes])


def _forward(agent: Agent, b: dict) -> torch.Tensor:
    return agent.forward_episodes(b["ids"], b["mission"], b["images"], b["directions"], b["slot"],
                                  b["n_episodes"], b["max_len"])


@torch.no_grad()
def validate(agent: Agent, data: EpisodeBatches, batch_episodes: int = 256) -> dict[str, Any]:
    """Teacher-forced loss, accuracy and the 7x7 confusion matrix (rows: bot, columns: agent)."""
    agent.eval()
    loss_sum, n = 0.0, 0
    confusion = np.zeros((7, 7), dtype=np.int64)
    for b in data.iterate(batch_episodes):
        logits = _forward(agent, b)
        loss_sum += float(F.cross_entropy(logits, b["actions"], reduction="sum"))
        n += len(b["actions"])
        np.add.at(confusion, (b["actions"].numpy(), logits.argmax(1).numpy()), 1)
    agent.train()
    return {"loss": loss_sum / max(n, 1), "accuracy": float(np.trace(confusion) / max(n, 1)), "confusion": confusion}


# --------------------------------------------------------------------------------------
# evaluation in the environment
# --------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(agent: Agent, levels, episodes: int = 500, seed: int = 0, greedy: bool = True,
             n_envs: int = 64, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Play ``episodes`` fresh episodes per level with environments stepped in batches.

    Episode ``i`` of a level starts from ``config.episode_seed(seed, level, i, "eval")``.
    Returns (per-level table: level, success_rate, episodes, mean_length; per-episode table).
    """
    from tqdm.auto import tqdm

    agent.eval()
    gen = torch.Generator().manual_seed(seed)
    records = []
    for level in demos.check_levels(levels):
        envs = [demos.make_env(level) for _ in range(min(n_envs, episodes))]
        next_index = 0
        slots: list[dict | None] = [None] * len(envs)
        obs: list[dict | None] = [None] * len(envs)
        instr_cache: dict[str, torch.Tensor] = {}
        bar = tqdm(total=episodes, desc=f"eval {level.removeprefix('BabyAI-')}", disable=not progress, leave=False)

        def start(k: int) -> None:
            nonlocal next_index
            s = config.episode_seed(seed, level, next_index, "eval")
            obs[k] = demos.reset_quietly(envs[k], s)
            slots[k] = {"level": level, "index": next_index, "seed": s, "mission": obs[k]["mission"], "length": 0}
            lengths[k] = 0  # earlier entries are overwritten; causality hides later ones
            next_index += 1

        lengths = torch.zeros(len(envs), dtype=torch.long)
        for k in range(len(envs)):
            start(k)
        # minigrid sets max_steps at reset; an episode never has more frames than that
        state = agent.new_memory_state(len(envs), max(e.max_steps for e in envs) + 1)
        lengths = state["lengths"]
        blank = np.zeros((7, 7, 3), np.uint8)
        while any(s is not None for s in slots):
            # every slot steps each time (finished ones on a blank view, their output unused),
            # so the history buffers are updated in place without copies
            missions = [obs[k]["mission"] if slots[k] is not None else None for k in range(len(envs))]
            new = sorted({m for m in missions if m is not None and m not in instr_cache})
            if new:
                for m, e in zip(new, agent.encode_instructions(new)):
                    instr_cache[m] = e
            zero = torch.zeros(agent.cfg.d_model)
            instr = torch.stack([instr_cache[m] if m is not None else zero for m in missions])
            images = torch.from_numpy(np.stack([obs[k]["image"] if slots[k] is not None else blank
                                                for k in range(len(envs))]))
            dirs = torch.tensor([obs[k]["direction"] if slots[k] is not None else 0 for k in range(len(envs))])
            logits = agent.act(instr, images, dirs, state)
            if greedy:
                actions = logits.argmax(1)
            else:
                actions = torch.multinomial(F.softmax(logits, 1), 1, generator=gen)[:, 0]
            for k, a in enumerate(actions.tolist()):
                if slots[k] is None:
                    lengths[k] = 0
                    continue
                obs[k], reward, term, trunc, _ = envs[k].step(a)
                slots[k]["length"] += 1
                if term or trunc:
                    records.append({**slots[k], "success": bool(reward > 0)})
                    bar.update()
                    slots[k] = None
                    lengths[k] = 0
                    if next_index < episodes:
                        start(k)
        bar.close()
    per_episode = pd.DataFrame(records)
    per_episode["level"] = pd.Categorical(per_episode["level"], categories=list(dict.fromkeys(levels)))
    per_episode = per_episode.sort_values(["level", "index"], kind="stable").reset_index(drop=True)
    per_episode["level"] = per_episode["level"].astype(str)
    g = per_episode.groupby("level", sort=False)
    table = pd.DataFrame({"success_rate": g["success"].mean(), "episodes": g.size(),
                          "mean_length": g["length"].mean()}).reset_index()
    agent.train()
    return table, per_episode


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
        obs, reward, term, trunc, _ = env.step(a)
        done = term or trunc
        actions.append(a)
        if render:
            frames.append(env.render())
    agent.train()
    return {"level": level, "seed": seed, "mission": env.mission, "frames": frames, "actions": actions,
            "success": bool(reward > 0)}


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------


def save_agent(agent: Agent, path: str | os.PathLike, metrics: dict | None = None) -> None:
    """Weights + config + vocabulary + metrics in one file, written atomically."""
    with io.atomic_file(path, "wb") as f:
        torch.save({"format": FORMAT_VERSION, "state_dict": agent.state_dict(), "config": agent.cfg.to_dict(),
                    "vocab": agent.vocab.itos, "metrics": metrics or {}, "versions": config.versions()}, f)


def load_agent(path: str | os.PathLike, vocab: Vocabulary | None = None,
               agent_config: AgentConfig | None = None) -> Agent:
    """Load a checkpoint written by :func:`save_agent`.

    With ``vocab`` or ``agent_config`` given, a checkpoint that was trained with another
    vocabulary or configuration is refused with an error saying what differs.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no agent checkpoint at {path}: train one with notebooks/02_train_agent.ipynb "
                                "or alignnb.train.train_agent(...)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = AgentConfig(**ckpt["config"])
    voc = Vocabulary(ckpt["vocab"][2:])
    if vocab is not None and voc != vocab:
        missing = sorted(set(vocab.itos) - set(voc.itos))
        extra = sorted(set(voc.itos) - set(vocab.itos))
        raise ValueError(f"checkpoint {path} has another vocabulary ({len(voc)} vs {len(vocab)} words; "
                         f"missing {missing[:10]}, extra {extra[:10]}): it was trained on other instructions")
    if agent_config is not None and cfg != agent_config:
        diff = {k: (v, getattr(agent_config, k)) for k, v in cfg.to_dict().items() if getattr(agent_config, k) != v}
        raise ValueError(f"checkpoint {path} has another agent configuration (checkpoint, expected): {diff}")
    agent = Agent(voc, cfg)
    try:
        agent.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path} does not fit its own configuration: {exc}") from exc
    agent.eval()
    return agent


def run_key(data: demos.Demos, agent_config: AgentConfig, train_config: TrainConfig, seed: int) -> str:
    return io.cache_key({"kind": "agent", "format": FORMAT_VERSION, "demos": data.path.name,
                         "agent": agent_config.to_dict(),
                         "train": {k: v for k, v in train_config.to_dict().items() if k != "max_minutes"},
                         "seed": int(seed), "torch": config.package_version("torch")})


def agent_dir(levels, episodes_per_level: int, demo_seed: int, agent_config: AgentConfig | None = None,
              train_config: TrainConfig | None = None, seed: int = 0, data_dir=None) -> Path:
    """Folder of the run with these parameters (it may not exist yet)."""
    data = find_demos(levels, episodes_per_level, demo_seed, data_dir)
    key = run_key(data, agent_config or AgentConfig(), train_config or TrainConfig(), seed)
    return config.data_dir(data_dir) / "agents" / key


def load_trained(levels, episodes_per_level: int, demo_seed: int, agent_config: AgentConfig | None = None,
                 train_config: TrainConfig | None = None, seed: int = 0, data_dir=None) -> TrainedAgent:
    """A finished run for these parameters, or an error saying how to make it."""
    path = agent_dir(levels, episodes_per_level, demo_seed, agent_config, train_config, seed, data_dir)
    if not (path / "agent.pt").exists():
        raise FileNotFoundError(f"no trained agent for these parameters at {path}: run "
                                "notebooks/02_train_agent.ipynb with the same parameters (or train_agent(...))")
    episodes = pd.read_csv(path / "eval_episodes.csv") if (path / "eval_episodes.csv").exists() else None
    return TrainedAgent(path, load_agent(path / "agent.pt"), load_agent(path / "untrained.pt"),
                        pd.read_csv(path / "history.csv"), io.read_json(path / "meta.json"), episodes)


#: Seed offset of the replicate agent: the same recipe, data and configuration, initial seed + 1.
REPLICATE_OFFSET = 1


def _replicate_args(run_path: str | os.PathLike) -> dict[str, Any]:
    run_path = Path(run_path)
    meta = io.read_json(run_path / "meta.json")
    p = meta["params"]
    return dict(levels=p["levels"], episodes_per_level=p["episodes_per_level"], demo_seed=p["demo_seed"],
                agent_config=AgentConfig(**p["agent"]),
                train_config=TrainConfig(**{**p["train"], "max_minutes": 0.0}),  # the recipe is its steps
                seed=p["seed"] + REPLICATE_OFFSET, data_dir=run_path.parents[1])


def replicate_dir(run_path: str | os.PathLike) -> Path:
    """Folder of the replicate of the run at ``run_path``: the same demonstrations, agent and
    training configuration, trained from another initial seed (it may not exist yet).

    Two replicates show how far training alone moves the instruction space: their
    precision@k is the ceiling against which an agent-vs-language-model score is read.
    """
    return agent_dir(**_replicate_args(run_path))


def train_replicate(run: TrainedAgent, final_eval_episodes: int | None = None, progress: bool = True) -> TrainedAgent:
    """Train (or load from the cache) the replicate of ``run``; see :func:`replicate_dir`."""
    args = _replicate_args(run.path)
    if final_eval_episodes is None:
        final_eval_episodes = run.meta["params"].get("final_eval_episodes", 500)
    return train_agent(**args, final_eval_episodes=final_eval_episodes, progress=progress)


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def quick_config(tc: TrainConfig | None = None) -> TrainConfig:
    """A training run of seconds (tests, CI): few steps, no periodic evaluation."""
    from dataclasses import replace

    tc = tc or TrainConfig()
    return replace(tc, steps=min(tc.steps, 40), batch_episodes=min(tc.batch_episodes, 32), warmup=10,
                   val_every=20, eval_every=0, checkpoint_every=20, max_minutes=0.0)


def study_configs(d_model: int = 128, n_layers: int = 2, memory_layers: int = 2, steps: int = 13_000,
                  batch_episodes: int = 96, lr: float = 1e-3, quick: bool = False) -> tuple[AgentConfig, TrainConfig]:
    """The agent and training configurations from the notebooks' shared parameters."""
    ac = AgentConfig(d_model=d_model, n_layers=n_layers, memory_layers=memory_layers)
    tc = TrainConfig(steps=steps, batch_episodes=batch_episodes, lr=lr)
    return ac, (quick_config(tc) if quick else tc)


#: The success rates that the study's default agent should reach (issue 3), greedy, 500 episodes.
SUCCESS_GOALS = {"BabyAI-GoToLocal-v0": 0.99, "BabyAI-PickupLoc-v0": 0.97,
                 "BabyAI-OpenDoorLoc-v0": 0.97, "BabyAI-PutNextLocal-v0": 0.95}


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warm-up to ``lr`` then cosine decay to 5% of it at ``steps``."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    progress = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    return tc.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def split_episodes(data: demos.Demos, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) rows of the episode table; only bot successes; seeded."""
    ok = data.episodes.index[data.episodes["success"]].to_numpy()
    rng = np.random.default_rng([seed, 1])
    perm = rng.permutation(ok)
    n_val = int(round(len(ok) * val_fraction)) if val_fraction > 0 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 else 0), len(ok) - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_agent(
    levels=config.DEFAULT_LEVELS,
    episodes_per_level: int = 20_000,
    demo_seed: int = 0,
    agent_config: AgentConfig | None = None,
    train_config: TrainConfig | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    final_eval_episodes: int = 500,
    force: bool = False,
    progress: bool = True,
) -> TrainedAgent:
    """Behavioral cloning on the stage-1 demonstrations; cached, resumable, seeded.

    Cross-entropy on the bot's actions over whole episodes (the memory sees each episode from
    its start), AdamW, warm-up + cosine schedule, gradient clipping. Validation loss on
    held-out episodes and success rates on fresh seeds are logged to ``history.csv``.
    """
    from tqdm.auto import tqdm

    ac, tc = agent_config or AgentConfig(), train_config or TrainConfig()
    data = find_demos(levels, episodes_per_level, demo_seed, data_dir)
    levels = data.levels
    path = config.data_dir(data_dir) / "agents" / run_key(data, ac, tc, seed)
    if (path / "agent.pt").exists() and not force:
        return load_trained(levels, episodes_per_level, demo_seed, ac, tc, seed, data_dir)
    path.mkdir(parents=True, exist_ok=True)

    vocab = Vocabulary.from_sentences(data.missions)
    config.set_seed(seed)
    agent = Agent(vocab, ac)
    save_agent(agent, path / "untrained.pt", {"trained": False})
    train_rows, val_rows = split_episodes(data, tc.val_fraction, seed)
    train_set = EpisodeBatches(data, vocab, ac.max_words, train_rows)
    val_set = EpisodeBatches(data, vocab, ac.max_words, val_rows) if len(val_rows) else None
    opt = torch.optim.AdamW(agent.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    rng = np.random.default_rng([seed, 2])
    history: list[dict] = []
    step, seconds = 0, 0.0
    state_path = path / "state.pt"
    if state_path.exists() and not force:  # resume
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        agent.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        step, history, seconds = st["step"], st["history"], st["seconds"]

    def log(extra: dict) -> None:
        history.append({"step": step, "seconds": round(seconds, 1), **extra})

    agent.train()
    t_start = time.perf_counter() - seconds
    seconds_before = seconds  # training time of an interrupted earlier session (0 for a fresh run)
    bar = tqdm(total=tc.steps, initial=step, desc="behavioral cloning", unit="step", disable=not progress)
    running, frames_seen = None, 0
    while step < tc.steps:
        if tc.max_minutes and (time.perf_counter() - t_start) > 60 * tc.max_minutes:
            break
        b = train_set.batch(rng.integers(0, len(train_set), tc.batch_episodes))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        loss = F.cross_entropy(_forward(agent, b), b["actions"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), tc.grad_clip)
        opt.step()
        step += 1
        frames_seen += len(b["actions"])
        value = loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        bar.update()
        bar.set_postfix(loss=f"{running:.3f}")
        seconds = time.perf_counter() - t_start
        row: dict[str, Any] = {}
        if step % 100 == 0 or step == tc.steps:
            row["train_loss"] = running
            if val_set is not None and (step % tc.val_every == 0 or step == tc.steps):
                v = validate(agent, val_set)
                row.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
        if tc.eval_every and (step % tc.eval_every == 0) and step < tc.steps:
            table, _ = evaluate(agent, levels, tc.eval_episodes, seed=seed + 10_000 + step)
            row.update({f"success/{lv}": sr for lv, sr in zip(table["level"], table["success_rate"])})
        if row:
            log(row)
        if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < tc.steps:
            with io.atomic_file(state_path, "wb") as f:
                torch.save({"model": agent.state_dict(), "optimizer": opt.state_dict(), "rng": rng.bit_generator.state,
                            "torch_rng": torch.get_rng_state(), "step": step, "history": history,
                            "seconds": seconds}, f)
    bar.close()
    train_seconds = time.perf_counter() - t_start
    if step < tc.steps:  # the time limit, which depends on the machine, cut the recipe short
        warnings.warn(f"training stopped by max_minutes={tc.max_minutes} at step {step} of {tc.steps}: this agent "
                      "is not the configured recipe (its metrics say stopped_early); rerun with force=True and "
                      "max_minutes=0 for the full run", RuntimeWarning, stacklevel=2)

    t_eval = time.perf_counter()
    greedy, per_episode = evaluate(agent, levels, final_eval_episodes, seed=seed, greedy=True, progress=progress)
    sampled, _ = evaluate(agent, levels, final_eval_episodes, seed=seed, greedy=False, progress=progress)
    final = {f"success/{lv}": sr for lv, sr in zip(greedy["level"], greedy["success_rate"])}
    history.append({"step": step, "seconds": round(train_seconds, 1), **final})
    val = validate(agent, val_set) if val_set is not None else {"loss": float("nan"), "accuracy": float("nan"),
                                                                  "confusion": np.zeros((7, 7), int)}
    metrics = {
        "greedy": greedy.to_dict("records"), "sampled": sampled.to_dict("records"),
        "val_loss": val["loss"], "val_accuracy": val["accuracy"], "confusion": val["confusion"].tolist(),
        "steps": step, "train_seconds": round(train_seconds, 1), "eval_seconds": round(time.perf_counter() - t_eval, 1),
        "frames_per_second": round(frames_seen / max(train_seconds - seconds_before, 1e-9), 1),  # this session
        "parameters": count_parameters(agent), "train_episodes": len(train_set), "val_episodes": len(val_rows),
        "stopped_early": step < tc.steps,
    }
    meta = {"params": {"levels": levels, "episodes_per_level": episodes_per_level, "demo_seed": demo_seed,
                       "seed": seed, "agent": ac.to_dict(), "train": tc.to_dict(),
                       "final_eval_episodes": final_eval_episodes},
            "demos": str(data.path), "versions": config.versions(), "metrics": metrics,
            # the bits of a CPU training run depend on the thread count (matmul blocking)
            "torch_threads": torch.get_num_threads()}
    save_agent(agent, path / "agent.pt", metrics)
    with io.atomic_file(path / "history.csv", "w") as f:
        pd.DataFrame(history).to_csv(f, index=False)
    with io.atomic_file(path / "eval_episodes.csv", "w") as f:
        per_episode.to_csv(f, index=False)
    io.write_json(path / "meta.json", meta)
    state_path.unlink(missing_ok=True)
    return load_trained(levels, episodes_per_level, demo_seed, ac, tc, seed, data_dir)
