"""The recipes of the study's agents as plain data: each learner's sizes and the training settings.

Light (no torch): the study configuration builds and validates these without loading a network.
The networks they describe live in :mod:`alignnb.agents.transformer` and
:mod:`alignnb.agents.recurrent`; :mod:`alignnb.agents.learners` maps one to the other.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignnb.core import cache, numerics, paths, streams

#: Format of a training run's files (its checkpoints and meta.json); part of the run key.
#: 2: a checkpoint at every success check (checkpoints/step_NNNNN.pt).
RUN_FORMAT = 2


@dataclass(frozen=True)
class AgentConfig:
    """Sizes of the agent. The defaults are the study's agent (about 1.5M parameters)."""

    d_model: int = 128  # instruction token and embedding size
    n_layers: int = 2  # transformer encoder layers
    n_heads: int = 4
    d_ff: int = 256
    max_words: int = 16
    cell_dim: int = 32  # embedding size of each grid cell attribute
    channels: int = 64  # per-cell feature size
    d_hidden: int = 128  # frame feature and memory size
    memory_layers: int = 2  # causal transformer layers over the episode
    max_steps: int = 128  # time embeddings; later steps share the last one
    dropout: float = 0.0
    previous_action: bool = True  # the frame feature also reads the action taken before it (dead reckoning)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RecurrentConfig:
    """Sizes of the GRU + FiLM + LSTM agent (the defaults: about 0.49M parameters)."""

    learner: str = "gru-film-lstm"  # names this learner in checkpoints (see alignnb.agents.learners.config_from_dict)
    d_model: int = 128  # word embedding and GRU size = instruction embedding size
    max_words: int = 16
    cell_dim: int = 32  # embedding size of each cell attribute (a cell is the sum of its three)
    channels: int = 32  # convolution channels
    film_blocks: int = 2  # FiLM residual blocks
    d_hidden: int = 128  # frame feature and LSTM size
    dropout: float = 0.0  # on the LSTM's input and output
    readout: str = "flatten"  # "flatten": every cell's features into a linear map; "max": BabyAI 1.1's max-pool
    previous_action: bool = True  # the frame feature also reads the action taken before it
    film_init: str = "babyai"  # "babyai": FiLM maps start as BabyAI's (unit-norm random rows); "zero": start at identity

    def __post_init__(self) -> None:
        if self.learner != RecurrentConfig.learner:
            raise ValueError(f"RecurrentConfig is the {RecurrentConfig.learner!r} learner, not {self.learner!r}")
        if self.film_init not in ("babyai", "zero"):
            raise ValueError(f"film_init must be 'babyai' or 'zero', got {self.film_init!r}")
        if self.readout not in ("flatten", "max"):
            raise ValueError(f"readout must be 'flatten' or 'max', got {self.readout!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Behavioral-cloning settings. The defaults are the study's full run.

    Training stops at the first success check (at or after ``min_steps``) that, together with
    the ``goal_checks - 1`` checks before it, meets the learner's goals (:func:`alignnb.collect.levels.goals`) on fresh validation
    layouts (with ``stop_margin`` > 0, their pooled rate must also beat each goal by it; see
    :func:`alignnb.agents.stopping.stop_reason`), or at ``steps``. The weights at every check are kept. A check plays ``check_episodes`` episodes per level whose seeds
    come from the ``checks`` layout stream (:mod:`alignnb.core.streams`): never the final test layouts, never a
    demonstration (those seeds are even, evaluation seeds odd).
    """

    steps: int = 3_000  # the most optimizer steps; also the length of the cosine schedule
    batch_episodes: int = 96  # whole episodes per batch
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200  # linear warm-up steps, then cosine decay to 5% of lr at ``steps``
    grad_clip: float = 1.0
    val_fraction: float = 0.03  # episodes held out for the teacher-forced validation loss
    val_every: int = 250  # steps between validation losses
    check_every: int = 500  # steps between success checks on validation layouts (0: none)
    check_episodes: int = 200  # episodes per level at a success check
    min_steps: int = 1_500  # no stopping before this step
    goal_checks: int = 2  # consecutive checks that must meet the goals to stop (0: never stop early)
    stop_margin: float = 0.0  # their pooled rate must also beat each goal by this (at most half its gap to 1); 0: off
    goal: float = 0.0  # one success goal for every level (0: the level table's goals for the learner)
    checkpoint_every: int = 500  # steps between resumable checkpoints
    threads: int = 1  # torch threads of this run: the bits of CPU training depend on it
    numerics: str = "avx2"  # the CPU kernels it trains with (alignnb.core.numerics): its bits depend on them
    max_minutes: float = 0.0  # stop a session after this long (0 = no limit): the run stays unfinished and resumable

    def __post_init__(self) -> None:
        for name in ("steps", "batch_episodes", "threads", "val_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)!r}")
        if self.numerics not in numerics.KINDS:
            raise ValueError(f"TrainConfig.numerics must be one of {numerics.KINDS}, got {self.numerics!r}")
        if self.goal_checks and not self.check_every:
            raise ValueError("TrainConfig: goal_checks > 0 needs success checks (check_every > 0)")

    def to_dict(self) -> dict:
        return asdict(self)


def run_inputs(demos_key: str, agent_config: Any, train_config: Any, seed: int) -> dict[str, Any]:
    """Everything that shapes a run's weights: what :func:`alignnb.agents.train.train_agent` trains
    from and hashes (its key is ``cache.key_of("agent", run_inputs(...))`` = :func:`run_key`).

    The training settings leave out the wall-clock limit (not part of the recipe) and a uniform
    ``goal`` left at 0 (the transformer's per-level goals), so that the second learner's goal
    does not change the transformer's key.
    """
    train = {k: v for k, v in train_config.to_dict().items() if k != "max_minutes" and not (k == "goal" and not v)}
    return {"format": RUN_FORMAT, "demos": demos_key, "agent": agent_config.to_dict(), "train": train,
            "seed": streams.check_seed(seed), "torch": paths.package_version("torch"),
            "numpy": paths.package_version("numpy")}  # numpy draws the batches


def run_key(demos_key: str, agent_config: AgentConfig, train_config: Any, seed: int) -> str:
    """Cache key of a training run (the one derivation): the hash of :func:`run_inputs`."""
    return cache.key_of("agent", run_inputs(demos_key, agent_config, train_config, seed))


def run_dir(key: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the run with cache key ``key`` (it may not exist yet)."""
    return paths.data_dir(data_dir) / "agents" / key
