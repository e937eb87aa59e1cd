"""Deterministic lexical control embeddings, and ggml's Q4_0 weight quantisation.

Lexical controls answer "how much of an alignment is just shared words?": two encoders that
both separate sentences by their words will agree with each other *and* with these vectors.

Bag of words  Word counts over the sorted vocabulary of the given sentences; a word is a
              lower-cased whitespace-separated token (punctuation stays attached: "ball," and
              "ball" are different words, which matters little for BabyAI's templated
              instructions).
TF-IDF        scikit-learn's ``TfidfVectorizer`` defaults on those counts (smooth_idf=True,
              sublinear_tf=False, norm="l2"): idf(t) = ln((1 + n) / (1 + df(t))) + 1,
              x[i, t] = count(i, t) idf(t), each row divided by its L2 norm (an all-zero row
              stays zero). Only the tokenisation differs from scikit-learn's default
              (which keeps tokens of 2+ word characters and so drops "a").
Q4_0          ggml / GGUF's 4-bit block quantisation (``quantize_row_q4_0_ref`` and
              ``dequantize_row_q4_0`` in ggml/src/ggml-quants.c; the same rule as
              ``gguf.quants.Q4_0`` in gguf-py): blocks of 32 consecutive values along a row;
              max = the value of largest magnitude (the first one if several), d = max / -8,
              q = min(15, (int8)(x * (1/d) + 8.5)) computed in float32 (so
              q = floor(x/d + 8.5): round half up, not numpy's round-half-even; the lower
              clamp is never needed because x/d >= -8), d stored as fp16, and the dequantised
              value is (q - 8) * fp16(d). The value ``max`` itself maps to q = 0 exactly; values
              of the opposite sign with |x| > 7.5 |d| are clamped to q = 15, so their error can
              reach |d| (every other value is within |d| / 2, plus the fp16 rounding of d).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: ggml's QK4_0: values per Q4_0 block.
Q4_0_BLOCK = 32


def _tokenise(sentences: Sequence[str]) -> list[list[str]]:
    if isinstance(sentences, str):
        raise ValueError("sentences must be a list of strings, got a single string")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("sentences is empty")
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise ValueError(f"sentence {i} is a {type(s).__name__}, not a string")
    return [s.lower().split() for s in sentences]


def bag_of_words(sentences: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Word counts [n, V] (float32) over the sorted vocabulary of ``sentences``, and that vocabulary.

    Words are the lower-cased, whitespace-separated tokens; row i counts sentence i's words.
    """
    tokens = _tokenise(sentences)
    vocabulary = sorted({w for words in tokens for w in words})
    if not vocabulary:
        raise ValueError("the sentences contain no words")
    index = {w: j for j, w in enumerate(vocabulary)}
    counts = np.zeros((len(tokens), len(vocabulary)), dtype=np.float32)
    for i, words in enumerate(tokens):
        for w in words:
            counts[i, index[w]] += 1
    return counts, vocabulary


def tfidf(sentences: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """TF-IDF vectors [n, V] (float32, rows of unit L2 norm) of ``sentences``, and the vocabulary.

    scikit-learn's defaults in numpy: raw counts times idf(t) = ln((1 + n) / (1 + df(t))) + 1,
    with df(t) the number of sentences containing t; then each row L2-normalised.
    """
    counts, vocabulary = bag_of_words(sentences)
    counts = counts.astype(np.float64)
    n = len(counts)
    df = (counts > 0).sum(0)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    X = counts * idf
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    X = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    return X.astype(np.float32), vocabulary


def quantize_q4_0(weights) -> np.ndarray:
    """Round trip through ggml's Q4_0: the dequantised float32 array, same shape as ``weights``.

    Blocks of 32 along the last axis; see the module docstring for the exact rule. The last
    axis must be a multiple of 32: other lengths are refused with ValueError, not padded
    (GGUF writers leave such tensors unquantised, so padding would invent a quantisation that
    no GGUF file contains). Scales beyond fp16's range (|d| > 65504) overflow to inf as in ggml.
    """
    x = np.asarray(weights)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"weights must be numeric, got {x.dtype}")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"weights must have a non-empty last axis, got shape {x.shape}")
    if x.shape[-1] % Q4_0_BLOCK:
        raise ValueError(f"the last axis has length {x.shape[-1]}, not a multiple of {Q4_0_BLOCK}: Q4_0 quantises "
                         f"whole blocks of {Q4_0_BLOCK} (GGUF leaves such tensors unquantised)")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("weights have NaN or infinite values")
    blocks = x.reshape(-1, Q4_0_BLOCK)
    first_max = np.abs(blocks).argmax(axis=1)  # the first value of largest magnitude, as ggml's strict '<' scan
    mx = blocks[np.arange(len(blocks)), first_max]
    d = mx / np.float32(-8)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = np.minimum(np.trunc(blocks * inv[:, None] + np.float32(8.5)), np.float32(15))
    with np.errstate(over="ignore"):
        d16 = d.astype(np.float16).astype(np.float32)
    out = (q - np.float32(8)) * d16[:, None]
    return out.astype(np.float32).reshape(x.shape)
