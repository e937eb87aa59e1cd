"""The agent: a transformer instruction encoder, a FiLM-conditioned observation encoder, an
episode memory (a causal transformer) and a policy head over minigrid's 7 actions.

    instruction --words--> token embeddings --transformer encoder--> mean over words
                --linear--> instruction embedding  e  (the "action-grounded" sentence vector)
    7x7x3 view --cell embeddings--> per-cell MLP with FiLM(e) twice --> flatten
                --linear (+ direction, + e, + previous action)--> x_t
    x_1..x_t --causal transformer over the episode (time embeddings)--> h_t --MLP--> 7 logits

The instruction embedding ``e`` is shaped only by the need to act: nothing in training asks
it to resemble any language model. ``embed_instructions`` exposes it (and each encoder
layer's mean-pooled output) for the alignment analysis.

Speed (measured on 2 CPU cores, see benchmarks/bench_train.py): there are only hundreds of
distinct instructions, so a batch encodes each distinct one once and indexes the result; the
observation encoder runs on the flat list of valid frames, and only the memory sees the padded
[episodes x time] layout. A per-cell MLP (a 1x1 convolution written as a matmul) was 2.3x
faster than 3x3 convolutions, and a causal transformer memory 3x faster than a GRU, whose
CPU backward pass is slow; BabyAI is partially observable, so memory is needed ("the ball
behind you" refers to the start position).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from alignnb.agents.recipes import AgentConfig  # re-exported
from alignnb.agents.blocks import (N_ACTIONS, N_COLORS, N_OBJECTS, N_STATES, START_ACTION, FiLM, InstructionEmbeddings, Vocabulary,
                                    cell_values, count_parameters, masked_mean, previous_action, state_previous)  # noqa: F401  (re-exported)

class InstructionEncoder(nn.Module):
    """Transformer encoder over words; the instruction embedding is a linear map of the
    mean (over real words, padding excluded) of the last layer's outputs."""

    def __init__(self, vocab_size: int, cfg: AgentConfig):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, cfg.d_model, padding_idx=0)
        self.pos = nn.Embedding(cfg.max_words, cfg.d_model)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout,
                                       batch_first=True, norm_first=True)
            for _ in range(cfg.n_layers)
        ])
        self.norm = nn.LayerNorm(cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, ids: torch.Tensor, return_layers: bool = False):
        mask = ids != 0  # [n, L] real words
        x = self.tok(ids) + self.pos.weight[: ids.shape[1]]
        pooled = [masked_mean(x, mask)]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=~mask)
            pooled.append(masked_mean(x, mask))
        x = self.norm(x)
        emb = self.proj(masked_mean(x, mask))
        if return_layers:
            return emb, pooled
        return emb


class ObservationEncoder(nn.Module):
    """7x7x3 symbolic view + direction, conditioned on the instruction embedding by FiLM."""

    def __init__(self, cfg: AgentConfig):
        super().__init__()
        c = cfg.cell_dim
        self.obj = nn.Embedding(N_OBJECTS, c)
        self.col = nn.Embedding(N_COLORS, c)
        self.state = nn.Embedding(N_STATES, c)
        self.cell1 = nn.Linear(c, cfg.channels)
        self.film1 = FiLM(cfg.d_model, cfg.channels)
        self.cell2 = nn.Linear(cfg.channels, cfg.channels)
        self.film2 = FiLM(cfg.d_model, cfg.channels)
        self.out = nn.Linear(cfg.channels * 49, cfg.d_hidden)
        self.direction = nn.Embedding(4, cfg.d_hidden)
        self.instr = nn.Linear(cfg.d_model, cfg.d_hidden)
        self.prev = nn.Embedding(N_ACTIONS + 1, cfg.d_hidden) if cfg.previous_action else None

    def forward(self, images: torch.Tensor, directions: torch.Tensor, instr: torch.Tensor,
                prev: torch.Tensor | None = None) -> torch.Tensor:
        """images uint8 [n,7,7,3], directions [n], instr [n, d_model] -> [n, d_hidden]; ``prev`` [n]: the action taken before each frame (``START_ACTION`` at an episode's first
        frame; None: every frame is a first one)."""
        cell = cell_values(images).view(len(images), 49)  # [n, 49]
        x = F.embedding(cell, self.cell_table())  # = cell1(obj + col + state), [n, 49, channels]
        x = F.relu(self.film1(x, instr))
        x = F.relu(self.film2(self.cell2(x), instr))
        x = self.out(x.flatten(1)) + self.direction(directions.long()) + self.instr(instr)
        return F.relu(x + previous_action(self.prev, prev, len(images)))

    def cell_table(self) -> torch.Tensor:
        """``cell1(obj + col + state)`` for all 198 cell values, [198, channels].

        The first cell layer is linear in the sum of the three attribute embeddings, so it is
        computed once per batch for the 198 possible cells instead of once per cell of every
        frame (49 per frame): the same function, about 10% less work per training step.
        """
        w = self.cell1.weight  # [channels, c]
        obj, col, state = self.obj.weight @ w.T, self.col.weight @ w.T, self.state.weight @ w.T
        table = obj[:, None, None] + col[None, :, None] + state[None, None, :] + self.cell1.bias
        return table.reshape(N_OBJECTS * N_COLORS * N_STATES, -1)


