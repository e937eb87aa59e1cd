"""The study's settings: every parameter, validated once, and the cache keys of its stages.

:class:`StudyConfig` is a frozen dataclass holding every parameter of the study, the size of
a quick run defined once (:meth:`StudyConfig.effective`), and the cache keys of every stage,
each derived from the keys upstream without reading the disk::

    demos key      = hash(levels, episodes, seed, minigrid version)
    sentences key  = hash(levels, seed, patience, minigrid version)
    agent key      = hash(demos key, agent config, training config, seed, torch version)
    eval key       = hash(agent key, eval episodes, the test stream, seed)
    embeddings key = hash(model spec, weights (an agent's: its checkpoint's bytes), pooling,
                          layer, ordered sentences)

A notebook declares the parameters of its own stage plus ``seed``, ``quick`` (and from 03 on
``profile``), and receives the rest as the dict ``study`` (which ``alignnb run`` fills in);
:func:`configure` merges the two. The stage functions that run with these settings are in
:mod:`alignnb.run.stages`.

Light: building and validating a :class:`StudyConfig` imports neither torch nor transformers
(``tests/test_architecture.py`` checks it), so ``alignnb run`` answers a bad parameter at once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from alignnb.agents import evaluation, learners, recipes
from alignnb.agents.recipes import AgentConfig, RecurrentConfig, TrainConfig
from alignnb.collect import demos
from alignnb.core import numerics
from alignnb.collect import levels as level_table
from alignnb.collect.instructions import SentenceSet, sentences_path
from alignnb.extract import models
from alignnb.measure import metrics
from alignnb.measure.checks import check_k

#: Seed offset of the replicate agent: the same recipe, data and configuration, initial seed + 1.
REPLICATE_OFFSET = 1
#: What ``quick`` caps (tests, CI, a first look): seconds to a minute per notebook.
QUICK = {"episodes_per_level": 60, "sentence_patience": 300, "eval_episodes": 10, "n_perm": 50, "n_boot": 20,
         "size_draws": 3,
         "explorer_permutations": 50, "train_steps": 40, "train_batch_episodes": 32, "agent_seeds": 2,
         "recurrent_seeds": 1, "probes_per_level": 2}


def _param(default: Any, notebooks: tuple[int, ...], help: str) -> Any:
    kind = (lambda: tuple(default)) if isinstance(default, tuple) else None
    meta = {"notebooks": notebooks, "help": help}
    return field(default_factory=kind, metadata=meta) if kind else field(default=default, metadata=meta)


@dataclass(frozen=True)
class StudyConfig:
    """Every parameter of the study (defaults: the full run); validated when built."""

    # what identifies the study
    seed: int = _param(0, (1, 2, 3, 4, 5), "seed of demonstrations, sentence search, agent and statistics")
    quick: bool = _param(False, (1, 2, 3, 4, 5), "small fast run for tests and CI")
    # stage 1
    levels: tuple = _param(level_table.DEFAULT_LEVELS, (1,), "BabyAI level ids")
    episodes_per_level: int = _param(50_000, (1,), "bot demonstrations per level")
    workers: int | None = _param(None, (1,), "worker processes for collection, None means all cores")
    sentence_patience: int = _param(2000, (1,), "stop looking for new missions after this many resets bring none")
    # stage 2
    d_model: int = _param(128, (2,), "instruction embedding size")
    n_layers: int = _param(2, (2,), "instruction transformer layers")
    memory_layers: int = _param(2, (2,), "causal transformer layers over the episode")
    steps: int = _param(3_000, (2,), "the most optimizer steps; training stops earlier once success checks meet the goals")
    batch_episodes: int = _param(96, (2,), "whole episodes per batch")
    lr: float = _param(0.001, (2,), "the transformer's peak learning rate, AdamW with warm-up and cosine decay")
    eval_episodes: int = _param(500, (2,), "fresh episodes per level for the final evaluation")
    agent_seeds: int = _param(5, (2,), "transformer agents, from seed, seed + 1, ...: the 2nd is the replicate; "
                                       "together they give the seed-to-seed ceiling")
    recurrent_seeds: int = _param(3, (2,), "agents of the second learner (GRU, FiLM convolution, LSTM), from seed on")
    recurrent_lr: float = _param(0.001, (2,), "the second learner's peak learning rate (3e-3 was worse on 2 of 3 seeds)")
    # stage 3
    profile: str = _param("offline", (3, 4, 5), "model profile: offline, paper or paper-small")
    models: tuple = _param((), (3,), "model keys, empty means every model of the profile")
    pooling: str = _param("", (3,), "mean, last, cls or proj; empty means each model's default")
    layer: int | str = _param("", (3,), "a layer index, empty means the last layer")
    batch_size: int = _param(32, (3,), "sentences per forward pass")
    probes_per_level: int = _param(16, (3,), "held-out layouts per level whose first states probe each agent's "
                                             "behaviour and memory (and the bot's)")
    # stage 4
    reference: str = _param("agent", (4,), "the space every other one is compared with")
    k: int = _param(15, (4, 5), "neighbours for precision at k, 15 as in the paper")
    n_perm: int = _param(1000, (4,), "permutations for the null distribution")
    n_boot: int = _param(2000, (4,), "bootstrap resamples for confidence intervals")
    projections: tuple = _param(("pca", "umap"), (4,), "2-D pictures to draw, each pca or umap")
    size_draws: int = _param(20, (4,), "random subsets per size N in the size-dependence curves")
    # stage 5
    space_a: str = _param("agent", (5,), "first space shown")
    space_b: str = _param("", (5,), "second space shown, empty means the first language model")
    metric: str = _param("precision", (5,), "precision or cka or rsa or procrustes_disparity")
    instruction: str = _param("pick up the red ball behind you", (5,), "the instruction whose neighbours are shown")

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _checked_type(f.name, getattr(self, f.name), _default(f)))
        for name, (ok, expected) in _RANGES.items():
            if not ok(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r}: {expected}")
        object.__setattr__(self, "levels", tuple(level_table.check_levels(list(self.levels))))
        try:
            models.profile_models(self.profile)
            for name, key in [*(("models", m) for m in self.models), ("reference", self.reference),
                              ("space_a", self.space_a), *([("space_b", self.space_b)] if self.space_b else [])]:
                try:
                    models.get_spec(key)
                except KeyError as exc:
                    raise KeyError(f"{name}: {exc.args[0]}") from None
            _check_metric(self.metric)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        for name in ("reference", "space_a", "space_b"):
            value = getattr(self, name)
            if value and value not in self.model_keys:
                raise ValueError(f"{name}={value!r} is not among the study's spaces {self.model_keys}: add it to "
                                 "models, or choose one of them")

    # -- building ---------------------------------------------------------------------
    @classmethod
    def names(cls, notebook: int | None = None) -> list[str]:
        """Parameter names, all or those a notebook declares."""
        return [f.name for f in fields(cls) if notebook is None or notebook in f.metadata["notebooks"]]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> StudyConfig:
        """A config from ``values``; an unknown name is an error that lists the known ones."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(f"unknown study parameter(s) {unknown}; the study's parameters are {cls.names()}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """Every parameter as plain Python values (lists for sequences): what a notebook receives."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    def effective(self, name: str) -> Any:
        """A parameter's value for this run: the quick size when ``quick``, else as given."""
        value = getattr(self, name)
        return min(value, QUICK[name]) if self.quick and name in QUICK else value

    # -- what each stage runs with ----------------------------------------------------
    @property
    def agent_config(self) -> AgentConfig:
        return AgentConfig(d_model=self.d_model, n_layers=self.n_layers, memory_layers=self.memory_layers)

    @property
    def train_config(self) -> TrainConfig:
        """The training recipe; a quick run trains for seconds, with no evaluation during training."""
        tc = TrainConfig(steps=self.steps, batch_episodes=self.batch_episodes, lr=self.lr,
                         numerics=numerics.chosen())  # avx2 unless ALIGNNB_NUMERICS=native
        if not self.quick:
            return tc
        return replace(tc, steps=min(tc.steps, QUICK["train_steps"]),
                       batch_episodes=min(tc.batch_episodes, QUICK["train_batch_episodes"]), warmup=10,
                       val_every=20, check_every=0, goal_checks=0, checkpoint_every=20, max_minutes=0.0)

    @property
    def model_keys(self) -> list[str]:
        """The spaces of stages 3-5: ``models``, else the profile's (without the slowest in a quick run)."""
        if self.models:
            return list(self.models)
        keys = models.profile_models(self.profile)
        return [m for m in keys if m not in models.QUICK_SKIP] if self.quick else keys

    @property
    def projection_methods(self) -> list[str]:
        return ["pca"] if self.quick else list(self.projections)

    @property
    def explorer_permutations(self) -> int:
        return QUICK["explorer_permutations"] if self.quick else 200

    # -- cache keys (no disk reads) ---------------------------------------------------
    @property
    def demos_key(self) -> str:
        return demos.demos_key(list(self.levels), self.effective("episodes_per_level"), self.seed)

    @property
    def recurrent_config(self) -> RecurrentConfig:
        """The second learner (BabyAI-1.1 style: GRU, FiLM convolution, LSTM) at its default size."""
        return RecurrentConfig()

    @property
    def recurrent_train_config(self) -> TrainConfig:
        """The transformer's recipe with the second learner's learning rate and goal (its uniform
        goal in the level table)."""
        tc = replace(self.train_config, lr=self.recurrent_lr)
        return tc if self.quick else replace(tc, goal=level_table.uniform_goal(self.levels, "gru-film-lstm"))

    @property
    def agent_seed_list(self) -> list[tuple[str, int]]:
        """(learner, seed) of every agent the study trains, the study's agent first."""
        return ([("transformer", self.seed + i) for i in range(self.effective("agent_seeds"))]
                + [("gru-film-lstm", self.seed + i) for i in range(self.effective("recurrent_seeds"))])

    def learner_recipe(self, learner: str) -> tuple[Any, TrainConfig]:
        """(agent configuration, training configuration) of ``learner``."""
        if learner == "transformer":
            return self.agent_config, self.train_config
        if learner == "gru-film-lstm":
            return self.recurrent_config, self.recurrent_train_config
        raise ValueError(f"unknown learner {learner!r}; the study's learners are {list(learners.LEARNERS)}")

    def run_key_of(self, learner: str, seed: int) -> str:
        """Key of the training run of ``learner`` from ``seed``."""
        ac, tc = self.learner_recipe(learner)
        return recipes.run_key(self.demos_key, ac, tc, seed)

    def eval_key_of(self, learner: str, seed: int) -> str:
        """Key of the final evaluation (``eval_episodes`` per level) of the run of ``learner`` from ``seed``."""
        return evaluation.evaluation_key(self.run_key_of(learner, seed), self.effective("eval_episodes"), seed)

    def agent_key(self, replicate: bool = False) -> str:
        """Key of the study's agent run (or of its replicate, seed + REPLICATE_OFFSET)."""
        return self.run_key_of("transformer", self.seed + (REPLICATE_OFFSET if replicate else 0))

    def sentences_path(self, data_dir: str | os.PathLike | None = None) -> Path:
        return sentences_path(list(self.levels), self.seed, self.effective("sentence_patience"), data_dir)

    def check_sentence_count(self, data_dir: str | os.PathLike | None = None) -> int | None:
        """If the sentence set of this study is cached: its size, after checking that k fits it.

        k must pass :func:`alignnb.measure.checks.check_k` (1 <= k <= n - 2); this fails at once instead of
        in notebook 04. When the set is not made yet (notebook 01 makes it), k is checked against
        the largest set the levels can give (:func:`alignnb.collect.levels.most_missions`, 560 for
        the default levels), and None is returned: the exact check follows notebook 01.
        """
        path = self.sentences_path(data_dir)
        if not path.exists():
            most = level_table.most_missions(self.levels)
            if most is not None:
                try:
                    check_k(self.k, most)
                except ValueError as exc:
                    raise ValueError(f"{exc} (checked before any collection: the levels {list(self.levels)} say at "
                                     f"most {most} distinct missions)") from None
            return None
        n = len(SentenceSet.load(path))
        check_k(self.k, n)
        return n

    def agent_checkpoints(self, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
        """The agent checkpoints that stage 3 embeds: trained, untrained twin, replicate."""
        run = recipes.run_dir(self.agent_key(), data_dir)
        return {"trained": run / "agent.pt", "untrained": run / "untrained.pt",
                "replicate": recipes.run_dir(self.agent_key(replicate=True), data_dir) / "agent.pt"}

    def provenance(self, notebook: int, **extra: Any) -> dict[str, Any]:
        """The parameters recorded in a notebook's figures and tables (with ``extra`` added)."""
        base = {"levels": list(self.levels), "episodes_per_level": self.effective("episodes_per_level"),
                "seed": self.seed}
        if notebook == 1:
            out = {**base, "sentence_patience": self.effective("sentence_patience")}
        elif notebook == 2:
            out = {**base, "agent": self.agent_config.to_dict(), "train": self.train_config.to_dict(),
                   "recurrent": self.recurrent_config.to_dict(), "agents": [list(a) for a in self.agent_seed_list],
                   "eval_episodes": self.effective("eval_episodes")}
        elif notebook == 3:
            out = {**base, "profile": self.profile, "models": self.model_keys, "pooling": self.pooling,
                   "layer": self.layer, "agent_run": self.agent_key(), "agents": [list(a) for a in self.agent_seed_list],
                   "probes_per_level": self.effective("probes_per_level")}
        elif notebook == 4:
            out = {**base, "profile": self.profile, "models": self.model_keys, "pooling": self.pooling,
                   "layer": self.layer, "reference": self.reference, "k": self.k, "n_perm": self.effective("n_perm"),
                   "n_boot": self.effective("n_boot"), "size_draws": self.effective("size_draws"),
                   "agent_run": self.agent_key(), "agents": [list(a) for a in self.agent_seed_list],
                   "probes_per_level": self.effective("probes_per_level")}
        else:
            out = {"seed": self.seed, "profile": self.profile, "models": self.model_keys, "space_a": self.space_a,
                   "space_b": self.space_b, "k": self.k, "metric": self.metric, "instruction": self.instruction}
        return {**out, "quick": self.quick, **extra}


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _checked_type(name: str, value: Any, default: Any) -> Any:
    """``value`` in the type of the parameter's default (int, float, bool, str, tuple of str), or a ValueError."""
    def fail(expected: str) -> ValueError:
        return ValueError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")

    if name == "workers" and value is None:
        return None
    if name == "layer" and isinstance(value, str) and value in ("", "last"):
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail("True or False")
        return value
    if isinstance(default, int) or name == "workers" or name == "layer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer" + (" (or '' / 'last')" if name == "layer" else ""))
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise fail(f"a list of strings (e.g. -p {name} '[\"a\", \"b\"]')")
    return tuple(value)


