"""The second learner: a BabyAI-1.1-style agent (Hui et al. 2020, "BabyAI 1.1", arXiv 2007.12770)
with a GRU instruction encoder, a FiLM-conditioned convolution over the view and LSTM memory.

    instruction --words--> word embeddings --GRU--> final hidden state at the last real word
                = instruction embedding  e
    7x7x3 view --cell embeddings (object + colour + state)--> conv3x3 --ReLU-->
                film_blocks x [ x = x + ReLU(FiLM(conv3x3(x), e)) ] --flatten the 7x7 cells-->
                --linear (+ direction and previous-action embeddings), ReLU--> x_t
    x_1..x_t --LSTM--> h_t --linear, tanh, linear--> 7 logits

It is a drop-in replacement for :class:`alignnb.agents.transformer.Agent` (same methods, same training
loop and rollouts; :func:`alignnb.agents.transformer.build_agent` builds it when ``cfg.learner`` is
``"gru-film-lstm"``). As in BabyAI 1.1, the instruction reaches the policy only through the
FiLM layers and the image input is a bag of attribute embeddings.

Smaller than BabyAI 1.1, so that a training step on one CPU thread costs about what the
transformer agent's step costs: 32 channels and 32-dimensional cell embeddings instead of 128
(a 3x3 convolution's cost grows with the square of the channels; the convolutions are most of
this agent's step), one convolution in the stem and in each FiLM block instead of two, and no
batch normalisation (an extra pass over every activation, and it makes a frame's features
depend on the other frames of its batch in training mode). Unlike BabyAI 1.1, the view's
direction is added to the frame feature, as the transformer agent also reads it.

The read-out of the feature map differs from BabyAI 1.1 by default. Its global max-pool over
the 7x7 cells (``readout="max"``) keeps what is in view but not where; BabyAI 1.1 recovers the
where with 128 channels and six convolutions. At this size it learned far more slowly: on a
small demonstration set, 300 steps reached a training loss of 0.79 with the max-pool against
0.06 with the cells flattened into the linear map (``readout="flatten"``, the default, as the
transformer agent reads its cells).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from alignnb.agents.recipes import RecurrentConfig
from alignnb.agents.blocks import (N_ACTIONS, N_COLORS, N_OBJECTS, N_STATES, START_ACTION, FiLM, InstructionEmbeddings,
                                    Vocabulary, cell_values, masked_mean, previous_action, state_previous)


class GRUInstructionEncoder(nn.Module):
    """Word embeddings read by a GRU; the instruction embedding is its hidden state after the last real word."""

    def __init__(self, vocab_size: int, cfg: RecurrentConfig):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, cfg.d_model, padding_idx=0)
        self.gru = nn.GRU(cfg.d_model, cfg.d_model, batch_first=True)

    def forward(self, ids: torch.Tensor,
                return_layers: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """ids [n, L] right-padded with 0 -> e [n, d_model]; with ``return_layers`` also
        ``[mean of the word embeddings over real words]`` (layer 0)."""
        mask = ids != 0
        x = self.tok(ids)
        # packed: the GRU stops at each sentence's last word, so padding never enters the state
        packed = pack_padded_sequence(x, mask.sum(1).cpu(), batch_first=True, enforce_sorted=False)
        emb = self.gru(packed)[1][0]  # final hidden state [n, d_model], in the order of ``ids``
        if return_layers:
            return emb, [masked_mean(x, mask)]
        return emb


@torch.no_grad()
def babyai_init(linear: nn.Linear) -> None:
    """BabyAI's ``initialize_parameters`` for a linear map: normal weights, each row scaled to
    unit norm, zero bias. On a FiLM map it makes the untrained network respond to the
    instruction (a zero start makes every untrained FiLM the identity, so the untrained
    agent's memory and behaviour would not depend on the instruction at all)."""
    linear.weight.normal_(0.0, 1.0)
    linear.weight.div_(linear.weight.pow(2).sum(1, keepdim=True).sqrt())
    linear.bias.zero_()


class FiLM2d(FiLM):
    """:class:`alignnb.agents.transformer.FiLM` for feature maps: y = (1 + gamma(e)) * x + beta(e) per channel."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x [n, C, H, W], cond [n, d] -> [n, C, H, W]."""
        gamma, beta = self.lin(cond)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * x + beta


class ConvObservationEncoder(nn.Module):
    """7x7x3 symbolic view + direction -> [n, d_hidden], conditioned on the instruction by FiLM."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        c = cfg.cell_dim
        self.obj = nn.Embedding(N_OBJECTS, c)
        self.col = nn.Embedding(N_COLORS, c)
        self.state = nn.Embedding(N_STATES, c)
        self.stem = nn.Conv2d(c, cfg.channels, 3, padding=1)
        self.convs = nn.ModuleList([nn.Conv2d(cfg.channels, cfg.channels, 3, padding=1)
                                    for _ in range(cfg.film_blocks)])
        self.films = nn.ModuleList([FiLM2d(cfg.d_model, cfg.channels) for _ in range(cfg.film_blocks)])
        if cfg.film_init == "babyai":
            for film in self.films:
                babyai_init(film.lin)
        self.readout = cfg.readout
        self.out = nn.Linear(cfg.channels * (49 if cfg.readout == "flatten" else 1), cfg.d_hidden)
        self.direction = nn.Embedding(4, cfg.d_hidden)
        self.prev = nn.Embedding(N_ACTIONS + 1, cfg.d_hidden) if cfg.previous_action else None

    def forward(self, images: torch.Tensor, directions: torch.Tensor, instr: torch.Tensor,
                prev: torch.Tensor | None = None) -> torch.Tensor:
        """images uint8 [n,7,7,3], directions [n], instr [n, d_model] -> [n, d_hidden]; ``prev`` [n]: the action taken before each frame (``START_ACTION`` at an episode's first
        frame; None: every frame is a first one)."""
        x = F.embedding(cell_values(images), self.cell_table()).permute(0, 3, 1, 2)  # [n, cell_dim, 7, 7]
        x = F.relu(self.stem(x))
        for conv, film in zip(self.convs, self.films):
            x = x + F.relu(film(conv(x), instr))
        # flatten: [n, channels * 49], where each feature is; max: BabyAI 1.1's global max-pool, [n, channels]
        read = x.flatten(1) if self.readout == "flatten" else x.amax(dim=(2, 3))
        return F.relu(self.out(read) + self.direction(directions.long()) + previous_action(self.prev, prev, len(images)))

    def cell_table(self) -> torch.Tensor:
        """``obj + col + state`` embeddings for all 198 cell values, [198, cell_dim]: one lookup per cell."""
        table = self.obj.weight[:, None, None] + self.col.weight[None, :, None] + self.state.weight[None, None, :]
        return table.reshape(N_OBJECTS * N_COLORS * N_STATES, -1)


class RecurrentAgent(InstructionEmbeddings, nn.Module):
    """GRU instruction encoder + FiLM convolutional observation encoder + LSTM memory + policy head."""

    def __init__(self, vocab: Vocabulary, cfg: RecurrentConfig | None = None):
        super().__init__()
        self.vocab = vocab
        self.cfg = cfg or RecurrentConfig()
        self.instruction = GRUInstructionEncoder(len(vocab), self.cfg)
        self.observation = ConvObservationEncoder(self.cfg)
        self.memory = nn.LSTM(self.cfg.d_hidden, self.cfg.d_hidden, batch_first=True)
        self.drop = nn.Dropout(self.cfg.dropout)
        self.policy = nn.Sequential(nn.Linear(self.cfg.d_hidden, 64), nn.Tanh(), nn.Linear(64, N_ACTIONS))

    # -- training path ---------------------------------------------------------------
    def forward_episodes(self, ids: torch.Tensor, mission: torch.Tensor, images: torch.Tensor,
                         directions: torch.Tensor, slot: torch.Tensor, n_episodes: int, max_len: int,
                         prev: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [n, 7] for a batch of whole episodes given as flat frames (``prev``: each frame's previous action).

        ``ids`` [m, L]: the distinct instructions of the batch; ``mission`` [n]: each frame's
        row of ``ids``; ``slot`` [n]: each frame's position ``episode * max_len + t`` in the
        right-padded [n_episodes, max_len] layout that the LSTM reads (padding comes after a
        frame, so it never reaches its output).
        """
        # index_select, not x[index]: its CPU backward is deterministic (see Agent.forward_episodes)
        instr = self.instruction(ids).index_select(0, mission)
        feats = self.drop(self.observation(images, directions, instr, prev))
        padded = feats.new_zeros(n_episodes * max_len, feats.shape[1]).index_copy(0, slot, feats)
        out = self.memory(padded.view(n_episodes, max_len, -1))[0]
        return self.policy(self.drop(out.reshape(n_episodes * max_len, -1).index_select(0, slot)))

    # -- acting ----------------------------------------------------------------------
    def new_memory_state(self, n: int, max_len: int) -> dict[str, Any]:
        """Zero LSTM states for :meth:`act` over ``n`` environments (``max_len`` is unused: the state does not grow)."""
        d = self.cfg.d_hidden
        return {"h": torch.zeros(n, d), "c": torch.zeros(n, d), "lengths": torch.zeros(n, dtype=torch.long),
                "prev": torch.full((n,), START_ACTION)}

    @torch.no_grad()
    def act(self, instr: torch.Tensor, images: torch.Tensor, directions: torch.Tensor,
            state: dict[str, Any]) -> torch.Tensor:
        """One step for a batch of environments: the logits [n, 7] that :meth:`forward_episodes`
        gives at the latest step of each episode so far.

        ``state`` (from :meth:`new_memory_state`) is updated in place; rows whose
        ``state["lengths"]`` is 0 start a new episode (their LSTM state is reset first). After
        choosing the actions, the caller sets ``state["prev"]`` to them (the next step's
        previous-action input).
        """
        fresh = (state["lengths"] == 0)[:, None]
        h0 = state["h"].masked_fill(fresh, 0.0)
        c0 = state["c"].masked_fill(fresh, 0.0)
        x = self.observation(images, directions, instr, state_previous(state))
        out, (h, c) = self.memory(x[:, None], (h0[None], c0[None]))
        state["h"][:] = h[0]
        state["c"][:] = c[0]
        state["lengths"] += 1
        return self.policy(out[:, 0])

    def first_step(self, instr: torch.Tensor, images: torch.Tensor,
                   directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h [n, d_hidden], logits [n, 7]): the LSTM output and the logits at the first step of
        episodes starting from these observations (what :meth:`act` gives on a fresh state).
        Gradients are kept."""
        out = self.memory(self.observation(images, directions, instr)[:, None])[0][:, 0]
        return out, self.policy(out)

    def film_parameters(self, instr: torch.Tensor) -> torch.Tensor:
        """Everything the policy reads from instruction embeddings ``instr`` [n, d_model]: the
        FiLM parameters [n, 2 * channels * film_blocks], ordered (gamma_1, beta_1, gamma_2, beta_2, ...)."""
        return torch.cat([film.lin(instr) for film in self.observation.films], dim=1)
