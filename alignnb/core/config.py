"""Paths, seeds and version information shared by every stage.

Generated data lives under ``data/`` (overridable with the ``ALIGNNB_DATA`` environment
variable or a stage's ``data_dir`` argument); figures of a full default run go to
``figures/``; executed notebooks go to ``runs/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import random
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: The repository root when the package is installed in development mode (``pip install -e .``).
REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_LEVELS: tuple[str, ...] = (
    "BabyAI-GoToLocal-v0",
    "BabyAI-PickupLoc-v0",
    "BabyAI-OpenDoorLoc-v0",
    "BabyAI-PutNextLocal-v0",
)


def _in_repo() -> bool:
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "alignnb").is_dir()


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Where generated data (demonstrations, checkpoints, embeddings) is cached.

    Order: the explicit ``override``, then ``$ALIGNNB_DATA``, then ``<repo>/data`` (or
    ``./data`` when the package is not installed from a checkout).
    """
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("ALIGNNB_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT if _in_repo() else Path.cwd()) / "data"


def figures_dir(override: str | os.PathLike | None = None) -> Path:
    """Where figures go: ``override`` if given (a quick or parameterised run), else ``<repo>/figures``."""
    if override:
        return Path(override).expanduser().resolve()
    return (REPO_ROOT if _in_repo() else Path.cwd()) / "figures"


def runs_dir() -> Path:
    """Where executed notebooks and the outputs of non-default runs go."""
    return (REPO_ROOT if _in_repo() else Path.cwd()) / "runs"


def notebooks_dir() -> Path:
    """The folder of the numbered study notebooks."""
    return REPO_ROOT / "notebooks"


def check_seed(seed: Any) -> int:
    """``seed`` as an int; a float like 1.5 (which int() would round into seed 1's cache entry) is an error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"a seed must be an integer, got {seed!r} ({type(seed).__name__})")
    return int(seed)


def set_seed(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


CPUS_ENV = "ALIGNNB_CPUS"  # the CPU budget of the Ray task a process runs in (see alignnb.run.ray_engine)
ENGINE_ENV = "ALIGNNB_ENGINE"  # "ray" in the kernels of an `alignnb run --engine ray`


def cpu_budget() -> int:
    """The CPUs this process may use: its Ray task's budget (``$ALIGNNB_CPUS``), else the machine's cores."""
    budget = os.environ.get(CPUS_ENV)
    return max(1, int(budget)) if budget else (os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``"unknown"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str]:
    """Versions that go into every artifact's metadata."""
    return {
        "alignnb": package_version("alignnb"),
        "minigrid": package_version("minigrid"),
        "gymnasium": package_version("gymnasium"),
        "numpy": package_version("numpy"),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "python": platform.python_version(),
    }


SPLIT_SALT = {"demo": 0, "eval": 1}


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
