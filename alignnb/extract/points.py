"""Where in an agent alignment lives: extraction points, behavioural embeddings and the bot.

One agent gives several spaces over the same instructions (its *variants*), each cached:

    words       the mean of the sentence's word embeddings (no position, no layer): lexical
    layer j     the mean over words of instruction-encoder layer j's output (transformer only)
    embedding   the instruction embedding that conditions the policy (the study's default)
    film        what the policy receives from the instruction: every linear read-out of the
                embedding (FiLM gammas and betas, and the transformer's direct input). An
                invertible linear map absorbed into these layers leaves it unchanged.
    memory      the memory's output after the first step, averaged over the probe layouts
    behaviour   the action distributions in the probe states, concatenated: what the
                instruction makes the agent do, free of any internal coordinate system

The **probe set** is the first state of ``probes_per_level`` held-out layouts per level (the
``probes`` layout stream of :mod:`alignnb.core.streams`: odd, never a demonstration, never a
test or check layout), and the state a bot
demonstration would start from. Each instruction is swapped into each probe state. Only first
states are used, so no probe carries a history that was produced under another instruction.

The **bot** (minigrid's ``BabyAIBot``) gives the same behavioural embedding without any
learner: its first action in each probe state under each instruction, one-hot over its 7
actions plus an 8th outcome, "no such object here", for instructions that name an object the
layout does not hold (the bot cannot plan for them).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from types import SimpleNamespace
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from alignnb.core.progress import tqdm

from alignnb.core import paths
from alignnb.core import streams
from alignnb.collect import demos
from alignnb.collect import levels as level_table
from alignnb.core import cache
from alignnb.agents.blocks import N_ACTIONS
from alignnb.agents.learners import SHARED_EXTRACTIONS, get_learner, learner_of  # noqa: F401
from alignnb.extract.embeddings import Embeddings
from alignnb.collect.instructions import parse_instruction
from alignnb.agents.checkpoints import load_agent

FORMAT_VERSION = 1
#: The kinds of this module's cached steps (part of their keys).
VARIANTS_KIND, BOT_KIND = "agent-variants", "bot-behaviour"
#: The outcomes of the bot's behavioural embedding: its 7 actions, then "no such object here".
BOT_OUTCOMES = (*demos.ACTION_NAMES, "no such object")
#: The extraction points shared by both learners; the transformer adds one per encoder layer.


@dataclass(frozen=True)
class ProbeSet:
    """First states of held-out layouts: level and seed of each, the 7x7x3 views and directions."""

    levels: tuple[str, ...]
    seeds: tuple[int, ...]
    images: np.ndarray  # uint8 [P, 7, 7, 3]
    directions: np.ndarray  # int64 [P]
    spec: dict  # what made it: levels, per_level, seed (part of every cache key that uses it)

    def __len__(self) -> int:
        return len(self.seeds)


def probe_states(levels: Sequence[str], per_level: int, seed: int) -> ProbeSet:
    """The first state of ``per_level`` fresh layouts of each level (seeded; a few ms per layout)."""
    levels = level_table.check_levels(list(levels))
    if int(per_level) < 1:
        raise ValueError(f"per_level must be at least 1, got {per_level}")
    rows = []
    for level in levels:
        env = demos.make_env(level)
        for i in range(int(per_level)):
            s = streams.layout_seed("probes", seed, level, i)
            obs = demos.reset_quietly(env, s)
            rows.append((level, s, obs["image"], obs["direction"]))
    images = np.stack([r[2] for r in rows]).astype(np.uint8)
    directions = np.array([r[3] for r in rows], np.int64)
    # the states themselves enter every key that uses the probes: minigrid's layout generator makes them
    states = hashlib.sha256(images.tobytes() + directions.tobytes()).hexdigest()[:16]
    return ProbeSet(tuple(r[0] for r in rows), tuple(r[1] for r in rows), images, directions,
                    {"levels": levels, "per_level": int(per_level), "seed": int(seed), "states": states})


def extraction_points(learner: str, n_layers: int = 2) -> list[str]:
    """The extraction points of ``learner`` in order from words to behaviour (from the learner registry)."""
    return get_learner(learner).extraction_points(SimpleNamespace(n_layers=n_layers))


@torch.no_grad()
def probe_responses(agent: torch.nn.Module, sentences: Sequence[str], probes: ProbeSet,
                    chunk: int = 32, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(behaviour [n, P * 7], memory [n, d_hidden]) of ``agent`` for every sentence in every probe state.

    behaviour: the softmax action distribution at each probe state, concatenated in probe
    order; memory: the memory's output after that first step, averaged over the probes.
    """
    agent.eval()
    P = len(probes)
    images, dirs = torch.from_numpy(probes.images), torch.from_numpy(probes.directions)
    behaviour, memory = [], []
    sentences = list(sentences)
    for i in tqdm(range(0, len(sentences), chunk), desc="probe states", disable=not progress, leave=False):
        e = agent.encode_instructions(sentences[i:i + chunk])
        b = len(e)
        h, logits = agent.first_step(e.repeat_interleave(P, 0), images.repeat(b, 1, 1, 1), dirs.repeat(b))
        behaviour.append(F.softmax(logits, dim=1).reshape(b, P * N_ACTIONS))
        memory.append(h.reshape(b, P, -1).mean(1))
    return torch.cat(behaviour).numpy(), torch.cat(memory).numpy()


