"""The cache keys of every stage: pinned to today's values, and each moved by exactly its inputs.

Two guards:

- ``test_todays_keys_are_kept``: the keys of a fixed small configuration are pinned to the
  strings the code of the reorganised package's first commit (``git show HEAD``, before the
  cache step was unified) computed. **This guards the validity of existing caches**: the
  study's data folder holds demonstrations, agents (hours of training) and embeddings under
  these keys, and a key that moves silently orphans them. Library versions enter every key;
  they are fixed here, so the pins do not depend on what is installed.
- ``test_each_parameter_moves_exactly_its_keys``: every field of ``StudyConfig`` changed on its
  own moves exactly the keys of the stages that depend on it (the table ``DEPENDS``).
"""

from __future__ import annotations

import dataclasses
import functools

import pytest

from alignnb.agents import evaluation
from alignnb.agents.checkpoints import run_inputs
from alignnb.agents.recipes import run_key
from alignnb.core import cache, paths
from alignnb.extract import encoders, points
from alignnb.run.settings import StudyConfig

SENTENCES = ["go to the red ball", "pick up a blue key", "go to a box"]
SMALL = {"quick": True, "seed": 3, "levels": ("BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0")}


@pytest.fixture()
def fixed_versions(monkeypatch):
    """Every library version a key holds, fixed (as the pins were computed)."""
    monkeypatch.setattr(paths, "package_version", lambda name: f"{name}-9.9")


@pytest.fixture()
def stubbed_weights(monkeypatch):
    """A language model's weight identity without its files (the key holds whatever it returns)."""
    monkeypatch.setattr(encoders, "weights_identity", lambda spec, data_dir=None: "weights-W")


# the keys computed by the code at git HEAD 2b54f67 (scratch script, versions fixed as above)
PINNED = {
    # issue 24: 50,000 demonstrations per level, 3,000 steps, the previous action, the pinned CPU kernels,
    # 5 + 3 seeds, a checkpoint at every success check (run format 2), BabyAI's FiLM start for the GRU; the GRU's own lr (equal to the transformer's)
    "default": {"demos": "6a892125275c1419", "sentences": "42f4075e0965b82b.json",
                "runs": {"transformer:0": "821e2dcb3a545b98", "transformer:1": "5204b6b0122a6c98",
                         "transformer:2": "36d4ca08f114d43d", "transformer:3": "9d38eb7b64ba609d",
                         "transformer:4": "eb7ff59f60793413", "gru-film-lstm:0": "dc311b88421e2f00",
                         "gru-film-lstm:1": "01868befde937cc7", "gru-film-lstm:2": "4ee5c5c5bcdaac5c"}},
    "quick": {"demos": "2814e257f069d3c9", "sentences": "04474088333e7b4e.json",
              "runs": {"transformer:3": "ebe1cfddcd8283c7", "transformer:4": "f73e023475cb5211",
                       "gru-film-lstm:3": "53d3c74b4ea923ca"}},
    "embeddings": {"agent:last": "agent-6eecbd59ab13a991.npz", "agent:1": "agent-c249782038962b43.npz",
                   "agent-untrained:last": "agent-untrained-53e8afbf1f18f11a.npz",
                   "bag-of-attributes:None": "bag-of-attributes-3f10c5adef75d7ff.npz",
                   "tf-idf:None": "tf-idf-47f3eef281042e40.npz", "minilm-l6:None": "minilm-l6-27457e00d58eb00e.npz",
                   "minilm-l6-q4_0:None": "minilm-l6-q4_0-2d06754575e2539f.npz",
                   "smollm2-135m:None": "smollm2-135m-2a5bb273a608ce04.npz"},
    "variants": "variants-c0550bc81c981587.npz",
    "bot": "bot-888e5c12d48adf8d.npz",
    "probes_states": "136e0bd5d747b8d4",
}


def _probes_stand_in() -> points.ProbeSet:
    import numpy as np

    return points.ProbeSet(("BabyAI-GoToLocal-v0",), (11,), np.zeros((1, 7, 7, 3), np.uint8), np.zeros(1, np.int64),
                           {"levels": ["BabyAI-GoToLocal-v0"], "per_level": 1, "seed": 3, "states": "0123456789abcdef"})


