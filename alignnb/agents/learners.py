"""The learners the study trains: one entry each, by the name that tables and figures use.

A learner is its recipe (configuration class), its network class, its extraction points
and its display colour; its success goals are in the level table (:mod:`alignnb.collect.levels`).
A third learner is one more entry in :data:`LEARNERS` (its configuration names it in a
``learner`` field) and a goal for it on each level. Light: the network classes are imported
only when an agent is built, so the settings can read this registry without torch.
"""

from __future__ import annotations

import dataclasses

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignnb.agents.recipes import AgentConfig, RecurrentConfig

#: The extraction points that every learner has, from words to behaviour.
SHARED_EXTRACTIONS = ("words", "embedding", "film", "memory", "behaviour")


@dataclass(frozen=True)
class Learner:
    """One learner: its name, recipe class, network class (``module:Class``), extraction points, colour."""

    name: str
    config_class: type
    model: str
    extraction_points: Callable[[Any], list[str]]
    color: str

    def model_class(self) -> type:
        """The network class (imported here, so that reading the registry needs no torch)."""
        module, _, name = self.model.partition(":")
        return getattr(importlib.import_module(module), name)


def _transformer_points(cfg: Any) -> list[str]:
    layers = getattr(cfg, "n_layers", 2)
    return ["words", *(f"layer {j}" for j in range(1, layers + 1)), "embedding", "film", "memory", "behaviour"]


LEARNERS: dict[str, Learner] = {ln.name: ln for ln in [
    Learner("transformer", AgentConfig, "alignnb.agents.transformer:Agent", _transformer_points, "#D55E00"),
    Learner("gru-film-lstm", RecurrentConfig, "alignnb.agents.recurrent:RecurrentAgent",
            lambda cfg: list(SHARED_EXTRACTIONS), "#0072B2"),
]}


def get_learner(name: str) -> Learner:
    """The learner called ``name``; an unknown name is an error listing the study's learners."""
    try:
        return LEARNERS[name]
    except KeyError:
        raise ValueError(f"unknown learner {name!r}; the study's learners are {list(LEARNERS)}") from None


def learner_of(cfg: Any) -> str:
    """The learner of an agent configuration: its ``learner`` field (``"transformer"`` if it has none)."""
    return getattr(cfg, "learner", "transformer")


def config_from_dict(values: dict) -> Any:
    """The agent configuration stored in a checkpoint (its ``learner`` entry says which learner).

    A checkpoint written before a configuration field existed gets the value its network was
    built with (:data:`BEFORE_FIELDS`), not today's default."""
    config_class = get_learner(values.get("learner", "transformer")).config_class
    names = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{**{k: v for k, v in BEFORE_FIELDS.items() if k in names}, **values})


#: Configuration fields added after checkpoints were first written, and what those checkpoints used.
BEFORE_FIELDS = {"previous_action": False, "film_init": "zero"}


def build_agent(vocab: Any, cfg: Any = None) -> Any:
    """A fresh agent (a torch module) of the learner that ``cfg`` names (default: the study's transformer)."""
    learner = get_learner(learner_of(cfg) if cfg is not None else "transformer")
    return learner.model_class()(vocab, cfg)
