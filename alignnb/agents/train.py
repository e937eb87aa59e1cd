"""Stage 2: behavioral cloning of the bot on the stage-1 demonstrations.

Cross-entropy on the bot's actions over whole episodes (the memory sees each episode from its
start), AdamW, warm-up + cosine schedule, gradient clipping. Validation loss on held-out
episodes and success rates on fresh seeds are logged. A run is cached in
``<data>/agents/<key>/`` (layout in :mod:`alignnb.agents.checkpoints`), resumable from its last checkpoint
and bit-identical for a given seed and torch thread count. When to stop is
:mod:`alignnb.agents.stopping`; the final evaluation is :mod:`alignnb.agents.evaluation`.
"""

from __future__ import annotations

import math
import os
import pickle
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from alignnb.core.progress import tqdm

from alignnb.core import cache, compute, numerics, paths, streams
from alignnb.collect import demos
from alignnb.agents import evaluation
from alignnb.agents.blocks import START_ACTION, Vocabulary, count_parameters
from alignnb.agents.checkpoints import (TrainedAgent, checkpoint_path, load_run, run_dir, run_inputs, run_key, save_agent,
                                        write_run)
from alignnb.agents.learners import build_agent, config_from_dict, learner_of
from alignnb.agents.recipes import AgentConfig, TrainConfig
from alignnb.agents.rollouts import evaluate
from alignnb.agents.stopping import goals_met, margin_goals, stop_reason  # noqa: F401  (re-exported)
from alignnb.agents.transformer import Agent


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


class EpisodeBatches:
    """Whole-episode batches from a data set, as flat frames plus their padded layout."""

    def __init__(self, data: demos.Demos, vocab: Vocabulary, max_words: int, episodes: np.ndarray):
        self.images = torch.from_numpy(np.array(data.images))  # a writable in-memory copy
        self.directions = torch.from_numpy(np.asarray(data.directions).astype(np.int64))
        self.actions = torch.from_numpy(np.asarray(data.actions).astype(np.int64))
        # each frame's previous action within its episode (START_ACTION at an episode's first frame)
        self.prev = torch.cat([torch.tensor([START_ACTION]), self.actions[:-1]])
        self.mission = np.asarray(data.mission)
        self.mission_ids = vocab.encode(data.missions, max_words)
        table = data.episodes.loc[episodes]
        self.starts = table["start"].to_numpy(np.int64)
        self.lengths = table["length"].to_numpy(np.int64)
        self.n_frames = int(self.lengths.sum())

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, which: np.ndarray) -> dict[str, Any]:
        """The episodes at rows ``which`` as flat frames, each frame's slot in the padded layout,
        and the batch's distinct instructions (``ids``) with each frame's row of them (``mission``)."""
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
                "actions": self.actions[idx],
                "prev": torch.where(torch.from_numpy(t) == 0, START_ACTION, self.prev[idx])}

    def iterate(self, batch_episodes: int):
        """All episodes once, in order, in batches (for validation)."""
        order = np.argsort(self.lengths, kind="stable")  # similar lengths together: less padding
        for i in range(0, len(order), batch_episodes):
            yield self.batch(order[i:i + batch_episodes])


def forward_batch(agent: Agent, b: dict) -> torch.Tensor:
    """The agent's action logits [frames, 7] for a batch of :meth:`EpisodeBatches.batch`."""
    return agent.forward_episodes(b["ids"], b["mission"], b["images"], b["directions"], b["slot"],
                                  b["n_episodes"], b["max_len"], b["prev"])


