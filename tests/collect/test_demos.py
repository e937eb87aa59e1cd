"""Stage 1: bot demonstrations and the data set on disk."""

from __future__ import annotations

import numpy as np
import pytest

from alignnb.core import streams
from alignnb.collect import demos
from support import LEVELS


def test_round_trip_matches_a_replay(small_demos):
    d = small_demos
    assert d.levels == LEVELS
    assert len(d.episodes) == 30 * len(LEVELS)
    assert d.images.shape == (len(d), 7, 7, 3) and d.images.dtype == np.uint8
    assert int(d.episodes.loc[d.episodes["success"], "length"].sum()) == len(d)
    # every frame belongs to the episode and mission the table says
    for row in [0, 31, 65, 119]:
        ep = d.episodes.loc[row]
        frames = demos.episode_frames(d, row)
        start = int(ep["start"])
        assert np.all(d.episode[start:start + ep["length"]] == row)
        assert np.array_equal(d.step[start:start + ep["length"]], np.arange(ep["length"]))
        assert {d.missions[i] for i in d.mission[start:start + ep["length"]]} == {ep["mission"]}
        assert ep["seed"] == streams.episode_seed(7, ep["level"], int(ep["index"]))
        # replaying the seed with the bot gives exactly the stored observations and actions
        replay = demos.run_bot_episode(demos.make_env(ep["level"]), int(ep["seed"]))
        assert replay["mission"] == ep["mission"]
        for k in ("images", "directions", "actions"):
            assert np.array_equal(replay[k], frames[k])
    # the rendered replay plays the same episode: same actions, one frame more than actions
    ep = d.episodes.loc[0]
    mission, rgb, actions = demos.render_episode(ep["level"], int(ep["seed"]))
    assert mission == ep["mission"] and actions == demos.episode_frames(d, 0)["actions"].tolist()
    assert len(rgb) == len(actions) + 1 and rgb[0].ndim == 3


def test_every_stored_episode_is_a_bot_success(small_demos):
    eps = small_demos.episodes
    assert eps["success"].all()  # the bot never fails on the local levels
    assert small_demos.meta["n_failed_episodes_excluded"] == 0
    assert (eps["start"] >= 0).all()


def test_one_worker_equals_two_workers(small_demos, tmp_path):
    one = demos.collect_demos(LEVELS, 30, seed=7, workers=1, data_dir=tmp_path, progress=False)
    assert one.path != small_demos.path
    for k in demos.ARRAYS:
        assert np.array_equal(getattr(one, k), getattr(small_demos, k)), k
    assert one.episodes.equals(small_demos.episodes)
    assert one.missions == small_demos.missions


def test_seed_changes_the_data_and_cache_hits(tmp_path):
    a = demos.collect_demos(LEVELS[:1], 12, seed=1, workers=1, data_dir=tmp_path, progress=False)
    stamp = (a.path / "meta.json").stat().st_mtime_ns
    again = demos.collect_demos(LEVELS[:1], 12, seed=1, workers=2, data_dir=tmp_path, progress=False)
    assert again.path == a.path and (a.path / "meta.json").stat().st_mtime_ns == stamp
    b = demos.collect_demos(LEVELS[:1], 12, seed=2, workers=1, data_dir=tmp_path, progress=False)
    assert b.path != a.path
    assert list(a.episodes["seed"]) != list(b.episodes["seed"])


def test_bot_failures_are_recorded_and_excluded(tmp_path, monkeypatch):
    real = demos.run_bot_episode

    def flaky(env, seed, record=True):
        ep = real(env, seed, record)
        if seed % 3 == 0:
            ep["success"] = False
        return ep

    monkeypatch.setattr(demos, "run_bot_episode", flaky)
    d = demos.collect_demos(LEVELS[:1], 40, seed=3, workers=1, data_dir=tmp_path, progress=False)
    failed = d.episodes[~d.episodes["success"]]
    assert len(failed) == d.meta["n_failed_episodes_excluded"] == int((d.episodes["seed"] % 3 == 0).sum()) > 0
    assert (failed["start"] == -1).all()
    assert len(d) == int(d.episodes.loc[d.episodes["success"], "length"].sum())
    assert set(np.unique(d.episode)) == set(d.episodes.index[d.episodes["success"]])
    with pytest.raises(ValueError, match="bot failure"):
        demos.episode_frames(d, int(failed.index[0]))


def test_worker_failure_names_level_and_seed_and_leaves_nothing(tmp_path, monkeypatch):
    def broken(env, seed, record=True):
        raise KeyError("no such object")

    monkeypatch.setattr(demos, "run_bot_episode", broken)
    with pytest.raises(demos.DemoCollectionError, match=r"BabyAI-GoToLocal-v0.*seed \d+"):
        demos.collect_demos(LEVELS[:1], 5, seed=0, workers=1, data_dir=tmp_path, progress=False)
    left = [p.name for p in (tmp_path / "demos").iterdir()] if (tmp_path / "demos").exists() else []
    assert all(name.endswith(".lock") for name in left), left  # at most the (empty) lock file, no data


def test_bad_input_is_explained(tmp_path):
    with pytest.raises(ValueError, match="BabyAI-GoToLocal-v0"):
        demos.collect_demos(["BabyAI-GoToLocl-v0"], 5, data_dir=tmp_path)
    with pytest.raises(ValueError, match="episodes_per_level"):
        demos.collect_demos(LEVELS[:1], 0, data_dir=tmp_path)
    with pytest.raises(ValueError, match="workers"):
        demos.collect_demos(LEVELS[:1], 5, workers=0, data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="collect_demos"):
        demos.load_demos(tmp_path / "nothing")


def test_no_sampling_chatter_reaches_stdout(capfd, tmp_path):
    demos.collect_demos(["BabyAI-PutNextLocal-v0"], 40, seed=5, workers=2, data_dir=tmp_path, progress=False)
    out = capfd.readouterr().out
    assert "Sampling rejected" not in out


def test_summaries(small_demos):
    s = demos.summarize(small_demos)
    assert list(s.index) == LEVELS and (s["episodes"] == 30).all() and (s["bot_success"] == 1).all()
    c = demos.action_counts(small_demos)
    assert int(c.to_numpy().sum()) == len(small_demos)
    assert c.loc["BabyAI-OpenDoorLoc-v0", "toggle"] >= 30  # every door episode ends with toggle
    assert c.loc["BabyAI-PutNextLocal-v0", "drop"] >= 30