_RANGES: dict[str, tuple[Any, str]] = {
    "seed": (lambda v: v >= 0, "the seed must be 0 or larger"),
    "episodes_per_level": (lambda v: v >= 1, "must be at least 1"),
    "workers": (lambda v: v is None or v >= 1, "must be None (all cores) or at least 1"),
    "sentence_patience": (lambda v: v >= 1, "must be at least 1"),
    "d_model": (lambda v: v >= 4 and v % 4 == 0, "must be a positive multiple of the agent's 4 attention heads"),
    "n_layers": (lambda v: v >= 1, "must be at least 1"),
    "memory_layers": (lambda v: v >= 1, "must be at least 1"),
    "steps": (lambda v: v >= 1, "must be at least 1"),
    "batch_episodes": (lambda v: v >= 1, "must be at least 1"),
    "lr": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "recurrent_lr": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "eval_episodes": (lambda v: v >= 1, "must be at least 1"),
    "agent_seeds": (lambda v: v >= 1, "must be at least 1 (the study's agent)"),
    "recurrent_seeds": (lambda v: v >= 0, "must be 0 (no second learner) or more"),
    "levels": (lambda v: len(v) >= 1, "name at least one level"),
    "pooling": (lambda v: v in ("", *models.POOLINGS), f"must be empty or one of {models.POOLINGS}"),
    "layer": (lambda v: v == "" or models.check_layer(v) != "all", "must be empty, 'last' or a layer index"),
    "batch_size": (lambda v: v >= 1, "must be at least 1"),
    "probes_per_level": (lambda v: v >= 1, "must be at least 1"),
    "k": (lambda v: v >= 1, "must be at least 1 (and smaller than the number of sentences)"),
    "n_perm": (lambda v: v >= 1, "must be at least 1"),
    "n_boot": (lambda v: v >= 10, "must be at least 10"),
    "size_draws": (lambda v: v >= 2, "must be at least 2"),
    "projections": (lambda v: set(v) <= {"pca", "umap"}, "each must be pca or umap"),
    "instruction": (lambda v: bool(v.strip()), "must not be empty"),
}


def configure(study: Mapping[str, Any] | None = None, **own: Any) -> StudyConfig:
    """The study configuration of a notebook: ``study`` (every parameter, from ``alignnb run``;
    empty means the defaults) with the notebook's own parameters ``own`` on top."""
    return StudyConfig.from_dict({**dict(study or {}), **own})


def _check_metric(name: str) -> None:
    """A KeyError naming the known metrics unless ``name`` is one of the metric registry's."""
    metrics.get_metric(name)
