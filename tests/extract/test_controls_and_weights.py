"""alignnb.extract.controls (bag of words, TF-IDF) and ggml's Q4_0 round trip in alignnb.extract.weights."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignnb.extract import controls, weights

SENTENCES = ["go to the red ball", "pick up the key", "Go to the red door and the red key"]
VOCAB = ["and", "ball", "door", "go", "key", "pick", "red", "the", "to", "up"]


def test_bag_of_words_counts():
    X, vocab = controls.bag_of_words(SENTENCES)
    assert vocab == VOCAB
    assert X.dtype == np.float32 and X.shape == (3, 10)
    expected = np.array([
        # and ball door go key pick red the to up
        [0, 1, 0, 1, 0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 1, 1, 0, 1, 0, 1],
        [1, 0, 1, 1, 1, 0, 2, 2, 1, 0],
    ], dtype=np.float32)
    np.testing.assert_array_equal(X, expected)


def test_tfidf_matches_a_hand_computation():
    X, vocab = controls.tfidf(SENTENCES)
    assert vocab == VOCAB and X.dtype == np.float32
    n = 3
    idf = {w: math.log((1 + n) / (1 + df)) + 1 for w, df in
           {"and": 1, "ball": 1, "door": 1, "go": 2, "key": 2, "pick": 1, "red": 2, "the": 3, "to": 2, "up": 1}.items()}
    # sentence 2: "pick up the key"
    row = np.zeros(10)
    for w in ("pick", "up", "the", "key"):
        row[VOCAB.index(w)] = idf[w]
    np.testing.assert_allclose(X[1], row / np.linalg.norm(row), rtol=1e-6)
    # sentence 3: "the" and "red" twice
    row = np.zeros(10)
    for w, c in {"go": 1, "to": 1, "the": 2, "red": 2, "door": 1, "and": 1, "key": 1}.items():
        row[VOCAB.index(w)] = c * idf[w]
    np.testing.assert_allclose(X[2], row / np.linalg.norm(row), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, rtol=1e-6)
    assert idf["the"] == 1.0  # a word in every sentence keeps weight 1 (smooth idf)


def test_lexical_input_errors():
    with pytest.raises(ValueError, match="single string"):
        controls.bag_of_words("go to the red ball")
    with pytest.raises(ValueError, match="empty"):
        controls.tfidf([])
    with pytest.raises(ValueError, match="no words"):
        controls.bag_of_words(["", "  "])


def test_q4_0_known_example_follows_ggml_rounding():
    block = np.zeros(32, dtype=np.float32)
    block[:6] = [-1.0, 0.3, 0.3125, -0.3125, 1.0, 0.0625]
    out = weights.quantize_q4_0(block)
    # max = -1.0 (the first of |-1| and |1|), d = -1 / -8 = 0.125, q = min(15, floor(x / d + 8.5))
    #  -1.0   -> -8 + 8.5 = 0.5 -> q 0  -> -8 d = -1.0
    #   0.3   -> 2.4 + 8.5      -> q 10 ->  2 d = 0.25
    #   0.3125 -> 2.5 + 8.5 = 11 -> q 11 ->  3 d = 0.375 (half rounds up; np.round would give 0.25)
    #  -0.3125 -> -2.5 + 8.5 = 6 -> q 6  -> -2 d = -0.25
    #   1.0   -> 8 + 8.5 = 16.5 -> 16 -> clamped to 15 -> 7 d = 0.875
    #   0.0625 -> 0.5 + 8.5 = 9  -> q 9  -> d = 0.125
    np.testing.assert_array_equal(out[:6], np.array([-1.0, 0.25, 0.375, -0.25, 0.875, 0.125], dtype=np.float32))
    np.testing.assert_array_equal(out[6:], 0)
    np.testing.assert_array_equal(weights.quantize_q4_0(np.zeros((2, 64))), 0)


def test_q4_0_is_exact_on_the_grid_and_stores_d_in_fp16():
    d = np.float32(-0.25)  # a power of two: exact in fp16
    rng = np.random.default_rng(0)
    q = rng.integers(0, 16, size=(4, 64))
    q[:, 0] = 0
    q[:, 32] = 0  # every block holds its max magnitude (q - 8 = -8), so its d is exactly -0.25
    on_grid = ((q - 8) * d).astype(np.float32)
    np.testing.assert_array_equal(weights.quantize_q4_0(on_grid), on_grid)
    # a scale that fp16 cannot hold: the dequantised max is -8 * fp16(d), not the max itself
    block = np.full(32, 0.01, dtype=np.float32)
    block[0] = np.float32(1 / 3)
    d32 = np.float32(1 / 3) / np.float32(-8)
    assert np.float16(d32).astype(np.float32) != d32
    assert weights.quantize_q4_0(block)[0] == np.float32(-8) * np.float16(d32).astype(np.float32)


def test_q4_0_round_trip_error_bound():
    rng = np.random.default_rng(1)
    W = (rng.standard_t(4, size=(50, 128)) * 0.05).astype(np.float32)
    out = weights.quantize_q4_0(W)
    assert out.shape == W.shape and out.dtype == np.float32
    blocks, deq = W.reshape(-1, 32), out.reshape(-1, 32)
    mx = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(1)]
    d = (mx / np.float32(-8)).astype(np.float64)[:, None]
    d16 = (mx / np.float32(-8)).astype(np.float16).astype(np.float64)[:, None]
    slack = 8 * np.abs(d - d16) + 1e-7  # at most |q - 8| = 8 steps of fp16's rounding of d
    err = np.abs(blocks - deq)
    clamped = blocks / d > 7.5  # the opposite sign beyond 7.5 steps: q would be 16
    within_half = err <= np.abs(d) / 2 + slack
    within_step = err <= np.abs(d) + slack
    assert within_half[~clamped].all()  # round to nearest: at most half a step
    assert within_step[clamped].all()  # clamped at q = 15: at most one step
    assert err.max() > 0


def test_q4_0_matches_gguf_reference():
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(2)
    W = rng.normal(size=(3, 2, 64)).astype(np.float32)
    W[0, 0, :32] *= 1000  # a wide block
    t = gguf.GGMLQuantizationType.Q4_0
    ref = dequantize(quantize(W.reshape(-1, 64), t), t).reshape(W.shape)
    np.testing.assert_array_equal(weights.quantize_q4_0(W), ref)


def test_q4_0_refuses_partial_blocks():
    with pytest.raises(ValueError, match="multiple of 32"):
        weights.quantize_q4_0(np.ones((2, 48)))
    with pytest.raises(ValueError, match="NaN"):
        weights.quantize_q4_0(np.full(32, np.nan))
