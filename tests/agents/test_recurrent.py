"""The second learner: the BabyAI-1.1-style GRU + FiLM + LSTM agent, a drop-in for the transformer agent."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from torch.nn import functional as F

from alignnb.agents import checkpoints
from alignnb.agents import train
from alignnb.agents.blocks import N_COLORS, N_OBJECTS, N_STATES, START_ACTION
from alignnb.agents.learners import config_from_dict
from alignnb.agents.recipes import RecurrentConfig
from alignnb.agents.recurrent import RecurrentAgent
import support
from support import LEVELS
from support import AGENT_SENTENCES as SENTENCES

TINY = RecurrentConfig(d_model=16, cell_dim=8, channels=8, film_blocks=2, d_hidden=16)


def make_agent(cfg=TINY, seed=0, sentences=SENTENCES):
    return support.make_agent(cfg, seed, sentences)


def random_views(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n valid symbolic views (object < 11, colour < 6, state < 3) and directions."""
    images = torch.stack([torch.randint(0, high, (n, 7, 7), generator=gen) for high in (N_OBJECTS, N_COLORS, N_STATES)],
                         dim=-1).to(torch.uint8)
    return images, torch.randint(0, 4, (n,), generator=gen)


def test_config_names_its_learner_and_dispatches():
    assert RecurrentConfig.learner == "gru-film-lstm" == TINY.to_dict()["learner"]
    assert config_from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="gru-film-lstm"):
        RecurrentConfig(learner="transformer")
    agent = make_agent()
    assert isinstance(agent, RecurrentAgent)
    layers = agent.embed_instruction_layers(SENTENCES)
    assert set(layers) == {"last", 0}
    assert all(v.shape == (4, TINY.d_model) and v.dtype == np.float32 for v in layers.values())
    np.testing.assert_array_equal(agent.embed_instructions(SENTENCES, layer=0), layers[0])
    np.testing.assert_allclose(agent.word_embedding_mean(SENTENCES), layers[0], atol=1e-7)


def test_padding_and_batch_do_not_change_the_gru_embedding():
    agent = make_agent()
    short = "open the door"
    alone = agent.embed_instruction_layers([short])
    longest = max(SENTENCES, key=lambda s: len(s.split()))
    batched = agent.embed_instruction_layers([longest, short, "go to the red ball"])  # with longer sentences
    for layer in ("last", 0):
        np.testing.assert_allclose(batched[layer][1], alone[layer][0], atol=1e-6)
    # the GRU state is read at the last real word, not after the padding: it is not the padded run's
    ids = agent.vocab.encode([short], agent.cfg.max_words)
    with torch.no_grad():
        after_padding = agent.instruction.gru(agent.instruction.tok(ids))[1][0]
    assert not np.allclose(after_padding.numpy(), alone["last"], atol=1e-3)
    with pytest.warns(UserWarning, match=r"1 unknown word\(s\).*'dog' x1"):
        agent.embed_instructions(["go to the red dog"])


def test_acting_step_by_step_equals_the_training_forward():
    agent = make_agent()
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 2, 7, 1]  # padded episodes of different lengths
    n_ep, T = len(lengths), max(lengths)
    ids = agent.vocab.encode(SENTENCES, agent.cfg.max_words)
    mission = torch.tensor([i for i, n in enumerate(lengths) for _ in range(n)])
    slot = torch.tensor([i * T + t for i, n in enumerate(lengths) for t in range(n)])
    images, dirs = random_views(gen, len(slot))
    ep, t = (slot // T).numpy(), (slot % T).numpy()
    acts = torch.randint(0, 7, (len(slot),), generator=gen)
    prev = torch.where(torch.from_numpy(t) == 0, START_ACTION, acts.roll(1))  # each frame's previous action
    with torch.no_grad():
        full = agent.forward_episodes(ids, mission, images, dirs, slot, n_ep, T, prev)
        instr = agent.instruction(ids)
        assert not torch.allclose(agent.forward_episodes(ids, mission, images, dirs, slot, n_ep, T)[t > 0],
                                  full[t > 0], atol=1e-4)  # the previous action is an input
    # a used state: every row must start its episode afresh when lengths is 0
    state = agent.new_memory_state(n_ep, T + 1)
    state["h"].normal_(generator=gen)
    state["c"].normal_(generator=gen)
    stepped = torch.zeros_like(full)
    for step in range(T):
        sel = np.flatnonzero(t == step)
        blank_images, blank_dirs = torch.zeros(n_ep, 7, 7, 3, dtype=torch.uint8), torch.zeros(n_ep, dtype=torch.long)
        blank_images[ep[sel]], blank_dirs[ep[sel]] = images[sel], dirs[sel]
        stepped[sel] = agent.act(instr, blank_images, blank_dirs, state)[ep[sel]]
        state["prev"][ep[sel]] = acts[sel]
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)
    assert state["lengths"].tolist() == [T] * n_ep
    # an episode that ends is reset by the rollout code (lengths = 0): the next step is a first step again
    state["lengths"][:] = 0
    again = agent.act(instr, images[[0, 5, 7, 14]], dirs[[0, 5, 7, 14]], state)  # each episode's first frame
    torch.testing.assert_close(again, full[[0, 5, 7, 14]], atol=1e-5, rtol=1e-5)


