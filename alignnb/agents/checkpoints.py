"""Stage 2's files: agent checkpoints and the layout of a training run on disk.

A run lives in ``<data>/agents/<key>/``; the key (:func:`run_key`) hashes the key of the
demonstration data set, the agent's configuration, every training setting and the seed:

    untrained.pt    the architecture at its seeded initialisation (this seed's own floor in stage 4)
    checkpoints/step_NNNNN.pt  the weights at every success check during training
    state.pt        optimizer + RNG state while training (removed when done): resumable
    agent.pt        trained weights + config + vocabulary + final metrics
    history.csv     step, train loss, validation loss/accuracy, success rates over time
    eval_episodes.csv  the final greedy evaluation, one row per episode
    meta.json       parameters, versions, timings, thread count, final success per level

``meta.json`` is written last: a run is finished when it exists. The evaluation on another
number of episodes than the run recorded is its own cached step (:mod:`alignnb.agents.evaluation`).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from alignnb.core import cache, paths, streams
from alignnb.agents.blocks import Vocabulary
from alignnb.agents.learners import build_agent, config_from_dict
from alignnb.agents.recipes import RUN_FORMAT as FORMAT_VERSION
from alignnb.agents.recipes import AgentConfig, run_dir, run_inputs, run_key  # noqa: F401  (re-exported)
from alignnb.agents.transformer import Agent


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
        """Final success per level: level, success_rate, episodes, mean_length (greedy or sampled).

        The evaluation of ``meta["evaluation"]["episodes"]`` episodes per level when the run came
        through :func:`alignnb.agents.evaluation.evaluated` (as every stage's runs do), else the
        one recorded when the run finished."""
        return pd.DataFrame(self.meta["metrics"][mode])


def checkpoint_path(run: str | os.PathLike, step: int) -> Path:
    """Where the run in folder ``run`` keeps its weights at success check ``step``."""
    return Path(run) / "checkpoints" / f"step_{int(step):05d}.pt"


def training_checkpoints(run: str | os.PathLike) -> dict[int, Path]:
    """{step: checkpoint} of the success checks of the run in folder ``run``, step 0 = its untrained twin."""
    run = Path(run)
    found = {int(p.stem.split("_")[1]): p for p in sorted((run / "checkpoints").glob("step_*.pt"))}
    return {0: run / "untrained.pt", **found}


def save_agent(agent: Agent, path: str | os.PathLike, metrics: dict | None = None) -> None:
    """Weights + config + vocabulary + metrics in one file, written atomically."""
    with cache.atomic_file(path, "wb") as f:
        torch.save({"format": FORMAT_VERSION, "state_dict": agent.state_dict(), "config": agent.cfg.to_dict(),
                    "vocab": agent.vocab.itos, "metrics": metrics or {}, "versions": paths.versions()}, f)


def load_agent(path: str | os.PathLike, vocab: Vocabulary | None = None,
               agent_config: AgentConfig | None = None) -> Agent:
    """Load a checkpoint written by :func:`save_agent`.

    With ``vocab`` or ``agent_config`` given, a checkpoint that was trained with another
    vocabulary or configuration is refused with an error saying what differs.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no agent checkpoint at {path}: train one with notebooks/02_train_agent.ipynb "
                                "or alignnb.agents.train.train_agent(...)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only: no code
        ckpt["config"], ckpt["vocab"], ckpt["state_dict"]  # a checkpoint of this format has these keys
    except (RuntimeError, EOFError, KeyError, TypeError, OSError, pickle.UnpicklingError) as exc:
        raise cache.CorruptCache(path, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                              f"Delete its run folder (rm -r {path.parent}) and rerun notebooks/02_train_agent.ipynb "
                              "(a checkpoint from elsewhere: ask for a new copy)") from exc
    cfg = config_from_dict(ckpt["config"])
    voc = Vocabulary(ckpt["vocab"][2:])
    if vocab is not None and voc != vocab:
        missing = sorted(set(vocab.itos) - set(voc.itos))
        extra = sorted(set(voc.itos) - set(vocab.itos))
        raise ValueError(f"checkpoint {path} has another vocabulary ({len(voc)} vs {len(vocab)} words; "
                         f"missing {missing[:10]}, extra {extra[:10]}): it was trained on other instructions")
    if agent_config is not None and cfg != agent_config:
        diff = {k: (v, getattr(agent_config, k)) for k, v in cfg.to_dict().items() if getattr(agent_config, k) != v}
        raise ValueError(f"checkpoint {path} has another agent configuration (checkpoint, expected): {diff}")
    agent = build_agent(voc, cfg)
    try:
        agent.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path} does not fit its own configuration: {exc}") from exc
    agent.eval()
    return agent


def is_finished(path: str | os.PathLike) -> bool:
    """True when the run folder holds a finished run (its ``meta.json`` is written last)."""
    return (Path(path) / "meta.json").exists() and (Path(path) / "agent.pt").exists()


def load_run(path: str | os.PathLike) -> TrainedAgent:
    """The finished run in folder ``path``, or an error saying how to make it."""
    path = Path(path)
    if not is_finished(path):
        raise FileNotFoundError(f"no finished training run at {path}: run notebooks/02_train_agent.ipynb with the "
                                "same study parameters (or alignnb.run.stages.train_agents(cfg))")
    fix = f"Delete the run folder (rm -r {path}) and rerun notebooks/02_train_agent.ipynb"
    meta = cache.read_json(path / "meta.json", fix)
    tables = {}
    for name in ("history.csv", "eval_episodes.csv"):
        try:
            tables[name] = pd.read_csv(path / name) if (path / name).exists() else None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise cache.CorruptCache(path / name, f"{type(exc).__name__}: {exc}", fix) from exc
    if tables["history.csv"] is None or "step" not in tables["history.csv"].columns:
        raise cache.CorruptCache(path / "history.csv", "missing, or without its step column", fix)
    return TrainedAgent(path, load_agent(path / "agent.pt"), load_agent(path / "untrained.pt"),
                        tables["history.csv"], meta, tables["eval_episodes.csv"])


def write_run(path: Path, agent: Agent, metrics: dict[str, Any], history: pd.DataFrame,
              per_episode: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write a finished run's files, each atomically, ``meta.json`` last.

    A run counts as finished only once ``meta.json`` exists (:func:`is_finished`), and every
    reader checks that first (:func:`load_run`; stage 3 refuses the checkpoints of an
    unfinished run folder), so a run becomes visible whole or not at all.
    """
    save_agent(agent, path / "agent.pt", metrics)
    with cache.atomic_file(path / "history.csv", "w") as f:
        history.to_csv(f, index=False)
    with cache.atomic_file(path / "eval_episodes.csv", "w") as f:
        per_episode.to_csv(f, index=False)
    cache.write_json(path / "meta.json", meta)


def random_init(template: str | os.PathLike, init_seed: int, path: str | os.PathLike) -> Path:
    """An untrained network with ``template``'s configuration and vocabulary, its weights drawn
    from seed ``init_seed`` of the ``init`` stream (as training draws a seed's ``untrained.pt``),
    saved at ``path`` (atomically) unless it is there already. Returns ``path``."""
    path = Path(path)
    if not path.exists():
        base = load_agent(template)
        streams.set_seed(int(init_seed))
        save_agent(build_agent(base.vocab, base.cfg), path, {"trained": False, "init_seed": int(init_seed)})
    return path