@torch.no_grad()
def validate(agent: Agent, data: EpisodeBatches, batch_episodes: int = 256) -> dict[str, Any]:
    """Teacher-forced loss, accuracy and the 7x7 confusion matrix (rows: bot, columns: agent)."""
    agent.eval()
    loss_sum, n = 0.0, 0
    confusion = np.zeros((7, 7), dtype=np.int64)
    for b in data.iterate(batch_episodes):
        logits = forward_batch(agent, b)
        loss_sum += float(F.cross_entropy(logits, b["actions"], reduction="sum"))
        n += len(b["actions"])
        np.add.at(confusion, (b["actions"].numpy(), logits.argmax(1).numpy()), 1)
    agent.train()
    return {"loss": loss_sum / max(n, 1), "accuracy": float(np.trace(confusion) / max(n, 1)), "confusion": confusion}


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warm-up to ``lr`` then cosine decay to 5% of it at ``steps``."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    progress = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    return tc.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def split_episodes(data: demos.Demos, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) rows of the episode table; only bot successes; seeded."""
    ok = data.episodes.index[data.episodes["success"]].to_numpy()
    perm = streams.rng("split", seed).permutation(ok)
    n_val = int(round(len(ok) * val_fraction)) if val_fraction > 0 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 else 0), len(ok) - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# --------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """What a checkpoint restores: step, history, training seconds and the running loss so far."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    running: float | None = None  # moving average of the training loss

    def log(self, row: dict) -> None:
        self.history.append({"step": self.step, "seconds": round(self.seconds, 1), **row})


def _save_state(path: Path, agent: Agent, opt: torch.optim.Optimizer, rng: np.random.Generator,
                prog: _Progress) -> None:
    with cache.atomic_file(path, "wb") as f:
        torch.save({"model": agent.state_dict(), "optimizer": opt.state_dict(), "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "step": prog.step, "history": prog.history,
                    "seconds": prog.seconds, "running": prog.running}, f)


def _load_state(path: Path, agent: Agent, opt: torch.optim.Optimizer, rng: np.random.Generator) -> _Progress:
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only: no code
        agent.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        return _Progress(st["step"], st["history"], st["seconds"], st.get("running"))
    except (RuntimeError, EOFError, KeyError, TypeError, ValueError, OSError, pickle.UnpicklingError) as exc:
        raise cache.CorruptCache(path, f"the training state {path} cannot be read ({type(exc).__name__})",
                              f"delete it (rm {path}); training then starts again") from exc


class TrainingCutShort(RuntimeError):
    """Training stopped at its time limit (``max_minutes``): the run is saved unfinished, to resume."""


def _train_loop(agent: Agent, opt: torch.optim.Optimizer, rng: np.random.Generator, prog: _Progress,
                tc: TrainConfig, train_set: EpisodeBatches, val_set: EpisodeBatches | None, levels: list[str],
                seed: int, state_path: Path, progress: bool,
                report: Callable[[int, int], None] | None = None) -> tuple[int, str]:
    """Optimizer steps until :func:`stop_reason` says stop (or the time limit); logs into ``prog``.

    Returns the frames seen this session and why training stopped.
    """
    agent.train()
    t_start = time.perf_counter() - prog.seconds
    t_session = time.perf_counter()  # max_minutes limits each session, so a cut-short run can go on
    frames_seen = 0
    learner = learner_of(agent.cfg)
    reason = stop_reason(prog.history, tc, learner=learner) if prog.step else None
    # checks before the first one that can count towards stopping would only cost time
    first_check = max(0, tc.min_steps - (tc.goal_checks - 1) * tc.check_every) if tc.goal_checks else 0
    with tqdm(total=tc.steps, initial=prog.step, desc="behavioral cloning", unit="step", disable=not progress) as bar:
        while reason is None:
            if tc.max_minutes and (time.perf_counter() - t_session) > 60 * tc.max_minutes:
                reason = "time limit"
                break
            b = train_set.batch(rng.integers(0, len(train_set), tc.batch_episodes))
            for group in opt.param_groups:
                group["lr"] = lr_at(prog.step, tc)
            loss = F.cross_entropy(forward_batch(agent, b), b["actions"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), tc.grad_clip)
            opt.step()
            prog.step += 1
            frames_seen += len(b["actions"])
            value = loss.item()
            prog.running = value if prog.running is None else 0.95 * prog.running + 0.05 * value
            bar.update()
            bar.set_postfix(loss=f"{prog.running:.3f}")
            if report is not None and (prog.step % 25 == 0):
                report(prog.step, tc.steps)
            step, last = prog.step, prog.step == tc.steps
            row: dict[str, Any] = {}
            if step % 100 == 0 or last:
                row["train_loss"] = prog.running
            if val_set is not None and (step % tc.val_every == 0 or last):
                v = validate(agent, val_set)
                row.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
            if tc.check_every and step % tc.check_every == 0 and not last and step >= first_check:
                table, _ = evaluate(agent, levels, tc.check_episodes, seed=seed, stream="checks", step=step)
                rates = {f"success/{lv}": sr for lv, sr in zip(table["level"], table["success_rate"])}
                row.update(rates)
                # the weights at every success check, kept (alignment along training, matched success)
                save_agent(agent, checkpoint_path(state_path.parent, step), {"trained": True, "step": step, **rates})
                agent.train()
            prog.seconds = time.perf_counter() - t_start
            if row:
                prog.log(row)
                reason = stop_reason(prog.history, tc, learner=learner)
            if reason is None and tc.checkpoint_every and step % tc.checkpoint_every == 0:
                _save_state(state_path, agent, opt, rng, prog)
    return frames_seen, reason


