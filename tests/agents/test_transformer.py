"""Stage 2: the agent, behavioral cloning, evaluation and checkpoints."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from alignnb.agents.blocks import START_ACTION

from alignnb.core import streams
from alignnb.extract import encoders, spaces
from alignnb.agents import checkpoints
from alignnb.agents import evaluation, train
from alignnb.agents.blocks import Vocabulary
from alignnb.agents.recipes import AgentConfig
from alignnb.agents.transformer import Agent
from support import AGENT_SENTENCES as SENTENCES
from support import LEVELS, SMALL, make_agent



def test_embedding_shapes_and_layers():
    agent = make_agent()
    e = agent.embed_instructions(SENTENCES)
    assert e.shape == (4, SMALL.d_model) and e.dtype == np.float32 and np.isfinite(e).all()
    layers = agent.embed_instruction_layers(SENTENCES)
    assert set(layers) == {"last", 0, 1}
    assert all(v.shape == (4, SMALL.d_model) for v in layers.values())
    assert np.array_equal(layers["last"], e)


def test_padding_does_not_change_an_embedding():
    agent = make_agent()
    alone = np.stack([agent.embed_instructions([s])[0] for s in SENTENCES])
    batched = agent.embed_instructions(SENTENCES)  # padded to the longest sentence
    np.testing.assert_allclose(alone, batched, atol=1e-5)
    for layer in (0, 1):
        alone_l = np.stack([agent.embed_instruction_layers([s])[layer][0] for s in SENTENCES])
        np.testing.assert_allclose(alone_l, agent.embed_instruction_layers(SENTENCES)[layer], atol=1e-5)


def test_unknown_words_are_mapped_and_reported():
    agent = make_agent()
    with pytest.warns(UserWarning, match=r"2 unknown word\(s\).*'dog' x1.*'fetch' x1"):
        e = agent.embed_instructions(["fetch the red dog"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = agent.embed_instructions(["<unk> the red <unk>"])
    np.testing.assert_allclose(e, ref, atol=1e-6)
    assert np.abs(e).sum() > 0


def test_cached_acting_equals_the_training_forward(small_demos):
    agent = make_agent(AgentConfig(d_hidden=64, channels=16, memory_layers=2), sentences=small_demos.missions)
    rows = np.arange(8)
    batches = train.EpisodeBatches(small_demos, agent.vocab, agent.cfg.max_words, rows)
    b = batches.batch(np.arange(8))
    with torch.no_grad():
        full = train.forward_batch(agent, b)
        instr = agent.instruction(b["ids"])[b["mission"]]
    T, slot = b["max_len"], b["slot"].numpy()
    ep, t = slot // T, slot % T
    state = agent.new_memory_state(8, T + 1)
    stepped = torch.zeros_like(full)
    for step in range(T):
        sel = np.flatnonzero(t == step)
        images = torch.zeros(8, 7, 7, 3, dtype=torch.uint8)
        dirs = torch.zeros(8, dtype=torch.long)
        ins = torch.zeros(8, agent.cfg.d_model)
        images[ep[sel]], dirs[ep[sel]], ins[ep[sel]] = b["images"][sel], b["directions"][sel], instr[sel]
        stepped[sel] = agent.act(ins, images, dirs, state)[ep[sel]]
        state["prev"][ep[sel]] = b["actions"][sel]  # what the rollout records: the action taken
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)
    # the previous action is an input: the bot's actions fed as each next frame's, START_ACTION first
    assert (b["prev"][t == 0] == START_ACTION).all()
    later = np.flatnonzero(t > 0)
    assert torch.equal(b["prev"][later], b["actions"][later - 1])
    with torch.no_grad():
        blind = agent.forward_episodes(b["ids"], b["mission"], b["images"], b["directions"], b["slot"],
                                       b["n_episodes"], b["max_len"], None)
    assert not torch.allclose(blind[later], full[later], atol=1e-4)


def test_overfits_a_tiny_data_set(small_demos):
    train_rows = small_demos.episodes.index[small_demos.episodes["level"] == LEVELS[0]].to_numpy()[:16]
    vocab = Vocabulary.from_sentences(small_demos.missions)
    torch.manual_seed(0)
    agent = Agent(vocab, replace(SMALL, d_hidden=64, channels=32))
    data = train.EpisodeBatches(small_demos, vocab, agent.cfg.max_words, train_rows)
    opt = torch.optim.AdamW(agent.parameters(), lr=3e-3)
    b = data.batch(np.arange(len(data)))
    for _ in range(250):
        loss = torch.nn.functional.cross_entropy(train.forward_batch(agent, b), b["actions"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    v = train.validate(agent, data)
    assert v["accuracy"] >= 0.99 and v["loss"] < 0.05
    assert v["confusion"].sum() == data.n_frames


def test_same_seed_same_weights():
    vocab = Vocabulary.from_sentences(SENTENCES)
    streams.set_seed(5)
    a = Agent(vocab, SMALL).state_dict()
    streams.set_seed(5)
    b = Agent(vocab, SMALL).state_dict()
    streams.set_seed(6)
    c = Agent(vocab, SMALL).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_save_load_round_trip_and_mismatches(tmp_path):
    agent = make_agent()
    path = tmp_path / "a.pt"
    checkpoints.save_agent(agent, path, {"note": 1})
    again = checkpoints.load_agent(path, vocab=agent.vocab, agent_config=SMALL)
    np.testing.assert_array_equal(again.embed_instructions(SENTENCES), agent.embed_instructions(SENTENCES))
    with pytest.raises(ValueError, match="another vocabulary"):
        checkpoints.load_agent(path, vocab=Vocabulary.from_sentences(["go to the green box"]))
    with pytest.raises(ValueError, match="another agent configuration.*d_model"):
        checkpoints.load_agent(path, agent_config=replace(SMALL, d_model=64))
    with pytest.raises(FileNotFoundError, match="02_train_agent"):
        checkpoints.load_agent(tmp_path / "missing.pt")


def test_missing_demonstrations_and_runs_say_how_to_make_them(tmp_path):
    from alignnb.run import settings, stages

    with pytest.raises(FileNotFoundError, match="01_collect_demos"):
        stages.load_demos(settings.StudyConfig(episodes_per_level=123), tmp_path)
    with pytest.raises(FileNotFoundError, match="02_train_agent"):
        checkpoints.load_run(tmp_path / "agents" / "nothing")


def test_lr_schedule():
    tc = train.TrainConfig(steps=1000, warmup=100, lr=1e-3)
    assert train.lr_at(0, tc) == pytest.approx(1e-5)
    assert train.lr_at(99, tc) == pytest.approx(1e-3)
    assert train.lr_at(1000, tc) == pytest.approx(5e-5)
    assert all(train.lr_at(s, tc) >= train.lr_at(s + 1, tc) for s in range(100, 999))


QUICK_RECIPE = replace(train.TrainConfig(), steps=40, batch_episodes=32, warmup=10, val_every=20, check_every=0,
                       goal_checks=0,
                       checkpoint_every=20)


def test_train_resume_and_evaluate(small_demos, data_root, monkeypatch):
    tc = QUICK_RECIPE
    args = dict(data=small_demos, agent_config=SMALL, train_config=tc, seed=0, data_dir=data_root,
                final_eval_episodes=6, progress=False)
    run = train.train_agent(**args)
    assert run.path.name == checkpoints.run_key(small_demos.key, SMALL, tc, 0)
    assert (run.path / "agent.pt").exists() and (run.path / "untrained.pt").exists()
    assert not (run.path / "state.pt").exists()
    assert run.meta["metrics"]["steps"] == 40
    greedy = run.success_table()
    assert list(greedy["level"]) == LEVELS and (greedy["episodes"] == 6).all()
    assert len(run.episodes) == 6 * len(LEVELS) and (run.episodes["seed"] % 2 == 1).all()
    untrained_params = dict(run.untrained.named_parameters())
    assert any(not torch.equal(p, untrained_params[n]) for n, p in run.agent.named_parameters())
    # cached: a second call loads and does not train
    again = train.train_agent(**args)
    assert again.path == run.path and again.meta == run.meta

    # an interrupted run resumes from its checkpoint and ends with the same weights
    real_play = evaluation.play  # the final evaluation: interrupted there, after the last checkpoint
    monkeypatch.setattr(evaluation, "play", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train.train_agent(**args, force=True)
    state = torch.load(run.path / "state.pt", weights_only=False)
    assert state["step"] == 20
    monkeypatch.setattr(evaluation, "play", real_play)
    assert not checkpoints.is_finished(run.path)  # a forced rerun first withdrew the finished run
    resumed = train.train_agent(**args)
    for name, p in run.agent.state_dict().items():  # bit for bit: CPU training is deterministic
        assert torch.equal(resumed.agent.state_dict()[name], p), name


def test_replicate_is_the_same_recipe_from_the_next_seed(small_demos, data_root, tmp_path):
    from alignnb.run import settings, stages

    cfg = settings.StudyConfig(seed=7, episodes_per_level=30, quick=True, d_model=32, n_layers=1, memory_layers=1,
                            steps=20, eval_episodes=2, agent_seeds=1, recurrent_seeds=0)
    assert cfg.demos_key == small_demos.key  # derived from the parameters, no disk read
    agents = stages.train_agents(cfg, data_root, progress=False)
    run = agents[("transformer", 7)]
    assert list(agents) == [("transformer", 7)] and run.path.name == cfg.agent_key()
    sentences = list(small_demos.missions[:12])
    # before it exists, the replicate is skipped with a reason, never replaced by the agent itself
    done, _, skipped = spaces.study_embeddings(["agent", "agent-replicate"], sentences,
                                                 agent_checkpoints=cfg.agent_checkpoints(data_root),
                                                 data_dir=tmp_path, progress=False)
    assert list(done) == ["agent"] and "agent_seeds >= 2" in skipped["agent-replicate"]
    both = stages.train_agents(replace(cfg, agent_seeds=2), data_root, progress=False)
    again, twin = both[("transformer", 7)], both[("transformer", 8)]
    assert again.path == run.path and twin.path.name == cfg.agent_key(replicate=True) != run.path.name
    p, q = run.meta["params"], twin.meta["params"]
    assert q["seed"] == p["seed"] + settings.REPLICATE_OFFSET
    assert {k: v for k, v in q.items() if k != "seed"} == {k: v for k, v in p.items() if k != "seed"}
    assert any(not torch.equal(a, b) for a, b in zip(run.agent.parameters(), twin.agent.parameters()))
    emb = encoders.embed("agent-replicate", sentences, agent_checkpoints=cfg.agent_checkpoints(data_root),
                         data_dir=tmp_path, progress=False)
    np.testing.assert_allclose(emb.vectors, twin.agent.embed_instructions(sentences), atol=1e-6)


def test_gradients_are_bit_identical_between_two_backward_passes(small_demos):
    """Training is reproducible on the CPU: the same batch gives the same gradients, bit for bit.

    Advanced indexing (``x[index]``) accumulates its gradient over repeated rows in a
    thread-dependent order on the CPU; with it, two runs of one seed drifted apart.
    """
    torch.manual_seed(0)
    agent = Agent(Vocabulary.from_sentences(small_demos.missions), AgentConfig())
    data = train.EpisodeBatches(small_demos, agent.vocab, agent.cfg.max_words, small_demos.episodes.index.to_numpy())
    # 16 episodes, each 8 times over: every instruction's frames are spread over the whole
    # batch, so the threads that sum its gradient overlap (as in training batches)
    b = data.batch(np.tile(np.arange(16), 8))

    def gradients() -> list[torch.Tensor]:
        agent.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(train.forward_batch(agent, b), b["actions"]).backward()
        return [p.grad.clone() for p in agent.parameters()]

    first = gradients()
    for _ in range(5):
        assert all(torch.equal(g, h) for g, h in zip(first, gradients()))


def test_eval_episodes_is_its_own_cached_step(small_demos, data_root):
    """Asking another number of final episodes evaluates again (cached) and never retrains."""
    tc = QUICK_RECIPE
    args = dict(data=small_demos, agent_config=SMALL, train_config=tc, seed=0, data_dir=data_root, progress=False)
    run = train.train_agent(**args, final_eval_episodes=6)
    stamp = (run.path / "agent.pt").stat().st_mtime_ns
    fewer = train.train_agent(**args, final_eval_episodes=4)
    assert fewer.path == run.path and (run.path / "agent.pt").stat().st_mtime_ns == stamp  # not retrained
    assert (fewer.success_table()["episodes"] == 4).all() and (fewer.success_table("sampled")["episodes"] == 4).all()
    assert len(fewer.episodes) == 4 * len(LEVELS)
    assert fewer.meta["evaluation"]["episodes"] == 4
    key = evaluation.evaluation_key(run.path.name, 4, 0)
    assert fewer.meta["evaluation"]["key"] == key and evaluation.evaluation_dir(key, data_root).is_dir()
    # the run's own 6-episode evaluation is still what 6 serves
    same = train.train_agent(**args, final_eval_episodes=6)
    pd.testing.assert_frame_equal(same.success_table(), run.success_table())
    assert same.meta["evaluation"]["source"] == str(run.path)
    # the step plays exactly what a finishing run plays (same layouts, same threads, same numbers)
    unrecorded = replace(run, meta={**run.meta, "params": {**run.meta["params"], "final_eval_episodes": None}})
    replayed = evaluation.evaluated(unrecorded, 6, data_root)
    pd.testing.assert_frame_equal(replayed.success_table(), run.success_table())
    pd.testing.assert_frame_equal(replayed.success_table("sampled"), run.success_table("sampled"))
    pd.testing.assert_frame_equal(replayed.episodes, run.episodes)
    with pytest.raises(FileNotFoundError, match="eval_episodes=3"):
        evaluation.evaluated(run, 3, data_root, must_exist=True)


def test_random_init_redraws_a_seeds_untrained_twin(small_demos, data_root, tmp_path):
    """An init drawn from seed s is exactly training's untrained.pt of seed s; another seed differs."""
    run = train.train_agent(data=small_demos, agent_config=SMALL, train_config=QUICK_RECIPE, seed=0,
                            data_dir=data_root, final_eval_episodes=6, progress=False)
    same = checkpoints.load_agent(checkpoints.random_init(run.path / "untrained.pt", 0, tmp_path / "s0.pt"))
    other = checkpoints.load_agent(checkpoints.random_init(run.path / "untrained.pt", 101, tmp_path / "s101.pt"))
    twin = dict(run.untrained.named_parameters())
    assert all(torch.equal(p, twin[n]) for n, p in same.named_parameters())
    assert any(not torch.equal(p, twin[n]) for n, p in other.named_parameters())
    assert same.vocab.itos == run.untrained.vocab.itos
