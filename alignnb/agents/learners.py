"""The learners the study trains: one entry each, by the name that tables and figures use.

A learner is its configuration class and its network class. A third learner is one more
entry in :data:`LEARNERS` (its configuration names it in a ``learner`` field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from alignnb.agents.blocks import Vocabulary
from alignnb.agents.recipes import AgentConfig, RecurrentConfig
from alignnb.agents.recurrent import RecurrentAgent
from alignnb.agents.transformer import Agent


@dataclass(frozen=True)
class Learner:
    """One learner: its name, configuration class and network class."""

    name: str
    config_class: type
    model_class: type


LEARNERS: dict[str, Learner] = {ln.name: ln for ln in [
    Learner("transformer", AgentConfig, Agent),
    Learner("gru-film-lstm", RecurrentConfig, RecurrentAgent),
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
    """The agent configuration stored in a checkpoint (its ``learner`` entry says which learner)."""
    return get_learner(values.get("learner", "transformer")).config_class(**values)


def build_agent(vocab: Vocabulary, cfg: Any = None) -> nn.Module:
    """A fresh agent of the learner that ``cfg`` names (default: the study's transformer agent)."""
    if cfg is None:
        return Agent(vocab, None)
    return get_learner(learner_of(cfg)).model_class(vocab, cfg)