def train_agent(data: demos.Demos, agent_config: AgentConfig | None = None, train_config: TrainConfig | None = None,
                seed: int = 0, data_dir: str | os.PathLike | None = None, final_eval_episodes: int = 500,
                force: bool = False, progress: bool = True,
                report: Callable[[int, int], None] | None = None) -> TrainedAgent:
    """Behavioral cloning on the demonstrations ``data``; cached, resumable, seeded.

    The run is the cached step (:func:`alignnb.core.cache.cached`) of
    :func:`alignnb.agents.checkpoints.run_inputs` (the data set's key, the configurations and the
    seed): a finished run is loaded, an interrupted one resumed from its ``state.pt``. Its final
    evaluation on ``final_eval_episodes`` episodes per level is the step of
    :func:`alignnb.agents.evaluation.evaluated` (a run that recorded as many serves its own).
    Training uses ``train_config.threads`` torch threads (restored afterwards). ``report``,
    if given, is called with (step, most steps) every 25 steps (for progress across processes).
    """
    ac, tc = agent_config or AgentConfig(), train_config or TrainConfig()
    inputs = run_inputs(data.key, ac, tc, seed)
    path = run_dir(run_key(data.key, ac, tc, seed), data_dir)  # = the key of these inputs

    def build(inputs: Mapping[str, Any]) -> None:
        if inputs["demos"] != data.key:
            raise ValueError(f"a run of data set {inputs['demos']} was asked to train on {data.key}")
        # the recipe as the key hashes it: the wall-clock limit is the caller's, not part of it
        recipe = TrainConfig(**{"goal": 0.0, **inputs["train"], "max_minutes": tc.max_minutes})
        numerics.check(recipe.numerics)  # the CPU kernels are part of the recipe
        with compute.torch_threads(recipe.threads):
            _train(data, config_from_dict(dict(inputs["agent"])), recipe, inputs["seed"], path,
                   final_eval_episodes, progress, report)

    run = cache.cached("agent", inputs, build=build, load=load_run, write=None,
                       path=lambda key: run_dir(key, data_dir), force=force, what="finished run",
                       lock=lambda folder: folder / ".lock",  # in the run folder, as runs in progress hold it
                       discard=_discard_run)
    return evaluation.evaluated(run, final_eval_episodes, data_dir, progress=progress)


def _discard_run(path: Path) -> None:
    """Before a run is trained again (forced, or its files damaged): nothing of it is reused."""
    (path / "meta.json").unlink(missing_ok=True)
    (path / "state.pt").unlink(missing_ok=True)
    for kept in (path / "checkpoints").glob("step_*.pt"):  # the old run's checks are not this run's snapshots
        kept.unlink()


