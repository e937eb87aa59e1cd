"""Blocks that every learner shares: the vocabulary, masked pooling, grid-cell values, FiLM,
the instruction-embedding methods and minigrid's action and symbol counts."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

PAD, UNK = "<pad>", "<unk>"
N_ACTIONS = 7
#: The previous-action input's value at an episode's first step (no action yet).
START_ACTION = N_ACTIONS
# minigrid's symbolic encoding: object index < 11, colour index < 6, state < 3
N_OBJECTS, N_COLORS, N_STATES = 11, 6, 3


class Vocabulary:
    """Word-level tokenizer built from a list of sentences; unknown words map to ``<unk>``."""

    def __init__(self, words: Sequence[str]):
        words = [w for w in words if w not in (PAD, UNK)]
        self.itos = [PAD, UNK, *sorted(set(words))]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_sentences(cls, sentences: Sequence[str]) -> Vocabulary:
        return cls([w for s in sentences for w in s.lower().split()])

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def unknown_words(self, sentences: Sequence[str]) -> dict[str, int]:
        """Words of ``sentences`` outside the vocabulary, with their counts."""
        out: dict[str, int] = {}
        for s in sentences:
            for w in s.lower().split():
                if w not in self.stoi:
                    out[w] = out.get(w, 0) + 1
        return out

    def encode(self, sentences: Sequence[str], max_words: int) -> torch.Tensor:
        """[n, max_words] token ids, right-padded with 0; raises if a sentence is too long."""
        ids = torch.zeros(len(sentences), max_words, dtype=torch.long)
        for i, s in enumerate(sentences):
            words = s.lower().split()
            if len(words) > max_words:
                raise ValueError(f"instruction has {len(words)} words, the agent reads at most {max_words}: {s!r}")
            if not words:
                raise ValueError("empty instruction")
            ids[i, : len(words)] = torch.tensor([self.stoi.get(w, 1) for w in words])
        return ids


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def cell_values(images: torch.Tensor) -> torch.Tensor:
    """Each cell of uint8 views [..., 3] (object, colour, state) as one of the 11 x 6 x 3 = 198
    cell values, long [...]: the row of a cell table."""
    im = images.long()
    return (im[..., 0].clamp_max(N_OBJECTS - 1) * N_COLORS + im[..., 1].clamp_max(N_COLORS - 1)) * N_STATES \
        + im[..., 2].clamp_max(N_STATES - 1)


def previous_action(table: nn.Embedding | None, prev: torch.Tensor | None, n: int) -> torch.Tensor | float:
    """The previous-action input of ``n`` frames: ``table(prev)`` (``prev`` None: each frame is an
    episode's first, ``START_ACTION``); 0 for a learner without the input (``table`` None)."""
    if table is None:
        return 0.0
    if prev is None:
        prev = torch.full((n,), START_ACTION, dtype=torch.long)
    return table(prev.long())


def state_previous(state: dict) -> torch.Tensor:
    """The previous action of every environment of an acting ``state``: ``START_ACTION`` where
    an episode starts (length 0), else what the rollout recorded in ``state["prev"]``."""
    return torch.where(state["lengths"] == 0, START_ACTION, state["prev"])


class FiLM(nn.Module):
    """Feature-wise linear modulation (Perez et al. 2018): y = (1 + gamma(e)) * x + beta(e)."""

    def __init__(self, d_cond: int, channels: int):
        super().__init__()
        self.lin = nn.Linear(d_cond, 2 * channels)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x [n, cells, C], cond [n, d] -> [n, cells, C]."""
        gamma, beta = self.lin(cond).unsqueeze(1).chunk(2, dim=-1)
        return (1 + gamma) * x + beta


class InstructionEmbeddings:
    """What both learners give the study from their instruction encoder (``self.instruction``,
    whose ``forward(ids, return_layers=True)`` returns the embedding and the per-layer means,
    and whose ``tok`` embeds words): mixed into :class:`Agent` and the second learner."""

    def encode_instructions(self, sentences: Sequence[str]) -> torch.Tensor:
        """Instruction embeddings [n, d_model] as a tensor (gradients kept)."""
        return self.instruction(self.vocab.encode(sentences, self.cfg.max_words))

    @torch.no_grad()
    def word_embedding_mean(self, sentences: Sequence[str]) -> np.ndarray:
        """float32 [n, d_model]: the mean of each sentence's word embeddings (no positions, no layer)."""
        ids = self.vocab.encode(list(sentences), self.cfg.max_words)
        return masked_mean(self.instruction.tok(ids), ids != 0).float().numpy()

    # -- the study's embeddings ------------------------------------------------------
    @torch.no_grad()
    def embed_instructions(self, sentences: Sequence[str], layer: int | str = "last",
                           batch_size: int = 512) -> np.ndarray:
        """float32 [n, d] embeddings of ``sentences``.

        ``layer="last"``: the instruction embedding that conditions the policy. ``layer=k``:
        the mean over words of encoder layer k's output (transformer: 0..n_layers, 0 = word +
        position embeddings; GRU: 0 = word embeddings). Unknown words map to ``<unk>`` and are
        reported with a warning.
        """
        return self.embed_instruction_layers(sentences, batch_size)[layer]

    @torch.no_grad()
    def embed_instruction_layers(self, sentences: Sequence[str], batch_size: int = 512) -> dict:
        """{"last": [n, d], 0: [n, d], ...} for ``sentences``: every layer of :meth:`embed_instructions`."""
        sentences = list(sentences)
        unknown = self.vocab.unknown_words(sentences)
        if unknown:
            words = ", ".join(f"{w!r} x{c}" for w, c in sorted(unknown.items()))
            warnings.warn(f"{sum(unknown.values())} unknown word(s) mapped to {UNK}: {words}", stacklevel=2)
        was_training = self.training
        self.eval()
        outs: dict = {}
        for i in range(0, len(sentences), batch_size):
            ids = self.vocab.encode(sentences[i:i + batch_size], self.cfg.max_words)
            emb, layers = self.instruction(ids, return_layers=True)
            for key, value in [("last", emb), *enumerate(layers)]:
                outs.setdefault(key, []).append(value)
        self.train(was_training)
        return {k: torch.cat(v).float().numpy() for k, v in outs.items()}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
