"""The Embeddings contract: float32 vectors of an ordered list of sentences.

An embedding set is ``vectors`` float32 ``[n_sentences, dim]`` (or ``[n_layers, n, dim]``
for an all-layers set) plus the sentences in the same order, the model key and metadata.
Every comparison first checks that two sets cover the same sentences in the same order
(:func:`check_same_sentences`).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignnb.core import cache


@dataclass
class Embeddings:
    """float32 vectors [n, dim] (or [n_layers, n, dim] for layer="all") for ``sentences``, in order."""

    model: str
    sentences: list[str]
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.vectors.shape[-2]
        if n != len(self.sentences):
            raise ValueError(f"{self.model}: {n} vectors for {len(self.sentences)} sentences")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[-1])

    def layer(self, index: int) -> Embeddings:
        """One layer of an all-layers set."""
        if self.vectors.ndim != 3:
            raise ValueError(f"{self.model}: not an all-layers embedding set")
        return Embeddings(self.model, self.sentences, self.vectors[index], {**self.meta, "layer": index})

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` (vectors, sentences, model, JSON metadata) atomically."""
        with cache.atomic_file(path, "wb") as f:
            np.savez(f, vectors=self.vectors, sentences=np.array(self.sentences), model=np.array(self.model),
                     meta=np.array(json.dumps(self.meta, sort_keys=True, default=str)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embeddings:
        """Read a set written by :meth:`save` (no pickles are loaded); an unreadable file is :class:`cache.CorruptCache`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                out = cls(str(z["model"]), [str(s) for s in z["sentences"]], np.asarray(z["vectors"]),
                          json.loads(str(z["meta"])))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise cache.CorruptCache(path, f"{type(exc).__name__}: {exc}",
                                  f"Delete it (rm {path}) and rerun notebooks/03_extract_embeddings.ipynb") from exc
        if out.vectors.ndim not in (2, 3) or out.vectors.shape[-2] != len(out.sentences):  # 3-D: every layer
            raise cache.CorruptCache(path, f"vectors of shape {out.vectors.shape} for {len(out.sentences)} sentences",
                                  f"Delete it (rm {path}) and rerun notebooks/03_extract_embeddings.ipynb")
        return out


def check_same_sentences(a: Embeddings, b: Embeddings) -> None:
    """Raise if two embedding sets do not cover the same sentences in the same order."""
    if a.sentences != b.sentences:
        if len(a.sentences) != len(b.sentences):
            raise ValueError(f"{a.model} has {len(a.sentences)} sentences, {b.model} {len(b.sentences)}: "
                             "embed the same sentence set with both")
        i = next(i for i, (x, y) in enumerate(zip(a.sentences, b.sentences)) if x != y)
        raise ValueError(f"{a.model} and {b.model} differ at sentence {i}: {a.sentences[i]!r} vs {b.sentences[i]!r}")


def check_all(spaces: Mapping[str, Embeddings]) -> list[str]:
    """The keys of ``spaces`` after checking that every set covers the same sentences in order."""
    keys = list(spaces)
    if not keys:
        raise ValueError("no embedding sets given")
    for key in keys[1:]:
        check_same_sentences(spaces[keys[0]], spaces[key])
    return keys
