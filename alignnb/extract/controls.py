"""Deterministic lexical control embeddings: bag of words and TF-IDF.

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

ggml's Q4_0 weight rounding lives with the other weight handling, in :mod:`alignnb.extract.weights`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