def instruction_layers(agent: torch.nn.Module, sentences: Sequence[str]) -> dict[int | str, np.ndarray]:
    """The agent's instruction embedding of ``sentences`` at every layer: {"last": [n, d], 0: [n, d], ...}.

    The one computation of it: the agent's spaces of :func:`alignnb.extract.encoders.embed` and
    the extraction points of :func:`extract` both come from here. ``"last"`` conditions the
    policy; an integer j is the mean over words of encoder layer j (0: word + position embeddings).
    """
    return agent.embed_instruction_layers(list(sentences))


def instruction_embedding(agent: torch.nn.Module, sentences: Sequence[str], layer: int | str = "last") -> np.ndarray:
    """The agent's instruction embedding of ``sentences`` at ``layer`` (``"all"``: layers 0, 1, ... then "last", stacked)."""
    layers = instruction_layers(agent, sentences)
    if layer == "all":
        return np.stack([layers[k] for k in sorted(k for k in layers if k != "last")] + [layers["last"]])
    return layers[layer]


@torch.no_grad()
def extract(agent: torch.nn.Module, sentences: Sequence[str], probes: ProbeSet,
            progress: bool = False) -> dict[str, np.ndarray]:
    """Every extraction point of ``agent`` for ``sentences``: {name: float32 [n, d]} (see the module)."""
    sentences = list(sentences)
    agent.eval()
    layers = instruction_layers(agent, sentences)
    e = agent.encode_instructions(sentences)
    out = {"words": agent.word_embedding_mean(sentences)}
    if learner_of(agent.cfg) == "transformer":
        out.update({f"layer {j}": layers[j] for j in range(1, agent.cfg.n_layers + 1)})
    out["embedding"] = layers["last"]
    out["film"] = agent.film_parameters(e).numpy()
    out["behaviour"], out["memory"] = probe_responses(agent, sentences, probes, progress=progress)
    order = extraction_points(learner_of(agent.cfg), getattr(agent.cfg, "n_layers", 0))
    return {name: np.ascontiguousarray(out[name], dtype=np.float32) for name in order}


def _path(kind: str, key: str, data_dir: str | os.PathLike | None) -> Path:
    return paths.data_dir(data_dir) / "embeddings" / f"{kind}-{key}.npz"


