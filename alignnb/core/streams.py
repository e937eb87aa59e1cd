"""Every random stream of the study, named by purpose and derived in this one place.

A stage never adds its own offset to a seed: it asks for its stream by name,
``streams.rng("split", seed)`` or ``streams.layout_seed("probes", seed, level, i)``. The table
:data:`STREAMS` says how each is derived, so that the streams are disjoint can be read (and is
tested) here rather than depending on each module knowing the others' offsets.

Two kinds of stream:

- **layouts** (environment seeds of BabyAI episodes): ``episode_seed(base, level, index, split)``
  hashes (base, level, index) to 30 bits and appends the split's parity bit, so
  demonstrations (even) never replay an evaluation layout (odd). Each layout purpose has its
  own base: the final test ``seed``, the success checks ``seed + 10_000 + step``, the probe
  states ``seed + 1_000_000``.
- **generators** (numpy ``Generator`` s and torch's global seed): each purpose has its own
  spawn key, ``default_rng([seed, key])``, or, for the legacy analysis streams, the seed itself.

The derivations are those of the study's earlier releases, kept so that the committed figures
stay what they were; :func:`check_disjoint` states what "disjoint" means for each kind.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The parity bit of a layout seed: demonstrations even, evaluation (tests, checks, probes) odd.
SPLIT_SALT = {"demo": 0, "eval": 1}

#: Offset of the success checks' layouts: step ``s``'s check plays base ``seed + CHECK_OFFSET + s``.
CHECK_OFFSET = 10_000
#: Offset of the probe layouts (far from the test layouts ``seed`` and from every check).
PROBE_OFFSET = 1_000_000


@dataclass(frozen=True)
class Stream:
    """One named random stream: what it draws, and how its seed is derived."""

    name: str
    kind: str  # "layouts" or "generator"
    derivation: str
    used_by: str


STREAMS: dict[str, Stream] = {s.name: s for s in [
    Stream("demos", "layouts", "episode_seed(seed, level, i, 'demo')", "collect.demos (bot demonstrations)"),
    Stream("missions", "layouts", "episode_seed(seed, level, i, 'demo')",
           "collect.instructions (mission discovery: the demonstrations' own layouts, no new draws)"),
    Stream("test", "layouts", "episode_seed(seed, level, i, 'eval')", "agents.rollouts (the final test episodes)"),
    Stream("checks", "layouts", "episode_seed(seed + 10_000 + step, level, i, 'eval')",
           "agents.train (success checks during training)"),
    Stream("probes", "layouts", "episode_seed(seed + 1_000_000, level, i, 'eval')",
           "extract.points (probe states of behaviour and memory)"),
    Stream("init", "generator", "torch.manual_seed(seed) (+ python, numpy global)",
           "agents.train (initial weights); agents.checkpoints.random_init (the floor's spread, init seeds 10^9 + 0..19)"),
    Stream("split", "generator", "default_rng([seed, 1])", "agents.train (train / validation episodes)"),
    Stream("batches", "generator", "default_rng([seed, 2])", "agents.train (batch order)"),
    Stream("sampling", "generator", "torch.Generator().manual_seed(seed)", "agents.rollouts (sampled actions)"),
    Stream("analysis", "generator", "default_rng(seed)",
           "measure (permutation nulls, bootstrap, folds, subsets): one stream per call, seeded by the "
           "study seed (each call starts its own generator)"),
]}


def stream(name: str) -> Stream:
    """The stream called ``name``; an unknown name is an error listing the known ones."""
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(f"unknown random stream {name!r}; the study's streams are {sorted(STREAMS)}") from None


def check_seed(seed: Any) -> int:
    """``seed`` as an int; a float like 1.5 (which int() would round into seed 1's cache entry) is an error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"a seed must be an integer, got {seed!r} ({type(seed).__name__})")
    return int(seed)


def episode_seed(base_seed: int, level: str, index: int, split: str = "demo") -> int:
    """Environment seed of one episode, derived from (base seed, level, index, split).

    The seed depends only on these values, never on how episodes are spread over worker
    processes. Demonstration seeds are even and evaluation seeds odd, so an evaluation
    episode never replays a demonstration.
    """
    if split not in SPLIT_SALT:
        raise ValueError(f"split must be one of {sorted(SPLIT_SALT)}, got {split!r}")
    digest = hashlib.blake2b(f"{base_seed}|{level}|{index}".encode(), digest_size=4).digest()
    h = int.from_bytes(digest, "little") & 0x3FFFFFFF  # 30 bits
    return 2 * h + SPLIT_SALT[split]


def layout_base(name: str, seed: int, step: int = 0) -> int:
    """The base seed of the layout stream ``name`` (``step``: the training step of a check)."""
    seed = check_seed(seed)
    if name in ("demos", "missions", "test"):
        return seed
    if name == "checks":
        if not 0 <= step < PROBE_OFFSET - CHECK_OFFSET:
            raise ValueError(f"a success check's step must be in [0, {PROBE_OFFSET - CHECK_OFFSET}), got {step}")
        return seed + CHECK_OFFSET + int(step)
    if name == "probes":
        return seed + PROBE_OFFSET
    raise ValueError(f"{name!r} is not a layout stream; those are "
                     f"{sorted(n for n, s in STREAMS.items() if s.kind == 'layouts')}")


def layout_seed(name: str, seed: int, level: str, index: int, step: int = 0) -> int:
    """Environment seed of episode ``index`` of ``level`` in the layout stream ``name``."""
    split = "demo" if name in ("demos", "missions") else "eval"
    return episode_seed(layout_base(name, seed, step), level, index, split)


_SPAWN_KEY = {"split": 1, "batches": 2}


def rng(name: str, seed: int | np.random.Generator | None, *extra: int) -> np.random.Generator:
    """The numpy generator of stream ``name`` for ``seed`` (``extra``: a sub-stream, e.g. a subset size).

    A Generator passed as ``seed`` is returned as it is (a caller that already holds its stream).
    """
    if isinstance(seed, np.random.Generator):
        return seed
    kind = stream(name).kind
    if kind != "generator":
        raise ValueError(f"{name!r} is a layout stream: use layout_seed()")
    if name in _SPAWN_KEY:
        return np.random.default_rng([check_seed(seed), _SPAWN_KEY[name], *extra])
    if extra:
        return np.random.default_rng([check_seed(seed), *extra])
    return np.random.default_rng(seed)


def set_seed(seed: int) -> None:
    """The ``init`` stream: seed python's ``random``, numpy's global generator and torch."""
    import torch  # here, so that importing this module stays light

    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def torch_generator(name: str, seed: int) -> Any:
    """A torch ``Generator`` for stream ``name`` (today only ``sampling``)."""
    import torch

    if name != "sampling":
        raise ValueError(f"torch generators are drawn only by the 'sampling' stream, not {name!r}")
    return torch.Generator().manual_seed(check_seed(seed))


def check_disjoint(seed: int, steps: range, n_agent_seeds: int) -> None:
    """Raise if two layout streams of a study could share a base seed.

    Layout streams are disjoint when their base seeds differ for every agent seed and step in
    use: test bases are ``seed .. seed + n``, check bases ``seed + 10_000 + step``, probe bases
    ``seed + 1_000_000``. (Within one base the 30-bit hash can still collide by chance,
    about ``n^2 / 2^31`` for ``n`` episodes; the parity bit keeps demonstrations apart exactly.)
    """
    seeds = range(seed, seed + n_agent_seeds)
    test = {layout_base("test", s) for s in seeds}
    checks = {layout_base("checks", s, st) for s in seeds for st in steps}
    probes = {layout_base("probes", seed)}
    for a, b, names in ((test, checks, "test/checks"), (test, probes, "test/probes"), (checks, probes, "checks/probes")):
        if a & b:
            raise ValueError(f"the {names} layout streams share base seeds {sorted(a & b)[:5]}")
