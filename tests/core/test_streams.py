"""The named random streams: known values (today's derivations), disjointness, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from alignnb.core import streams


def test_layout_streams_keep_the_derivations_the_figures_were_made_with():
    """The test, check and probe layouts are episode_seed of their bases; demonstrations even, the rest odd."""
    assert streams.layout_seed("test", 3, "BabyAI-GoToLocal-v0", 7) == streams.episode_seed(3, "BabyAI-GoToLocal-v0", 7,
                                                                                           "eval")
    assert streams.layout_seed("checks", 3, "L", 7, step=500) == streams.episode_seed(3 + 10_000 + 500, "L", 7, "eval")
    assert streams.layout_seed("probes", 3, "L", 7) == streams.episode_seed(3 + 1_000_000, "L", 7, "eval")
    assert streams.layout_seed("demos", 3, "L", 7) == streams.episode_seed(3, "L", 7, "demo")
    demo = [streams.layout_seed("demos", 0, "L", i) for i in range(200)]
    evals = [streams.layout_seed(name, 0, "L", i) for name in ("test", "checks", "probes") for i in range(200)]
    assert all(s % 2 == 0 for s in demo) and all(s % 2 == 1 for s in evals)
    assert not set(demo) & set(evals)


def test_generator_streams_are_those_of_the_earlier_modules():
    for name, key in (("split", 1), ("batches", 2)):
        assert streams.rng(name, 5).integers(1 << 30) == np.random.default_rng([5, key]).integers(1 << 30)
    assert streams.rng("analysis", 5).random() == np.random.default_rng(5).random()
    assert streams.rng("analysis", 5, 40).random() == np.random.default_rng([5, 40]).random()
    gen = np.random.default_rng(1)
    assert streams.rng("analysis", gen) is gen  # a caller's own generator passes through


def test_split_and_batch_streams_are_disjoint_draws():
    a, b = streams.rng("split", 0).random(1000), streams.rng("batches", 0).random(1000)
    assert not np.allclose(a, b) and abs(np.corrcoef(a, b)[0, 1]) < 0.1


def test_check_disjoint_passes_for_the_study_and_catches_an_overlap():
    streams.check_disjoint(0, range(0, 6001, 500), n_agent_seeds=5)
    with pytest.raises(ValueError, match="step"):
        streams.layout_base("checks", 0, step=streams.PROBE_OFFSET)  # would reach the probe layouts


def test_unknown_streams_and_wrong_kinds_are_errors():
    with pytest.raises(KeyError, match="unknown random stream 'shuffle'"):
        streams.rng("shuffle", 0)
    with pytest.raises(ValueError, match="layout stream"):
        streams.rng("probes", 0)
    with pytest.raises(ValueError, match="not a layout stream"):
        streams.layout_seed("split", 0, "L", 0)
    with pytest.raises(ValueError, match="integer"):
        streams.rng("split", 1.5)


def test_set_seed_makes_torch_numpy_and_python_repeat():
    import random

    import torch

    streams.set_seed(11)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    streams.set_seed(11)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
