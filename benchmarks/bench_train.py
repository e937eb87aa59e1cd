"""Training and evaluation throughput of the agent, beside a naive per-frame transformer.

Measured side by side in one run, on the same demonstrations:
  naive        one transformer over 62 tokens per frame (49 cells + instruction words +
               direction + CLS), d=128, 2 layers, the instruction re-encoded in every frame,
               batch 256 frames; no memory
  alignnb      the study's agent: each distinct instruction encoded once per batch, per-cell
               MLP with FiLM, causal transformer memory over whole episodes
Both are timed for the same wall-clock budget (forward + backward + AdamW step); throughput
is frames/s. Evaluation: episodes/s of rollouts.evaluate (batched environments, cached memory).

    .venv/bin/python benchmarks/bench_train.py [seconds_per_model]
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from alignnb import config, demos, rollouts, train
from alignnb.agent import Agent, Vocabulary, count_parameters


class NaivePerFrameTransformer(nn.Module):
    """Every frame is a sequence of cell tokens + word tokens + direction + CLS."""

    def __init__(self, vocab_size: int, d: int = 128, layers: int = 2, max_words: int = 10):
        super().__init__()
        self.cell = nn.ModuleList([nn.Embedding(11, d), nn.Embedding(6, d), nn.Embedding(3, d)])
        self.word = nn.Embedding(vocab_size, d, padding_idx=0)
        self.direction = nn.Embedding(4, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, 49 + max_words + 2, d))
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, 4, 2 * d, 0.0, batch_first=True),
                                             layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 7)
        self.max_words = max_words

    def forward(self, images, directions, words):
        im = images.long().view(len(images), 49, 3)
        cells = sum(emb(im[..., i]) for i, emb in enumerate(self.cell))
        x = torch.cat([self.cls.expand(len(images), -1, -1), cells, self.word(words),
                       self.direction(directions)[:, None]], 1) + self.pos
        pad = torch.cat([torch.zeros(len(images), 50, dtype=torch.bool), words == 0,
                         torch.zeros(len(images), 1, dtype=torch.bool)], 1)
        return self.head(self.encoder(x, src_key_padding_mask=pad)[:, 0])


def time_naive(data, vocab, seconds):
    torch.manual_seed(0)
    model = NaivePerFrameTransformer(len(vocab))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    words = vocab.encode(data.missions, 10)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(np.array(data.images))
    dirs = torch.from_numpy(np.asarray(data.directions).astype(np.int64))
    actions = torch.from_numpy(np.asarray(data.actions).astype(np.int64))
    mission = torch.from_numpy(np.asarray(data.mission).astype(np.int64))
    frames, steps, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = torch.from_numpy(rng.integers(0, len(actions), 256))
        loss = F.cross_entropy(model(images[idx], dirs[idx], words[mission[idx]]), actions[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        frames, steps = frames + 256, steps + 1
    dt = time.perf_counter() - t0
    return count_parameters(model), steps / dt, frames / dt


def time_agent(data, vocab, seconds):
    torch.manual_seed(0)
    agent = Agent(vocab)
    opt = torch.optim.AdamW(agent.parameters(), 1e-3)
    rows, _ = train.split_episodes(data, 0.0, 0)
    batches = train.EpisodeBatches(data, vocab, agent.cfg.max_words, rows)
    rng = np.random.default_rng(0)
    frames, steps, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = batches.batch(rng.integers(0, len(batches), 96))
        loss = F.cross_entropy(train.forward_batch(agent, b), b["actions"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        frames, steps = frames + len(b["actions"]), steps + 1
    dt = time.perf_counter() - t0
    return agent, count_parameters(agent), steps / dt, frames / dt


def main(seconds: float = 30.0) -> None:
    levels = list(config.DEFAULT_LEVELS)
    with tempfile.TemporaryDirectory() as tmp:
        data = demos.collect_demos(levels, 500, 0, None, tmp, progress=False)
        vocab = Vocabulary.from_sentences(data.missions)
        n_par, s_naive, f_naive = time_naive(data, vocab, seconds)
        agent, a_par, s_agent, f_agent = time_agent(data, vocab, seconds)
    t0 = time.perf_counter()
    table, per = rollouts.evaluate(agent, levels, 100, seed=0)
    dt = time.perf_counter() - t0
    print(f"training throughput, {seconds:.0f} s each, torch threads = {torch.get_num_threads()}")
    print(f"{'':34s}{'params':>10s}{'steps/s':>9s}{'frames/s':>10s}{'ratio':>8s}")
    print(f"{'naive per-frame transformer (b=256)':34s}{n_par:10,d}{s_naive:9.2f}{f_naive:10.0f}{1:8.1f}x")
    print(f"{'alignnb agent (96 episodes/batch)':34s}{a_par:10,d}{s_agent:9.2f}{f_agent:10.0f}{f_agent / f_naive:8.1f}x")
    print(f"evaluation (barely trained agent, so long failing episodes): {len(per)} episodes in {dt:.1f} s = "
          f"{len(per) / dt:.1f} episodes/s, {per['length'].sum() / dt:.0f} env steps/s")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0)
