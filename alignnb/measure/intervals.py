"""Resampling intervals of alignment scores: over sentences, over subsets, over attribute levels.

query interval    precision@k's per-sentence overlaps (neighbours among all sentences)
                  resampled with replacement: an interval over which sentences are asked
                  about, for the same statistic as the estimate.
subsample interval  the metric recomputed on random subsets of the sentences, for metrics
                  without a per-sentence decomposition (a different statistic for k-NN
                  metrics: k neighbours among fewer candidates).
crossed-design    sentences share attributes (colour, object): two sentences with the same
interval          colour are not independent draws, so resampling sentences iid understates
                  the uncertainty about a population of colours and objects. Owen's pigeonhole
                  bootstrap (Ann. Appl. Stat. 1(2), 2007; Owen & Eckles 2012) gives each level
                  of each factor an independent random weight and a sentence the product of
                  its levels' weights; a grouped (leave-one-level-out) jackknife per factor is
                  the cheaper alternative.

Every generator is the ``analysis`` stream (:func:`alignnb.core.streams.rng`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import norm

from alignnb.core import streams
from alignnb.measure.checks import as_scores, check_level, check_pair, level_codes


@dataclass
class IntervalResult:
    """A resampling confidence interval of one alignment score."""

    estimate: float  # the score on all sentences
    low: float
    high: float
    samples: np.ndarray


def _check_resamples(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer of at least 2 resamples, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")


def query_interval(per_sentence: Any, n_boot: int = 200, seed: int = 0, level: float = 0.95) -> IntervalResult:
    """Percentile interval of the mean of ``per_sentence`` scores resampled with replacement.

    For precision@k pass :func:`alignnb.measure.metrics.per_sentence_precision` (neighbours among
    all sentences): the interval is about which sentences are asked about, and it contains
    the estimate.
    """
    per_sentence = np.asarray(per_sentence, dtype=float)
    if per_sentence.ndim != 1 or len(per_sentence) < 2:
        raise ValueError(f"per_sentence must be a 1-D array of at least 2 scores, got shape {per_sentence.shape}")
    check_level(level)
    rng = streams.rng("analysis", seed)
    n = len(per_sentence)
    _check_resamples(n_boot, level)
    samples = per_sentence[rng.integers(0, n, size=(n_boot, n))].mean(1)
    alpha = (1 - level) / 2
    return IntervalResult(float(per_sentence.mean()), float(np.quantile(samples, alpha)),
                          float(np.quantile(samples, 1 - alpha)), samples)


def subsample_interval(score: Callable[[np.ndarray, np.ndarray], float], A: Any, B: Any, n_boot: int = 200, seed: int = 0,
                       fraction: float = 0.8, level: float = 0.95, replace: bool = False) -> IntervalResult:
    """Percentile interval of ``score(A[idx], B[idx])`` over random subsets of the sentences.

    ``fraction`` of the sentences without replacement (``replace=False``), or all n drawn with
    replacement (``replace=True``: a duplicated sentence is its own nearest neighbour, which
    inflates k-NN metrics).
    """
    A, B = check_pair(A, B)
    check_level(level)
    n = len(A)
    if replace:
        size = n
    else:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        size = int(round(fraction * n))
        if size < 4:
            raise ValueError(f"fraction={fraction} of {n} sentences leaves {size}: too few to score")
    rng = streams.rng("analysis", seed)
    _check_resamples(n_boot, level)
    samples = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.choice(n, size=size, replace=replace)
        samples[i] = score(A[idx], B[idx])
    alpha = (1 - level) / 2
    return IntervalResult(float(score(A, B)), float(np.quantile(samples, alpha)),
                          float(np.quantile(samples, 1 - alpha)), samples)


# --------------------------------------------------------------------------------------
# crossed-design intervals (attributes shared by many sentences)
# --------------------------------------------------------------------------------------

def _factor_codes(factors: Mapping, n: int) -> list[tuple[str, np.ndarray, int]]:
    if not isinstance(factors, Mapping) or not factors:
        raise ValueError("factors must be a non-empty dict {name: one attribute value per sentence}")
    out = []
    for name, values in factors.items():
        v = np.asarray(values, dtype=object)
        if v.ndim != 1 or len(v) != n:
            raise ValueError(f"factor {name!r} must give one value per sentence: expected {n}, got shape {v.shape}")
        codes, levels = level_codes(v, f"factor {name!r}")
        out.append((str(name), codes, len(levels)))
    return out


@dataclass
class AttributeInterval:
    """A confidence interval for the mean of a per-sentence score under a crossed design."""

    estimate: float  # the mean over sentences
    low: float
    high: float
    se: float  # bootstrap standard deviation / jackknife standard error
    method: str
    samples: np.ndarray = field(repr=False)  # bootstrap means, or jackknife leave-one-level-out means
    n_levels: dict = field(default_factory=dict)  # levels per factor


WEIGHTS = ("poisson", "exponential")


def pigeonhole_weights(factors: Mapping, n_draws: int, rng: np.random.Generator, weights: str = "poisson",
                       chunk: int = 256) -> np.ndarray:
    """``n_draws`` rows of Owen's pigeonhole weights, [n_draws, n]: one per sentence and draw.

    Each draw gives every level of every factor an independent weight, Poisson(1) or Exp(1),
    and a sentence the product of its levels' weights. Draws whose weights are all 0 (possible
    with Poisson weights and few levels) are redrawn, so every row has a positive sum. Any
    statistic that resamples the same sentences (two overlap vectors, several seeds) takes the
    same rows, which pairs them.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    n_draws = int(n_draws)
    first = next(iter(factors.values()))
    coded = _factor_codes(factors, len(first))
    n = len(first)

    def draw(size):
        return rng.poisson(1.0, size).astype(np.float64) if weights == "poisson" else rng.exponential(1.0, size)

    out = np.empty((n_draws, n))
    done = 0
    for _ in range(100 * (n_draws // chunk + 1)):
        if done == n_draws:
            break
        b = min(chunk, n_draws - done)
        W = np.ones((b, n))
        for _, codes, L in coded:
            W *= draw((b, L))[:, codes]
        ok = W.sum(1) > 0
        m = int(ok.sum())
        out[done:done + m] = W[ok]
        done += m
    if done < n_draws:
        raise ValueError("almost every bootstrap draw gave every sentence weight 0: use weights='exponential'")
    return out


def attribute_bootstrap_ci(per_sentence: Any, factors: Mapping, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95, weights: str = "poisson", chunk: int = 256) -> AttributeInterval:
    """Owen's pigeonhole (multiway) bootstrap percentile interval for the mean of ``per_sentence``.

    ``factors`` maps a factor name to one attribute value per sentence (colour, object, ...);
    missing values (None, NaN, "none", "") form their own level. Each bootstrap draw gives every
    level of every factor an independent weight, Poisson(1) (the resampling analogue) or Exp(1)
    (never 0); a sentence's weight is the product of its levels' weights
    (:func:`pigeonhole_weights`), and the statistic is the weighted mean sum(w y) / sum(w).
    Owen (2007) and Owen & Eckles (2012) show the variance is slightly conservative for
    crossed random effects, where an iid bootstrap of sentences ignores the variation between
    levels and under-covers. With few levels per factor (< ~10) every interval for a
    population of levels is rough.
    """
    y = as_scores(per_sentence, "per_sentence")
    n = len(y)
    coded = _factor_codes(factors, n)
    level = check_level(level)
    if int(n_boot) != n_boot or n_boot < 10:
        raise ValueError(f"n_boot must be an integer >= 10, got {n_boot}")
    rng = streams.rng("analysis", seed)
    W = pigeonhole_weights(factors, int(n_boot), rng, weights, chunk)
    samples = (W @ y) / W.sum(1)
    a = (1 - level) / 2
    return AttributeInterval(float(y.mean()), float(np.quantile(samples, a)), float(np.quantile(samples, 1 - a)),
                             float(samples.std(ddof=1)), f"pigeonhole bootstrap ({weights} weights)", samples,
                             {name: L for name, _, L in coded})


def attribute_jackknife_ci(per_sentence: Any, factors: Mapping, level: float = 0.95) -> AttributeInterval:
    """Grouped jackknife normal interval for the mean of ``per_sentence`` under crossed factors.

    For each factor f with L_f levels, the mean is recomputed leaving out all sentences of one
    level at a time, theta_(l); its jackknife variance is v_f = (L_f - 1) / L_f * sum_l
    (theta_(l) - mean_l theta_(l))^2. The variance of the mean is taken as sum_f v_f (each
    factor's leave-one-level-out jackknife captures that factor's variance component; summing
    them is the jackknife analogue of Owen's pigeonhole bootstrap, slightly conservative), and
    the interval is estimate ± z_{(1+level)/2} sqrt(v). A factor with one level adds nothing.
    Missing values (None, NaN, "none", "") form their own level.
    """
    y = as_scores(per_sentence, "per_sentence")
    n = len(y)
    coded = _factor_codes(factors, n)
    level = check_level(level)
    total, estimate = y.sum(), float(y.mean())
    variance, replicates = 0.0, []
    for _, codes, L in coded:
        if L < 2:
            continue
        sums = np.bincount(codes, weights=y, minlength=L)
        counts = np.bincount(codes, minlength=L)
        if (counts == n).any():
            continue
        theta = (total - sums) / (n - counts)  # the mean without level l
        variance += (L - 1) / L * float(((theta - theta.mean()) ** 2).sum())
        replicates.append(theta)
    se = math.sqrt(variance)
    z = float(norm.ppf((1 + level) / 2))
    samples = np.concatenate(replicates) if replicates else np.empty(0)
    return AttributeInterval(estimate, estimate - z * se, estimate + z * se, se, "grouped jackknife", samples,
                             {name: L for name, _, L in coded})


def level_balanced_mean(per_sentence: Any, levels: Any) -> float:
    """The mean of the per-level means of ``per_sentence`` (each level weighs the same, whatever its size)."""
    y = as_scores(per_sentence, "per_sentence")
    v = np.asarray(levels, dtype=object)
    if v.ndim != 1 or len(v) != len(y):
        raise ValueError(f"levels must give one label per sentence: expected {len(y)}, got shape {v.shape}")
    codes, labels = level_codes(v, "levels")
    means = np.bincount(codes, weights=y, minlength=len(labels)) / np.bincount(codes, minlength=len(labels))
    return float(means.mean())