def test_todays_keys_are_kept(tmp_path, fixed_versions, stubbed_weights):
    # Guards the validity of existing caches: change none of these strings without a migration.
    for label, kwargs in {"default": {}, "quick": SMALL}.items():
        cfg = StudyConfig(**kwargs)
        assert cfg.demos_key == PINNED[label]["demos"]
        assert cfg.sentences_path(tmp_path).name == PINNED[label]["sentences"]
        assert {f"{ln}:{s}": cfg.run_key_of(ln, s) for ln, s in cfg.agent_seed_list} == PINNED[label]["runs"]
        for ln, s in cfg.agent_seed_list:  # the run key is the hash of exactly what training receives
            ac, tc = cfg.learner_recipe(ln)
            assert cache.key_of("agent", run_inputs(cfg.demos_key, ac, tc, s)) == run_key(cfg.demos_key, ac, tc, s)
    ckpt = tmp_path / "run" / "agent.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"fixed checkpoint bytes")
    files = {"trained": ckpt, "untrained": ckpt}
    for name, expected in PINNED["embeddings"].items():
        model, layer = name.split(":")
        layer = None if layer == "None" else (int(layer) if layer.isdigit() else layer)
        path = encoders.embedding_file(model, SENTENCES, layer=layer, agent_checkpoints=files, device="cpu",
                                       data_dir=tmp_path)
        assert path.name == expected, name
    probes = _probes_stand_in()
    assert points.variants_path(ckpt, SENTENCES, probes, tmp_path).name == PINNED["variants"]
    assert points.bot_path(SENTENCES, probes, tmp_path).name == PINNED["bot"]
    real = points.probe_states(list(SMALL["levels"]), 2, 3)  # the probe states themselves are in the keys
    assert real.spec["states"] == PINNED["probes_states"]


def test_embed_writes_where_embedding_file_says(tmp_path, fixed_versions):
    emb = encoders.embed("tf-idf", SENTENCES, data_dir=tmp_path, progress=False)
    path = encoders.embedding_file("tf-idf", SENTENCES, data_dir=tmp_path)
    assert path.name == PINNED["embeddings"]["tf-idf:None"] and path.exists()
    assert emb.sentences == SENTENCES


# --------------------------------------------------------------------------------------
# which keys each parameter moves
# --------------------------------------------------------------------------------------

STAGES = ("demos", "sentences", "agents", "evaluations", "embeddings", "variants", "bot")

#: A valid other value of every StudyConfig field.
CHANGED = {
    "seed": 1, "quick": True, "levels": ("BabyAI-GoToLocal-v0",), "episodes_per_level": 100, "workers": 1,
    "sentence_patience": 100, "d_model": 64, "n_layers": 1, "memory_layers": 1, "steps": 100, "batch_episodes": 32,
    "lr": 0.002, "recurrent_lr": 0.003, "eval_episodes": 100, "agent_seeds": 2, "recurrent_seeds": 1, "profile": "paper",
    "models": ("agent", "agent-untrained", "agent-replicate", "tf-idf"), "pooling": "last", "layer": 1,
    "batch_size": 8, "probes_per_level": 4, "reference": "tf-idf", "k": 10, "n_perm": 100, "n_boot": 100,
    "projections": ("pca",), "size_draws": 5, "space_a": "tf-idf", "space_b": "tf-idf", "metric": "cka",
    "instruction": "go to the red ball",
}

