"""The one study configuration: validation, quick defined once, keys derived without disk reads."""

from __future__ import annotations

import dataclasses

import pytest

from alignnb.collect import demos
from alignnb.agents import checkpoints
from alignnb.run.settings import QUICK, REPLICATE_OFFSET, StudyConfig, configure

BAD = [
    ({"seed": 1.5}, "seed must be an integer"),
    ({"seed": -1}, "seed=-1"),
    ({"k": 0}, "k=0"),
    ({"k": True}, "k must be an integer"),
    ({"profile": "gpt"}, "unknown profile 'gpt'"),
    ({"models": "minilm-l6"}, "list of strings"),
    ({"models": ["minilm-l7"]}, "unknown model 'minilm-l7'"),
    ({"agent_seeds": "no"}, "an integer"),
    ({"levels": ["BabyAI-GoToLocl-v0"]}, "Did you mean BabyAI-GoToLocal-v0"),
    ({"levels": []}, "at least one level"),
    ({"pooling": "garbage"}, "pooling='garbage'"),
    ({"layer": "middle"}, "layer must be an integer"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"metric": "cosine"}, "metric must be one of"),
    ({"projections": ["tsne"]}, "each must be pca or umap"),
    ({"d_model": 130}, "multiple of the agent's 4 attention heads"),
    ({"sede": 0}, "unknown study parameter"),
]


@pytest.mark.parametrize("values,message", BAD, ids=[str(v) for v, _ in BAD])
def test_bad_values_are_refused_with_a_reason(values, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig.from_dict(values)


def test_values_are_normalised_and_frozen():
    cfg = StudyConfig.from_dict({"models": ["agent", "minilm-l6"], "lr": 1, "layer": 3})
    assert cfg.models == ("agent", "minilm-l6") and cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.layer == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 3
    assert StudyConfig.from_dict(cfg.to_dict()) == cfg  # a round trip through what a notebook receives
    assert configure({"k": 5, "seed": 2}, k=7) == StudyConfig(k=7, seed=2)  # the notebook's own value wins


def test_quick_is_defined_once():
    full, quick = StudyConfig(), StudyConfig(quick=True)
    for name, cap in QUICK.items():
        if name in StudyConfig.names():
            assert full.effective(name) == getattr(full, name) and quick.effective(name) == min(getattr(full, name), cap)
    assert quick.train_config.steps == QUICK["train_steps"] and full.train_config.steps == full.steps
    assert "gemma3-270m" in full.model_keys and "gemma3-270m" not in quick.model_keys
    assert StudyConfig(quick=True, models=("agent", "gemma3-270m")).model_keys == ["agent", "gemma3-270m"]
    assert quick.projection_methods == ["pca"] and full.projection_methods == ["pca", "umap"]


def test_keys_derive_from_upstream_keys():
    cfg = StudyConfig()
    assert cfg.demos_key == demos.demos_key(list(cfg.levels), 50_000, 0)
    assert cfg.agent_key() == checkpoints.run_key(cfg.demos_key, cfg.agent_config, cfg.train_config, 0)
    assert cfg.agent_key(replicate=True) == checkpoints.run_key(cfg.demos_key, cfg.agent_config, cfg.train_config,
                                                         REPLICATE_OFFSET)
    # a change upstream changes every key downstream of it, and only those
    more = dataclasses.replace(cfg, episodes_per_level=100)
    assert more.demos_key != cfg.demos_key and more.agent_key() != cfg.agent_key()
    longer = dataclasses.replace(cfg, steps=100)
    assert longer.demos_key == cfg.demos_key and longer.agent_key() != cfg.agent_key()
    assert dataclasses.replace(cfg, k=5).agent_key() == cfg.agent_key()
    # the seed seeds the demonstrations too: seed 1's agent is not seed 0's replicate (same data, seed + 1)
    other = dataclasses.replace(cfg, seed=1)
    assert other.demos_key != cfg.demos_key and other.agent_key() != cfg.agent_key(replicate=True)


def test_every_parameter_belongs_to_a_notebook():
    for name in StudyConfig.names():
        assert any(name in StudyConfig.names(nb) for nb in range(1, 6)), name
    assert {"seed", "quick"} <= set(StudyConfig.names(2)) and "profile" in StudyConfig.names(4)
    assert set(StudyConfig.names(4)) == {"seed", "quick", "profile", "reference", "k", "n_perm", "n_boot", "projections",
                                         "size_draws"}


def test_provenance_records_the_effective_values():
    quick = StudyConfig(quick=True)
    p1 = quick.provenance(1)
    assert p1["episodes_per_level"] == QUICK["episodes_per_level"] and p1["quick"] is True
    assert quick.provenance(2)["train"]["steps"] == QUICK["train_steps"]
    assert quick.provenance(4, models=["agent"])["models"] == ["agent"]
    assert StudyConfig().provenance(3)["agent_run"] == StudyConfig().agent_key()


def test_spaces_shown_must_be_among_the_study_models():
    with pytest.raises(ValueError, match="reference='agent' is not among the study's spaces"):
        StudyConfig(models=("smollm2-135m", "minilm-l6"))
    cfg = StudyConfig(models=("agent", "minilm-l6"), space_b="minilm-l6")
    assert cfg.model_keys == ["agent", "minilm-l6"]