def test_film_parameters_depend_on_the_instruction_and_first_step_is_a_fresh_act():
    agent = make_agent()
    instr = agent.encode_instructions(SENTENCES)
    film = agent.film_parameters(instr)
    assert film.shape == (4, 2 * TINY.channels * TINY.film_blocks)
    assert torch.cdist(film, film)[~torch.eye(4, dtype=torch.bool)].min() > 1e-3  # distinct instructions
    # they are exactly the FiLM layers' gamma and beta: the policy reads the instruction only there
    gamma, beta = agent.observation.films[1].lin(instr).chunk(2, dim=1)
    torch.testing.assert_close(film[:, 2 * TINY.channels:], torch.cat([gamma, beta], 1))
    images, dirs = random_views(torch.Generator().manual_seed(1), 4)
    h, logits = agent.first_step(instr, images, dirs)
    assert h.shape == (4, TINY.d_hidden) and logits.shape == (4, 7)
    torch.testing.assert_close(logits, agent.act(instr, images, dirs, agent.new_memory_state(4, 10)))
    # another instruction on the same views changes the step
    _, other = agent.first_step(instr.roll(1, 0), images, dirs)
    assert (other - logits).abs().max() > 1e-4


def test_checkpoint_round_trip(tmp_path):
    agent = make_agent()
    path = tmp_path / "recurrent.pt"
    checkpoints.save_agent(agent, path, {"note": 1})
    again = checkpoints.load_agent(path, vocab=agent.vocab, agent_config=TINY)
    assert type(again) is RecurrentAgent and again.cfg == TINY
    np.testing.assert_array_equal(again.embed_instructions(SENTENCES), agent.embed_instructions(SENTENCES))
    images, dirs = random_views(torch.Generator().manual_seed(2), 4)
    instr = agent.encode_instructions(SENTENCES).detach()
    torch.testing.assert_close(again.act(instr, images, dirs, again.new_memory_state(4, 4)),
                               agent.act(instr, images, dirs, agent.new_memory_state(4, 4)), atol=0, rtol=0)
    with pytest.raises(ValueError, match="another agent configuration.*channels"):
        checkpoints.load_agent(path, agent_config=replace(TINY, channels=16))


def test_gradients_are_bit_identical_between_two_backward_passes(small_demos):
    agent = make_agent(sentences=small_demos.missions).train()
    data = train.EpisodeBatches(small_demos, agent.vocab, agent.cfg.max_words, small_demos.episodes.index.to_numpy())
    b = data.batch(np.tile(np.arange(16), 4))  # each instruction's frames spread over the batch

    def gradients() -> list[torch.Tensor]:
        agent.zero_grad(set_to_none=True)
        F.cross_entropy(train.forward_batch(agent, b), b["actions"]).backward()
        return [p.grad.clone() for p in agent.parameters()]

    first = gradients()
    assert all(torch.equal(g, h) for g, h in zip(first, gradients()))


def test_the_training_loop_fits_a_tiny_data_set(small_demos, tmp_path):
    table = small_demos.episodes
    tiny = replace(small_demos, episodes=table[(table["level"] == LEVELS[0]) & table["success"]].iloc[:16])
    tc = train.TrainConfig(steps=200, batch_episodes=16, lr=3e-3, warmup=5, val_fraction=0.0, val_every=200,
                           check_every=0, goal_checks=0, checkpoint_every=100)
    # tmp_path: the subset has the cache key of the whole data set, so it gets a cache of its own
    run = train.train_agent(tiny, TINY, tc, seed=0, data_dir=tmp_path, final_eval_episodes=2, progress=False)
    assert type(run.agent) is RecurrentAgent and type(run.untrained) is RecurrentAgent and run.agent.cfg == TINY
    assert run.meta["params"]["agent"]["learner"] == "gru-film-lstm" and run.meta["metrics"]["steps"] == 200
    assert list(run.success_table()["level"]) == LEVELS
    data = train.EpisodeBatches(tiny, run.agent.vocab, TINY.max_words, tiny.episodes.index.to_numpy())
    before, after = train.validate(run.untrained, data), train.validate(run.agent, data)
    assert before["loss"] > 1.5  # about log(7) at initialisation
    assert after["loss"] < 0.5 * before["loss"] and after["accuracy"] > 0.75
    logged = run.history["train_loss"].dropna()  # the running training loss at steps 100 and 200
    assert len(logged) == 2 and logged.iloc[-1] < logged.iloc[0] < before["loss"]
