"""The table-driven partial view equals minigrid's own, cell for cell, on every level."""

from __future__ import annotations

import numpy as np
import pytest
from minigrid.minigrid_env import MiniGridEnv
from minigrid.utils.baby_ai_bot import BabyAIBot

from alignnb.collect import demos, observation
from alignnb.collect.levels import DEFAULT_LEVELS


def _assert_same_view(reference, fast) -> None:
    grid_ref, mask_ref = MiniGridEnv.gen_obs_grid(reference)
    grid_fast, mask_fast = fast.gen_obs_grid()
    assert mask_fast.dtype == mask_ref.dtype and mask_fast.shape == mask_ref.shape
    np.testing.assert_array_equal(mask_fast, mask_ref)
    assert grid_fast == grid_ref  # minigrid's Grid.__eq__ compares the encodings
    image_ref, image_fast = MiniGridEnv.gen_obs(reference)["image"], fast.gen_obs()["image"]
    assert image_fast.dtype == np.uint8
    np.testing.assert_array_equal(image_fast, image_ref)


def _bare(level: str):
    import gymnasium as gym

    return gym.make(level).unwrapped  # minigrid's own methods, no table


@pytest.mark.parametrize("level", DEFAULT_LEVELS)
def test_random_walks_see_what_minigrid_sees(level):
    """Random actions (picking up, dropping, toggling doors) in 20 layouts: same view every step."""
    reference, fast = _bare(level), demos.make_env(level)
    rng = np.random.default_rng(7)
    steps = 0
    for seed in range(20):
        demos.reset_quietly(reference, seed)
        demos.reset_quietly(fast, seed)
        for _ in range(40):
            _assert_same_view(reference, fast)
            action = int(rng.integers(0, 6))
            obs_ref, *rest_ref = reference.step(action)
            obs_fast, *rest_fast = fast.step(action)
            np.testing.assert_array_equal(obs_fast["image"], obs_ref["image"])
            assert rest_fast[:3] == rest_ref[:3]
            steps += 1
            if rest_ref[1] or rest_ref[2]:
                break
    assert steps > 500


@pytest.mark.parametrize("level", DEFAULT_LEVELS)
def test_the_bot_acts_the_same_with_either_view(level):
    """The bot reads the view's mask: its actions are the same with minigrid's and the table's."""
    for seed in range(5):
        runs = []
        for env in (_bare(level), demos.make_env(level)):
            demos.reset_quietly(env, 100 + seed)
            bot, actions = BabyAIBot(env), []
            for _ in range(64):
                action = bot.replan()
                actions.append(int(action))
                _, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
            runs.append(actions)
        assert runs[0] == runs[1]


def test_the_carried_object_is_seen_at_the_agent_cell():
    env = demos.make_env("BabyAI-PickupLoc-v0")
    reference = _bare("BabyAI-PickupLoc-v0")
    for e in (env, reference):
        demos.reset_quietly(e, 3)
    from minigrid.core.world_object import Key

    env.carrying = reference.carrying = Key("red")
    _assert_same_view(reference, env)
    image = env.gen_obs()["image"]
    size = env.agent_view_size
    assert tuple(image[size // 2, size - 1]) == Key("red").encode()


def test_install_is_per_instance():
    """Only the environment passed to install changes; minigrid's class keeps its methods."""
    fast = demos.make_env("BabyAI-GoToLocal-v0")
    assert fast.gen_obs.__func__ is observation.gen_obs
    assert MiniGridEnv.gen_obs is not observation.gen_obs
    assert _bare("BabyAI-GoToLocal-v0").gen_obs.__func__ is MiniGridEnv.gen_obs