def _train(data: demos.Demos, ac: AgentConfig, tc: TrainConfig, seed: int, path: Path, final_eval_episodes: int,
           progress: bool, report: Callable[[int, int], None] | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    vocab = Vocabulary.from_sentences(data.missions)
    streams.set_seed(seed)
    agent = build_agent(vocab, ac)
    save_agent(agent, path / "untrained.pt", {"trained": False})
    train_rows, val_rows = split_episodes(data, tc.val_fraction, seed)
    train_set = EpisodeBatches(data, vocab, ac.max_words, train_rows)
    val_set = EpisodeBatches(data, vocab, ac.max_words, val_rows) if len(val_rows) else None
    opt = torch.optim.AdamW(agent.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    rng = streams.rng("batches", seed)
    state_path = path / "state.pt"
    prog = _Progress()
    if state_path.exists():
        try:
            prog = _load_state(state_path, agent, opt, rng)
        except cache.CorruptCache as exc:
            warnings.warn(f"{exc.problem}: starting this run again from step 0", RuntimeWarning, stacklevel=3)
            streams.set_seed(seed)  # the state of a fresh run: the same seeded initialisation
            agent = build_agent(vocab, ac)
            opt = torch.optim.AdamW(agent.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
            rng = streams.rng("batches", seed)
    seconds_before = prog.seconds  # training time of an interrupted earlier session (0 for a fresh run)
    frames_seen, reason = _train_loop(agent, opt, rng, prog, tc, train_set, val_set, data.levels, seed, state_path,
                                      progress, report)
    if reason == "time limit":  # the time limit depends on the machine: the run is kept unfinished
        _save_state(state_path, agent, opt, rng, prog)
        raise TrainingCutShort(f"training stopped by max_minutes={tc.max_minutes} at step {prog.step} (of at most "
                               f"{tc.steps}): the run is not finished and is not served under its cache key. It is "
                               f"saved in {state_path} and resumes from there when you train it again "
                               "(rerun notebooks/02_train_agent.ipynb, or call train_agent again: each call may "
                               "train for max_minutes more; max_minutes=0 trains to the end)")
    _finish(path, agent, prog, tc, ac, data, val_set, len(train_set), len(val_rows), seed, final_eval_episodes,
            frames_seen / max(prog.seconds - seconds_before, 1e-9), reason, progress)
    state_path.unlink(missing_ok=True)


def _finish(path: Path, agent: Agent, prog: _Progress, tc: TrainConfig, ac: AgentConfig, data: demos.Demos,
            val_set: EpisodeBatches | None, n_train: int, n_val: int, seed: int, final_eval_episodes: int,
            frames_per_second: float, reason: str, progress: bool) -> None:
    """Final greedy and sampled evaluation, metrics, and the run's files."""
    t_eval = time.perf_counter()
    greedy, sampled, per_episode = evaluation.play(agent, data.levels, final_eval_episodes, seed, progress)
    prog.history.append({"step": prog.step, "seconds": round(prog.seconds, 1),
                         **{f"success/{lv}": sr for lv, sr in zip(greedy["level"], greedy["success_rate"])}})
    val = validate(agent, val_set) if val_set is not None else {"loss": float("nan"), "accuracy": float("nan"),
                                                                  "confusion": np.zeros((7, 7), int)}
    metrics = {
        "greedy": greedy.to_dict("records"), "sampled": sampled.to_dict("records"),
        "val_loss": val["loss"], "val_accuracy": val["accuracy"], "confusion": val["confusion"].tolist(),
        "steps": prog.step, "train_seconds": round(prog.seconds, 1),
        "eval_seconds": round(time.perf_counter() - t_eval, 1),
        "frames_per_second": round(frames_per_second, 1),  # this session
        "parameters": count_parameters(agent), "train_episodes": n_train, "val_episodes": n_val,
        "stop_reason": reason,
    }
    meta = {"params": {"levels": data.levels, "episodes_per_level": data.meta["params"]["episodes_per_level"],
                       "demo_seed": data.meta["params"]["seed"], "seed": seed, "agent": ac.to_dict(),
                       "train": tc.to_dict(), "final_eval_episodes": final_eval_episodes},
            "demos": str(data.path), "versions": paths.versions(), "metrics": metrics,
            # the bits of a CPU training run depend on the thread count (matmul blocking)
            "torch_threads": torch.get_num_threads(),  # = tc.threads (set for the run)
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "numerics": numerics.active()}
    write_run(path, agent, metrics, pd.DataFrame(prog.history), per_episode, meta)
