"""The sentence set: every distinct mission of the chosen levels, with parsed attributes.

Missions are found by resetting each level's generator until ``patience`` consecutive resets
bring no new mission (seeds from the ``missions`` stream of :mod:`alignnb.core.streams`, so the set is reproducible).
Every later stage embeds exactly ``SentenceSet.sentences``, in this order: level by level,
alphabetical within a level.

Each sentence is parsed into the attributes of BabyAI's grammar (Chevalier-Boisvert et al.
2019): task verb, determiner, colour, object type, location phrase, and for "put X next to Y"
the same for the second object. The attributes drive the symbolic control embedding and the
"which attribute shapes the neighbourhood" analysis.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alignnb.core.progress import tqdm

from alignnb.collect import levels
from alignnb.core import paths
from alignnb.core import streams
from alignnb.core import cache
from alignnb.collect.demos import check_levels, make_env, reset_quietly

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECT_TYPES = ("ball", "box", "key", "door", "object")
LOCATIONS = {"in front of you": "front", "behind you": "behind", "on your left": "left", "on your right": "right"}
VERBS = {"go to": "goto", "pick up": "pickup", "open": "open", "put": "putnext"}

_OBJ = (r"(?P<det{i}>the|a) (?:(?P<color{i}>" + "|".join(COLORS) + r") )?(?P<object{i}>"
        + "|".join(OBJECT_TYPES) + r")(?: (?P<loc{i}>" + "|".join(LOCATIONS) + r"))?")
_CLAUSE = re.compile(
    r"^(?:(?P<verb>go to|pick up|open) " + _OBJ.format(i="")
    + r"|put " + _OBJ.format(i="_p") + r" next to " + _OBJ.format(i="2") + r")$"
)
_CONNECTIVES = re.compile(r", then |, and | and | after you ")

#: The attribute columns of :func:`parse_instruction`, in order.
ATTRIBUTES = ("verb", "det", "color", "object", "loc", "det2", "color2", "object2", "loc2", "n_clauses")


def parse_instruction(sentence: str) -> dict[str, Any]:
    """Parse a BabyAI mission into its attributes.

    Returns ``verb`` (goto / pickup / open / putnext), ``det``, ``color`` ("none" when the
    mission gives none), ``object``, ``loc`` (front / behind / left / right / "none"), the same
    four with suffix 2 for the second object of put-next (None otherwise), and ``n_clauses``.
    Composite missions ("..., then ...", "... and ...") are described by their first clause.
    Raises ``ValueError`` for a sentence outside BabyAI's grammar.
    """
    text = sentence.strip().lower()
    clauses = _CONNECTIVES.split(text)
    m = _CLAUSE.match(clauses[0])
    if m is None or any(_CLAUSE.match(c) is None for c in clauses[1:]):
        raise ValueError(f"not a BabyAI instruction: {sentence!r}")
    g = m.groupdict()
    suffix = "" if g["verb"] else "_p"
    out: dict[str, Any] = {
        "verb": VERBS[g["verb"] or "put"],
        "det": g[f"det{suffix}"],
        "color": g[f"color{suffix}"] or "none",
        "object": g[f"object{suffix}"],
        "loc": LOCATIONS[g[f"loc{suffix}"]] if g[f"loc{suffix}"] else "none",
        "det2": None, "color2": None, "object2": None, "loc2": None,
        "n_clauses": len(clauses),
    }
    if not g["verb"]:
        out.update(det2=g["det2"], color2=g["color2"] or "none", object2=g["object2"],
                   loc2=LOCATIONS[g["loc2"]] if g["loc2"] else "none")
    return out


@dataclass
class SentenceSet:
    """An ordered list of distinct instructions with the level each comes from and its attributes."""

    sentences: list[str]
    levels: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.sentences) != len(self.levels):
            raise ValueError("sentences and levels must have the same length")
        if len(set(self.sentences)) != len(self.sentences):
            raise ValueError("sentences must be distinct")

    def __len__(self) -> int:
        return len(self.sentences)

    def __repr__(self) -> str:
        counts = pd.Series(self.levels).value_counts(sort=False).to_dict()
        return f"SentenceSet({len(self)} sentences: {counts})"

    @property
    def attributes(self) -> pd.DataFrame:
        """One row per sentence (same order), columns ``level`` and :data:`ATTRIBUTES`."""
        df = pd.DataFrame([parse_instruction(s) for s in self.sentences], columns=list(ATTRIBUTES))
        df.insert(0, "level", self.levels)
        df.index = pd.Index(self.sentences, name="sentence")
        return df

    @property
    def digest(self) -> str:
        """Hash of the ordered sentence list: embeddings of this set carry it."""
        return cache.cache_key({"sentences": self.sentences})

    def subset(self, levels: str | list[str]) -> SentenceSet:
        """The sentences of one level or several, in the same relative order."""
        wanted = {levels} if isinstance(levels, str) else set(levels)
        unknown = wanted - set(self.levels)
        if unknown:
            raise ValueError(f"no sentences of level(s) {sorted(unknown)}; this set has {sorted(set(self.levels))}")
        keep = [i for i, lv in enumerate(self.levels) if lv in wanted]
        return SentenceSet([self.sentences[i] for i in keep], [self.levels[i] for i in keep],
                           {**self.meta, "subset_of": self.digest, "subset_levels": sorted(wanted)})

    def vocabulary(self) -> list[str]:
        """Sorted distinct words of the sentences."""
        return sorted({w for s in self.sentences for w in s.split()})

    def save(self, path: str | os.PathLike) -> None:
        """Write the set as JSON (sentences, levels, metadata), atomically."""
        cache.write_json(path, {"sentences": self.sentences, "levels": self.levels, "meta": self.meta})

    @classmethod
    def load(cls, path: str | os.PathLike) -> SentenceSet:
        """Read a set written by :meth:`save`; a file that is not one is :class:`alignnb.core.cache.CorruptCache`."""
        fix = f"delete it (rm {path}) and rerun notebooks/01_collect_demos.ipynb"
        d = cache.read_json(path, fix)
        try:
            return cls(list(d["sentences"]), list(d["levels"]), dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise cache.CorruptCache(path, f"not a sentence set ({type(exc).__name__}: {exc})", fix) from exc


def discover_missions(level: str, seed: int = 0, patience: int = 2000, max_resets: int = 50_000,
                      progress: bool = True) -> tuple[set[str], int]:
    """Reset ``level`` until ``patience`` consecutive resets bring no new mission.

    Returns the missions found and the number of resets used; raises ``RuntimeError`` when
    ``max_resets`` is reached before saturation.
    """
    env = make_env(level)
    found: set[str] = set()
    since_new = 0
    with tqdm(desc=f"missions {level.removeprefix('BabyAI-')}", unit="reset", disable=not progress) as bar:
        for i in range(max_resets):
            obs = reset_quietly(env, streams.layout_seed("missions", seed, level, i))
            bar.update()
            if obs["mission"] not in found:
                found.add(obs["mission"])
                since_new = 0
                bar.set_postfix(missions=len(found))
            else:
                since_new += 1
                if since_new >= patience:
                    return found, i + 1
    raise RuntimeError(f"{level}: still finding new missions after {max_resets} resets "
                       f"({len(found)} so far); raise max_resets or lower patience")


def sentence_inputs(levels: list[str], seed: int, patience: int) -> dict[str, Any]:
    """Everything that determines a sentence set: what :func:`build_sentence_set` builds from and hashes."""
    return {"levels": list(levels), "seed": int(seed), "patience": int(patience),
            "minigrid": paths.package_version("minigrid")}


def sentences_path(levels: list[str], seed: int, patience: int, data_dir: str | os.PathLike | None = None) -> Path:
    """Cache file of the sentence set with these parameters (it may not exist yet)."""
    key = cache.key_of("sentences", sentence_inputs(levels, seed, patience))
    return paths.data_dir(data_dir) / "sentences" / f"{key}.json"


def build_sentence_set(levels: list[str] | tuple[str, ...] = levels.DEFAULT_LEVELS, seed: int = 0,
                       patience: int = 2000, max_resets: int = 50_000,
                       data_dir: str | os.PathLike | None = None, force: bool = False,
                       progress: bool = True) -> SentenceSet:
    """The distinct missions of ``levels``, level by level, alphabetical within; cached by
    :func:`alignnb.core.cache.cached` (``max_resets`` only bounds the search: a set that
    saturates is the same whatever it is)."""
    levels = check_levels(levels)
    root = paths.data_dir(data_dir) / "sentences"
    return cache.cached("sentences", sentence_inputs(levels, seed, patience),
                        build=lambda inputs: _discover(inputs, max_resets, progress),
                        load=SentenceSet.load, write=lambda made, path: made.save(path),
                        path=lambda key: root / f"{key}.json", force=force, what="cached sentence set")


def _discover(inputs: Mapping[str, Any], max_resets: int, progress: bool) -> SentenceSet:
    sentences: list[str] = []
    owner: list[str] = []
    resets = {}
    for level in inputs["levels"]:
        found, resets[level] = discover_missions(level, inputs["seed"], inputs["patience"], max_resets, progress)
        for s in sorted(found - set(sentences)):
            sentences.append(s)
            owner.append(level)
    params = {"kind": "sentences", **inputs}  # the file records its key's payload, as it always did
    result = SentenceSet(sentences, owner, {"params": params, "resets": resets, "versions": paths.versions()})
    for s in result.sentences:  # every mission must parse: later controls depend on it
        parse_instruction(s)
    return result


def sentence_set_from_demos(demos: Any) -> SentenceSet:
    """The sentence set of the missions present in a demonstration data set (its order)."""
    level_of = demos.episodes.drop_duplicates("mission").set_index("mission")["level"]
    return SentenceSet(list(demos.missions), [level_of[m] for m in demos.missions],
                       {"from_demos": str(demos.path)})


def inventory(sentences: SentenceSet) -> pd.DataFrame:
    """Per level: distinct missions, vocabulary size, words, and an example mission."""
    rows = []
    for level in dict.fromkeys(sentences.levels):
        sub = sentences.subset(level)
        vocab = sub.vocabulary()
        attrs = sub.attributes
        rows.append({"level": level, "missions": len(sub), "vocabulary": len(vocab),
                     "verbs": ", ".join(sorted(attrs["verb"].unique())),
                     "with_location": int((attrs["loc"] != "none").sum()),
                     "example": sub.sentences[len(sub) // 2]})
    vocab_all = sentences.vocabulary()
    rows.append({"level": "all levels", "missions": len(sentences), "vocabulary": len(vocab_all),
                 "verbs": ", ".join(sorted(sentences.attributes["verb"].unique())),
                 "with_location": int((sentences.attributes["loc"] != "none").sum()), "example": ""})
    return pd.DataFrame(rows).set_index("level")


def attribute_onehot(sentences: SentenceSet) -> tuple[np.ndarray, list[str]]:
    """Bag-of-attributes embedding: one-hot of each parsed attribute (float32), and column names."""
    attrs = sentences.attributes.drop(columns=["level"])
    cols = [c for c in ATTRIBUTES if c != "n_clauses"]
    dummies = pd.get_dummies(attrs[cols].fillna("n/a").astype(str), prefix=cols, prefix_sep="=")
    return dummies.to_numpy(np.float32), list(dummies.columns)