_TRAINING = {"agents", "evaluations", "embeddings", "variants"}  # a run's key, and what hashes its checkpoint
_EVERYTHING = set(STAGES)
#: field -> (stages whose keys change, stages that gain or lose entries while the rest keep theirs).
#: "embeddings" are the agent spaces (their checkpoints) and the other spaces (sentences, pooling,
#: layer); "variants" every agent's extraction points (checkpoint, sentences, probes).
DEPENDS: dict[str, tuple[set[str], set[str]]] = {
    "seed": (_EVERYTHING, set()),
    "quick": (_EVERYTHING, {"agents", "evaluations", "variants", "embeddings"}),  # fewer seeds and models
    "levels": (_EVERYTHING, set()),
    "episodes_per_level": ({"demos"} | _TRAINING, set()),
    "workers": (set(), set()),
    "sentence_patience": ({"sentences", "embeddings", "variants", "bot"}, set()),
    "d_model": ({"agents", "evaluations", "embeddings", "variants"}, set()),
    "n_layers": ({"agents", "evaluations", "embeddings", "variants"}, set()),
    "memory_layers": ({"agents", "evaluations", "embeddings", "variants"}, set()),
    "steps": (_TRAINING, set()),
    "batch_episodes": (_TRAINING, set()),
    "lr": (_TRAINING, set()),
    "recurrent_lr": ({"agents", "evaluations", "variants"}, set()),  # the second learner's runs only
    "eval_episodes": ({"evaluations"}, set()),
    "agent_seeds": (set(), {"agents", "evaluations", "variants"}),  # the third agent dropped, the others kept
    "recurrent_seeds": (set(), {"agents", "evaluations", "variants"}),
    "profile": (set(), {"embeddings"}),  # other language models; the controls' sets are kept
    "models": (set(), {"embeddings"}),
    "pooling": ({"embeddings"}, set()),
    "layer": ({"embeddings"}, set()),
    "batch_size": (set(), set()),
    "probes_per_level": ({"variants", "bot"}, set()),
    **{name: (set(), set()) for name in ("reference", "k", "n_perm", "n_boot", "projections", "size_draws",
                                         "space_a", "space_b", "metric", "instruction")},
}


@functools.lru_cache(maxsize=None)
def _probe_spec(levels: tuple, per_level: int, seed: int) -> str:
    return cache.cache_key(points.probe_states(list(levels), per_level, seed).spec)


def _keys(cfg: StudyConfig, tmp_path) -> dict[str, dict]:
    """Every stage's keys for ``cfg``, without running anything.

    What a stage builds from a key upstream is stood in for by that key: a checkpoint's bytes by
    its run key (training is deterministic), the sentence list by the sentence set's key.
    """
    sentences_key = cfg.sentences_path(tmp_path).name
    sentences = [*SENTENCES, sentences_key]  # stands in for the set the key names

    def checkpoint(name: str, key: str):
        path = tmp_path / "ckpt" / f"{name}-{key}.pt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{name} {key}")  # the bytes are a function of the run key
        return path

    # each agent by its learner and place among the seeds (the study's agent, its replicate, ...)
    runs = {(ln, s - cfg.seed): cfg.run_key_of(ln, s) for ln, s in cfg.agent_seed_list}
    files = {"trained": checkpoint("agent", cfg.agent_key()), "untrained": checkpoint("untrained", cfg.agent_key()),
             "replicate": checkpoint("agent", cfg.agent_key(replicate=True))}
    embeddings = {m: encoders.embedding_file(m, sentences, cfg.pooling or None, cfg.layer if cfg.layer != "" else None,
                                             files, "cpu", tmp_path).name for m in cfg.model_keys}
    spec = _probe_spec(cfg.levels, cfg.effective("probes_per_level"), cfg.seed)
    probe_set = dataclasses.replace(_probes_stand_in(), spec={"spec": spec})
    return {
        "demos": {"": cfg.demos_key},
        "sentences": {"": sentences_key},
        "agents": runs,
        "evaluations": {ls: evaluation.evaluation_key(k, cfg.effective("eval_episodes"), cfg.seed + ls[1])
                        for ls, k in runs.items()},
        "embeddings": embeddings,
        "variants": {ls: points.variants_path(checkpoint("agent", k), sentences, probe_set).name
                     for ls, k in runs.items()},
        "bot": {"": points.bot_path(sentences, probe_set).name},
    }


def test_every_parameter_is_in_the_table():
    assert set(DEPENDS) == set(CHANGED) == set(StudyConfig.names())


@pytest.mark.parametrize("name", StudyConfig.names())
def test_each_parameter_moves_exactly_its_keys(name, tmp_path, fixed_versions, stubbed_weights):
    base = _keys(StudyConfig(), tmp_path)
    other = _keys(StudyConfig(**{name: CHANGED[name]}), tmp_path)
    changed = {st for st in STAGES if any(other[st][k] != v for k, v in base[st].items() if k in other[st])}
    resized = {st for st in STAGES if set(other[st]) != set(base[st])}
    assert (changed, resized) == DEPENDS[name]