def variants_inputs(checkpoint: str | os.PathLike, sentences: Sequence[str], probes: ProbeSet) -> dict[str, Any]:
    """Everything that determines an agent's extraction points: the checkpoint's bytes, the
    ordered sentences, the probe set and the torch version (what :func:`agent_variants` hashes)."""
    return {"format": FORMAT_VERSION, "checkpoint": cache.file_hash(checkpoint),
            "sentences": cache.cache_key({"s": list(sentences)}), "probes": probes.spec,
            "torch": paths.package_version("torch")}


def bot_inputs(sentences: Sequence[str], probes: ProbeSet) -> dict[str, Any]:
    """Everything that determines the bot's behavioural embedding (what :func:`bot_behaviour` hashes)."""
    return {"format": FORMAT_VERSION, "sentences": cache.cache_key({"s": list(sentences)}), "probes": probes.spec,
            "minigrid": paths.package_version("minigrid")}


def variants_path(checkpoint: str | os.PathLike, sentences: Sequence[str], probes: ProbeSet,
                  data_dir: str | os.PathLike | None = None) -> Path:
    """The cache file of :func:`agent_variants` of this checkpoint, sentences and probes."""
    return _path("variants", cache.key_of(VARIANTS_KIND, variants_inputs(checkpoint, sentences, probes)), data_dir)


def bot_path(sentences: Sequence[str], probes: ProbeSet, data_dir: str | os.PathLike | None = None) -> Path:
    """The cache file of :func:`bot_behaviour` of these sentences and probes."""
    return _path("bot", cache.key_of(BOT_KIND, bot_inputs(sentences, probes)), data_dir)


def is_cached(checkpoint: str | os.PathLike, sentences: Sequence[str], probes: ProbeSet,
              data_dir: str | os.PathLike | None = None) -> bool:
    """True when :func:`agent_variants` of this checkpoint, sentences and probes is on disk."""
    return variants_path(checkpoint, sentences, probes, data_dir).exists()


def bot_is_cached(sentences: Sequence[str], probes: ProbeSet, data_dir: str | os.PathLike | None = None) -> bool:
    """True when :func:`bot_behaviour` of these sentences and probes is on disk."""
    return bot_path(sentences, probes, data_dir).exists()


def agent_variants(checkpoint: str | os.PathLike, sentences: Sequence[str], probes: ProbeSet, label: dict,
                   data_dir: str | os.PathLike | None = None, progress: bool = False) -> dict[str, Embeddings]:
    """Every extraction point of the agent saved in ``checkpoint``, cached: {extraction: Embeddings}.

    The key hashes :func:`variants_inputs` (the checkpoint's bytes, the ordered sentences, the
    probe set, the torch version). ``label`` (learner, seed, trained) goes into each set's metadata.
    """
    sentences = list(sentences)
    order, arrays = cache.cached(
        VARIANTS_KIND, variants_inputs(checkpoint, sentences, probes),
        build=lambda inputs: extract(load_agent(checkpoint), sentences, probes, progress=progress),
        load=_load_npz, write=lambda vectors, path: _write_npz(path, vectors, sentences),
        path=lambda key: _path("variants", key, data_dir), what="cached agent variants")
    meta = {**label, "probes": probes.spec, "source": str(checkpoint)}
    return {name: Embeddings(f"{label.get('learner', 'agent')}:{label.get('seed', '')}:{name}", sentences, arrays[name],
                             {**meta, "extraction": name}) for name in order}


def _write_npz(path: Path, vectors: dict[str, np.ndarray], sentences: list[str]) -> None:
    with cache.atomic_file(path, "wb") as f:
        np.savez(f, **{name.replace(" ", "_"): v for name, v in vectors.items()},
                 order=np.array(list(vectors)), sentences=np.array(sentences))