class EpisodeMemory(nn.Module):
    """Causal transformer over the frames of an episode so far, with learned time embeddings."""

    def __init__(self, cfg: AgentConfig):
        super().__init__()
        self.max_steps = cfg.max_steps
        self.time = nn.Embedding(cfg.max_steps, cfg.d_hidden)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(cfg.d_hidden, cfg.n_heads, 2 * cfg.d_hidden, cfg.dropout,
                                       batch_first=True, norm_first=True)
            for _ in range(cfg.memory_layers)
        ])
        self.norm = nn.LayerNorm(cfg.d_hidden)

    def forward_frames(self, x: torch.Tensor, slot: torch.Tensor, n_episodes: int, max_len: int) -> torch.Tensor:
        """The memory's output for flat frames: the same as :meth:`forward` on the padded layout.

        ``x`` [n, d] holds the valid frames of ``n_episodes`` episodes; ``slot`` [n] is each
        frame's position ``episode * max_len + t``. Every per-frame part of a layer (norms,
        projections, feed-forward) runs on the n valid frames only; just the attention itself
        reads the padded [episodes, heads, T, d/heads] layout. Episodes are right-padded and the
        attention is causal, so no valid frame ever attends to a padded one. With episodes of
        very different lengths (BabyAI's batches are about 3x padding), this avoids most of the
        memory's work on padding.
        """
        t = (slot % max_len).clamp_max(self.max_steps - 1)
        h = x + self.time(t)
        for layer in self.layers:
            attn = layer.self_attn
            qkv = F.linear(layer.norm1(h), attn.in_proj_weight, attn.in_proj_bias)  # [n, 3d]
            padded = qkv.new_zeros(n_episodes * max_len, qkv.shape[1]).index_copy(0, slot, qkv)
            q, k, v = padded.view(n_episodes, max_len, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if self.training else 0.0,
                                                 is_causal=True)  # [episodes, heads, T, d/heads]
            out = out.transpose(1, 2).reshape(n_episodes * max_len, -1).index_select(0, slot)
            h = h + layer.dropout1(attn.out_proj(out))
            h = h + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(h))))))
        return self.norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [episodes, T, d] (right-padded) -> [episodes, T, d]; step t sees steps <= t only."""
        T = x.shape[1]
        t = torch.arange(T).clamp_max(self.max_steps - 1)
        h = x + self.time(t)
        mask = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
        for layer in self.layers:
            h = layer(h, src_mask=mask, is_causal=True)
        return self.norm(h)


class Agent(InstructionEmbeddings, nn.Module):
    """Instruction encoder + observation encoder + causal transformer memory + policy head."""

    def __init__(self, vocab: Vocabulary, cfg: AgentConfig | None = None):
        super().__init__()
        self.vocab = vocab
        self.cfg = cfg or AgentConfig()
        self.instruction = InstructionEncoder(len(vocab), self.cfg)
        self.observation = ObservationEncoder(self.cfg)
        self.memory = EpisodeMemory(self.cfg)
        self.policy = nn.Sequential(nn.Linear(self.cfg.d_hidden, 128), nn.ReLU(), nn.Linear(128, N_ACTIONS))

    # -- training path ---------------------------------------------------------------
    def forward_episodes(self, ids: torch.Tensor, mission: torch.Tensor, images: torch.Tensor,
                         directions: torch.Tensor, slot: torch.Tensor, n_episodes: int, max_len: int,
                         prev: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for a batch of whole episodes given as flat frames (``prev``: each frame's previous action).

        ``ids`` [m, L]: the distinct instructions of the batch; ``mission`` [n]: each frame's
        row of ``ids``; ``slot`` [n]: each frame's position ``episode * max_len + t`` in the
        padded [n_episodes, max_len] layout that the memory reads. Returns [n, 7].
        """
        # index_select, not advanced indexing: the backward of ``x[index]`` on a CPU tensor
        # accumulates repeated rows in a thread-dependent order (torch documents it as
        # nondeterministic), which made two trainings with one seed drift apart by step 100;
        # index_select's backward (index_add_) is deterministic on the CPU.
        instr = self.instruction(ids).index_select(0, mission)
        feats = self.observation(images, directions, instr, prev)
        return self.policy(self.memory.forward_frames(feats, slot, n_episodes, max_len))

    # -- acting ----------------------------------------------------------------------
    def new_memory_state(self, n: int, max_len: int) -> dict[str, Any]:
        """Empty key/value caches for :meth:`act` over ``n`` environments of at most ``max_len`` steps."""
        shape = (n, self.cfg.n_heads, max_len, self.cfg.d_hidden // self.cfg.n_heads)
        layers = len(self.memory.layers)
        return {"k": [torch.zeros(shape) for _ in range(layers)], "v": [torch.zeros(shape) for _ in range(layers)],
                "lengths": torch.zeros(n, dtype=torch.long), "prev": torch.full((n,), START_ACTION)}

    @torch.no_grad()
    def act(self, instr: torch.Tensor, images: torch.Tensor, directions: torch.Tensor,
            state: dict[str, Any]) -> torch.Tensor:
        """One step for a batch of environments, with cached keys and values of past steps.

        Computes exactly what :meth:`forward_episodes` computes at the last step of each
        episode so far, in O(steps) instead of re-running the memory over the whole history.
        ``state`` (from :meth:`new_memory_state`) is updated in place; set
        ``state["lengths"][k] = 0`` when environment k starts a new episode, and after choosing
        the actions set ``state["prev"]`` to them (the next step's previous-action input, as
        :mod:`alignnb.agents.rollouts` does). Returns [n, 7].
        """
        lengths = state["lengths"]
        x = self.observation(images, directions, instr, state_previous(state))
        t = lengths.clamp_max(self.memory.max_steps - 1)
        x = x + self.memory.time(t)
        rows = torch.arange(len(x))
        n_heads = self.cfg.n_heads
        span = int(lengths.max()) + 1
        visible = torch.arange(span)[None, :] <= lengths[:, None]  # [n, span]
        for layer, K, V in zip(self.memory.layers, state["k"], state["v"]):
            attn = layer.self_attn
            q, k, v = F.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
            q, k, v = (z.view(len(x), n_heads, -1) for z in (q, k, v))
            K[rows, :, lengths] = k
            V[rows, :, lengths] = v
            scores = torch.einsum("nhd,nhtd->nht", q, K[:, :, :span]) / math.sqrt(q.shape[-1])
            scores = scores.masked_fill(~visible[:, None, :], float("-inf"))
            out = torch.einsum("nht,nhtd->nhd", scores.softmax(-1), V[:, :, :span]).reshape(len(x), -1)
            x = x + attn.out_proj(out)
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))
        lengths += 1
        return self.policy(self.memory.norm(x))

    def film_parameters(self, instr: torch.Tensor) -> torch.Tensor:
        """Everything the policy reads from instruction embeddings ``instr`` [n, d_model]:
        the gamma and beta of both FiLM layers and the direct instruction input of the frame
        feature, concatenated, [n, 4 * channels + d_hidden]. Each is a linear map of ``e``."""
        obs = self.observation
        return torch.cat([obs.film1.lin(instr), obs.film2.lin(instr), obs.instr(instr)], dim=1)

    def first_step(self, instr: torch.Tensor, images: torch.Tensor,
                   directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory output h [n, d_hidden], logits [n, 7]) at the first step of episodes that
        start from these observations: what :meth:`act` gives on a fresh memory state."""
        h = self.memory(self.observation(images, directions, instr).unsqueeze(1))[:, 0]
        return h, self.policy(h)


