"""Where in an agent: extraction points, behavioural embeddings, the bot, and the variant tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from alignnb.measure import analysis
from alignnb.collect import demos
from alignnb.measure import metrics
from alignnb.agents import checkpoints
from alignnb.extract import points
from alignnb.agents.blocks import Vocabulary
from alignnb.agents.recipes import AgentConfig
from alignnb.agents.transformer import Agent
from alignnb.extract.embeddings import Embeddings
from support import LEVELS

SENTENCES = ["go to the red ball", "go to a blue key", "pick up the green box", "open the yellow door",
             "put the red ball next to the blue key", "pick up a purple ball", "go to the grey box"]
TINY = AgentConfig(d_model=16, n_layers=2, n_heads=4, d_ff=32, cell_dim=8, channels=8, d_hidden=16,
                   memory_layers=1)


@pytest.fixture(scope="module")
def probes() -> points.ProbeSet:
    return points.probe_states(LEVELS, 3, seed=0)


def _agent(seed: int = 0) -> Agent:
    torch.manual_seed(seed)
    agent = Agent(Vocabulary.from_sentences(SENTENCES), TINY)
    with torch.no_grad():
        for p in agent.parameters():  # FiLM starts at zero: give every layer weights that matter
            p.add_(0.3 * torch.randn_like(p))
    return agent.eval()


def test_probe_states_are_seeded_first_states_of_fresh_layouts(probes):
    assert len(probes) == 3 * len(LEVELS) and probes.images.shape == (len(probes), 7, 7, 3)
    again = points.probe_states(LEVELS, 3, seed=0)
    assert again.seeds == probes.seeds and np.array_equal(again.images, probes.images)
    assert all(s % 2 == 1 for s in probes.seeds)  # odd: never a demonstration layout
    assert points.probe_states(LEVELS, 3, seed=1).seeds != probes.seeds
    env = demos.make_env(probes.levels[0])  # the first state of that layout, as a bot demonstration starts
    assert np.array_equal(demos.reset_quietly(env, probes.seeds[0])["image"], probes.images[0])


def test_first_step_is_the_first_step_of_acting():
    agent = _agent()
    e = agent.encode_instructions(SENTENCES[:2])
    images = torch.randint(0, 3, (2, 7, 7, 3), dtype=torch.uint8)
    directions = torch.tensor([0, 3])
    with torch.no_grad():
        h, logits = agent.first_step(e, images, directions)
        acted = agent.act(e, images, directions, agent.new_memory_state(2, 4))
    torch.testing.assert_close(logits, acted, atol=1e-5, rtol=1e-5)
    assert h.shape == (2, TINY.d_hidden)


def test_each_row_pairs_an_instruction_with_every_probe_in_order(probes):
    agent = _agent()
    behaviour, memory = points.probe_responses(agent, SENTENCES, probes, chunk=3)  # chunks of 3, 3, 1
    cube = behaviour.reshape(len(SENTENCES), len(probes), 7)
    images, dirs = torch.from_numpy(probes.images), torch.from_numpy(probes.directions)
    with torch.no_grad():
        for i in (0, 4, 6):
            e = agent.encode_instructions([SENTENCES[i]])
            for p in (0, len(probes) // 2, len(probes) - 1):
                h, logits = agent.first_step(e, images[p:p + 1], dirs[p:p + 1])
                np.testing.assert_allclose(cube[i, p], torch.softmax(logits, 1)[0].numpy(), atol=1e-6)
            hs = agent.first_step(e.expand(len(probes), -1), images, dirs)[0]
            np.testing.assert_allclose(memory[i], hs.mean(0).numpy(), atol=1e-5)


def test_behaviour_of_a_policy_that_ignores_the_instruction_is_constant(probes):
    agent = _agent()
    behaviour, memory = points.probe_responses(agent, SENTENCES, probes)
    assert behaviour.shape == (len(SENTENCES), len(probes) * 7)
    np.testing.assert_allclose(behaviour.reshape(len(SENTENCES), len(probes), 7).sum(-1), 1.0, atol=1e-5)
    assert np.ptp(behaviour, axis=0).max() > 1e-3  # a policy that reads the instruction: rows differ
    with torch.no_grad():  # cut every path from the instruction embedding to the policy
        obs = agent.observation
        for lin in (obs.film1.lin, obs.film2.lin, obs.instr):
            lin.weight.zero_()
    behaviour, memory = points.probe_responses(agent, SENTENCES, probes)
    np.testing.assert_allclose(behaviour, np.broadcast_to(behaviour[0], behaviour.shape), atol=1e-6)
    np.testing.assert_allclose(memory, np.broadcast_to(memory[0], memory.shape), atol=1e-6)


def test_film_parameters_and_behaviour_survive_an_absorbed_linear_map(probes):
    agent = _agent()
    before = points.extract(agent, SENTENCES, probes)
    d = TINY.d_model
    g = torch.Generator().manual_seed(3)
    A = torch.randn(d, d, generator=g) + 2 * torch.eye(d)  # invertible, far from orthogonal
    A_inv = torch.linalg.inv(A)
    with torch.no_grad():  # e' = A e, and every linear read-out of e takes A^-1 first: the same agent
        proj = agent.instruction.proj
        proj.weight.copy_(A @ proj.weight)
        proj.bias.copy_(A @ proj.bias)
        obs = agent.observation
        for lin in (obs.film1.lin, obs.film2.lin, obs.instr):
            lin.weight.copy_(lin.weight @ A_inv)
    after = points.extract(agent, SENTENCES, probes)
    np.testing.assert_allclose(after["film"], before["film"], atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(after["behaviour"], before["behaviour"], atol=1e-4)
    np.testing.assert_array_equal(after["words"], before["words"])
    # the embedding itself moved: its cosine geometry is not identified
    cos = lambda X: metrics.unit_rows(X) @ metrics.unit_rows(X).T  # noqa: E731
    assert np.abs(cos(after["embedding"]) - cos(before["embedding"])).max() > 0.05


def test_extraction_points_in_order_with_their_sizes(probes):
    agent = _agent()
    out = points.extract(agent, SENTENCES, probes)
    assert list(out) == points.extraction_points("transformer", TINY.n_layers)
    assert list(out) == ["words", "layer 1", "layer 2", "embedding", "film", "memory", "behaviour"]
    sizes = {name: v.shape[1] for name, v in out.items()}
    assert sizes["film"] == 4 * TINY.channels + TINY.d_hidden and sizes["behaviour"] == 7 * len(probes)
    assert all(v.dtype == np.float32 and v.shape[0] == len(SENTENCES) for v in out.values())
    np.testing.assert_allclose(out["embedding"], agent.embed_instructions(SENTENCES), atol=1e-6)


def test_agent_variants_are_cached_under_the_checkpoint_and_probes(probes, tmp_path):
    agent = _agent()
    checkpoints.save_agent(agent, tmp_path / "agent.pt")
    label = {"learner": "transformer", "seed": 0, "trained": True}
    first = points.agent_variants(tmp_path / "agent.pt", SENTENCES, probes, label, data_dir=tmp_path)
    assert points.is_cached(tmp_path / "agent.pt", SENTENCES, probes, tmp_path)
    assert not points.is_cached(tmp_path / "agent.pt", SENTENCES, points.probe_states(LEVELS, 2, 0), tmp_path)
    again = points.agent_variants(tmp_path / "agent.pt", SENTENCES, probes, label, data_dir=tmp_path)
    assert list(again) == list(first)
    for name in first:
        np.testing.assert_array_equal(again[name].vectors, first[name].vectors)
        assert again[name].meta["extraction"] == name and again[name].meta["seed"] == 0


def test_the_bot_acts_on_its_own_mission_and_reports_missing_objects():
    level = "BabyAI-GoToLocal-v0"
    env = demos.make_env(level)
    seed = 11
    episode = demos.run_bot_episode(env, seed, record=False)
    demos.reset_quietly(env, seed)
    assert points.bot_first_action(env, episode["mission"]) == int(episode["actions"][0])
    assert env.instrs.surface(env) == episode["mission"]  # the layout's own instruction is put back
    held = {(o.type, o.color) for o in env.grid.grid if o is not None and o.type in ("ball", "box", "key")}
    absent = next(f"go to the {c} {t}" for t in ("ball", "box", "key")
                  for c in ("red", "green", "blue", "purple", "yellow", "grey") if (t, c) not in held)
    assert points.bot_first_action(env, absent) == len(points.BOT_OUTCOMES) - 1


def test_bot_behaviour_is_one_hot_per_probe(probes, tmp_path):
    bot = points.bot_behaviour(SENTENCES, probes, data_dir=tmp_path)
    cube = bot.vectors.reshape(len(SENTENCES), len(probes), len(points.BOT_OUTCOMES))
    np.testing.assert_array_equal(cube.sum(-1), 1.0)
    assert points.bot_is_cached(SENTENCES, probes, tmp_path)
    np.testing.assert_array_equal(points.bot_behaviour(SENTENCES, probes, data_dir=tmp_path).vectors, bot.vectors)


def _emb(name: str, X: np.ndarray, sentences: list[str]) -> Embeddings:
    return Embeddings(name, sentences, X.astype(np.float32))


def test_variant_and_agreement_tables_on_known_spaces():
    rng = np.random.default_rng(0)
    n = 60
    sentences = [f"s{i}" for i in range(n)]
    base = rng.normal(size=(n, 8))
    noisy = base + 0.3 * rng.normal(size=(n, 8))
    other = rng.normal(size=(n, 8))
    vs = {("transformer", 0, "embedding"): _emb("a", base, sentences),
          ("transformer", 1, "embedding"): _emb("b", base, sentences),  # an identical second seed
          ("gru-film-lstm", 0, "embedding"): _emb("c", other, sentences),
          ("transformer-untrained", 0, "embedding"): _emb("d", other, sentences)}
    refs = {"lm": _emb("lm", noisy, sentences)}
    attrs = pd.DataFrame({"color": rng.choice(list("rgb"), n), "object": rng.choice(list("xyz"), n)},
                         index=sentences)
    table = analysis.variant_table(vs, refs, k=5, n_boot=50, attributes=attrs)
    assert list(table.columns) == ["learner", "seed", "extraction", "model", "k", "precision", "rnx", "ci_low",
                                   "ci_high"]
    row = table.iloc[0]
    assert row["precision"] == pytest.approx(metrics.precision_at_k(base, noisy, 5))
    assert row["ci_low"] <= row["precision"] <= row["ci_high"]
    agree = analysis.agreement_table(vs, k=5)
    seeds = agree[agree["pair"] == "seed to seed"]
    assert len(seeds) == 1 and seeds["precision"].iloc[0] == pytest.approx(1.0)
    assert len(agree[agree["pair"] == "learner to learner"]) == 2  # untrained twins are never a ceiling
    summary = analysis.variant_summary(table)
    t = summary[(summary["learner"] == "transformer") & (summary["model"] == "lm")].iloc[0]
    assert t["seeds"] == 2 and t["precision_sd"] == pytest.approx(0.0)
    lines = analysis.variant_markdown(summary, analysis.ceiling_summary(agree), ["lm"])
    assert lines[0] == "| learner | extraction | lm | seed to seed |"
    assert any(line.startswith("| transformer | embedding |") and line.endswith("± 0.000 | 1.000 |") for line in lines)  # one pair: no sd