def _load_npz(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """(order, {name: vectors}) of a cached variants file; a damaged one is :class:`alignnb.core.cache.CorruptCache`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            order = [str(x) for x in z["order"]]
            return order, {name: np.asarray(z[name.replace(" ", "_")]) for name in order}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise cache.CorruptCache(path, f"{type(exc).__name__}: {exc}",
                                 f"delete it (rm {path}) and rerun notebooks/03_extract_embeddings.ipynb") from exc


# --------------------------------------------------------------------------------------
# the bot
# --------------------------------------------------------------------------------------


def bot_instruction(sentence: str):
    """minigrid's instruction object for a one-clause BabyAI mission (GoTo, Pickup, Open, PutNext)."""
    from minigrid.envs.babyai.core.verifier import GoToInstr, ObjDesc, OpenInstr, PickupInstr, PutNextInstr

    a = parse_instruction(sentence)
    if a["n_clauses"] != 1:
        raise ValueError(f"the bot's behavioural embedding needs one-clause missions, got {sentence!r}")

    def desc(suffix: str = "") -> ObjDesc:
        color, loc = a[f"color{suffix}"], a[f"loc{suffix}"]
        return ObjDesc(a[f"object{suffix}"], None if color == "none" else color, None if loc == "none" else loc)

    verb = a["verb"]
    if verb == "putnext":
        return PutNextInstr(desc(), desc("2"))
    return {"goto": GoToInstr, "pickup": PickupInstr, "open": OpenInstr}[verb](desc())


def bot_first_action(env, sentence: str) -> int:
    """The bot's first action in ``env``'s current state under ``sentence`` (index into
    :data:`BOT_OUTCOMES`); 7 when an object the sentence names is not in the layout."""
    from minigrid.utils.baby_ai_bot import BabyAIBot

    instr = bot_instruction(sentence)
    instr.reset_verifier(env)
    descs = [instr.desc_move, instr.desc_fixed] if hasattr(instr, "desc_move") else [instr.desc]
    if any(not d.obj_set for d in descs):
        return len(BOT_OUTCOMES) - 1
    saved = env.instrs
    env.instrs = instr
    try:
        return int(BabyAIBot(env).replan())
    finally:
        env.instrs = saved


def bot_behaviour(sentences: Sequence[str], probes: ProbeSet, data_dir: str | os.PathLike | None = None,
                  progress: bool = False) -> Embeddings:
    """The bot's behavioural embedding, cached: one-hot of its first action (or "no such object")
    in every probe state under every sentence, float32 [n, P * 8]."""
    sentences = list(sentences)
    return cache.cached(BOT_KIND, bot_inputs(sentences, probes),
                        build=lambda inputs: _bot_vectors(sentences, probes, progress), load=Embeddings.load,
                        write=lambda made, path: made.save(path), path=lambda key: _path("bot", key, data_dir),
                        what="cached bot behaviour")


def _bot_vectors(sentences: list[str], probes: ProbeSet, progress: bool) -> Embeddings:
    n_out = len(BOT_OUTCOMES)
    vectors = np.zeros((len(sentences), len(probes), n_out), np.float32)
    envs = {level: demos.make_env(level) for level in dict.fromkeys(probes.levels)}
    for p, (level, s) in enumerate(tqdm(list(zip(probes.levels, probes.seeds)), desc="bot in probe states",
                                        disable=not progress, leave=False)):
        env = envs[level]
        demos.reset_quietly(env, s)
        for i, sentence in enumerate(sentences):
            vectors[i, p, bot_first_action(env, sentence)] = 1.0
    return Embeddings("bot-behaviour", sentences, vectors.reshape(len(sentences), -1),
                      {"family": "control", "extraction": "behaviour", "learner": "bot", "probes": probes.spec,
                       "outcomes": list(BOT_OUTCOMES),
                       "no_object_share": float(vectors[:, :, -1].mean())})


def outcome_shares(bot: Embeddings, probes: ProbeSet) -> pd.Series:
    """The share of each of the bot's outcomes (its actions, "no such object"), over every
    instruction and probe state of its behavioural embedding ``bot``."""
    per_state = bot.vectors.reshape(len(bot.sentences), len(probes), -1)
    return pd.Series(per_state.mean((0, 1)), index=bot.meta["outcomes"])
