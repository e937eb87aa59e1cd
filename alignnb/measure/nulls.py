"""Nulls and intervals for alignment scores: permutation tests and resampling intervals.

Every headline number stands beside its null and an honest interval.

permutation null  B's rows shuffled (the sentence correspondence broken), the metric of
                  :data:`alignnb.measure.metrics.METRICS` recomputed from prepared spaces (k-NN
                  memberships are relabelled, never recomputed); p = (1 + #{null >= s}) /
                  (1 + n_perm), with the inequality reversed for a lower-is-better metric.
query interval    precision@k's per-sentence overlaps (neighbours among all sentences)
                  resampled with replacement: an interval over which sentences are asked
                  about, for the same statistic as the estimate.
subsample interval  the metric recomputed on random subsets of the sentences, for metrics
                  without a per-sentence decomposition (a different statistic for k-NN
                  metrics: k neighbours among fewer candidates).
restricted null  each shuffle moves a sentence only within its stratum (its level, its
                  verb). A global shuffle breaks every shared structure, including the coarse
                  structure both spaces get for free from the stratum (both separate the four
                  BabyAI levels); the restricted null keeps it, so it asks whether the spaces
                  agree *within* strata (Good 2005, "Permutation, parametric and bootstrap
                  tests of hypotheses", ch. 3; Winkler et al. 2014, NeuroImage 92,
                  exchangeability blocks).
crossed-design    sentences share attributes (colour, object): two sentences with the same
interval          colour are not independent draws, so resampling sentences iid understates
                  the uncertainty about a population of colours and objects. Owen's pigeonhole
                  bootstrap (Ann. Appl. Stat. 1(2), 2007; Owen & Eckles 2012) gives each level
                  of each factor an independent random weight and a sentence the product of
                  its levels' weights; a grouped (leave-one-level-out) jackknife per factor is
                  the cheaper alternative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from alignnb.measure.metrics import Metric, check_pair, get_metric


@dataclass
class NullResult:
    """A permutation test of one alignment score."""

    observed: float
    null: np.ndarray = field(repr=False)  # the score under each permutation
    null_q95: float  # 95th percentile of the null
    null_q05: float  # 5th percentile of the null (the critical value when lower is better)
    p_value: float  # (1 + #{null at least as good as observed}) / (1 + n_perm)
    greater_is_better: bool = True
    stratified: bool = False

    @property
    def null_mean(self) -> float:
        return float(self.null.mean())


@dataclass
class IntervalResult:
    """A resampling confidence interval of one alignment score."""

    estimate: float  # the score on all sentences
    low: float
    high: float
    samples: np.ndarray


def permutation_null(metric: str | Metric, A, B, k: int = 15, n_perm: int = 1000, seed: int = 0,
                     strata=None) -> NullResult:
    """Score A against B, then with B's rows shuffled ``n_perm`` times (seeded).

    ``strata`` (one label per sentence, e.g. its level or verb) restricts each shuffle to
    within strata (:func:`restricted_permutation`); None shuffles globally. Each space is
    prepared once (:class:`alignnb.measure.metrics.Metric`); a permuted B is its prepared form
    relabelled, which for precision@k is exact and fast.
    """
    m = get_metric(metric)
    A, B = check_pair(A, B, k if m.uses_k else None)
    if int(n_perm) != n_perm or n_perm < 1:
        raise ValueError(f"n_perm must be a positive integer, got {n_perm}")
    draw = permutation_sampler(len(A), strata, np.random.default_rng(seed))
    pa, pb = m.prepare(A, k), m.prepare(B, k)
    observed = float(m.compare(pa, pb))
    null = np.array([m.compare(pa, m.relabel(pb, draw())) for _ in range(int(n_perm))], dtype=float)
    return NullResult(observed, null, float(np.percentile(null, 95)), float(np.percentile(null, 5)),
                      p_value(observed, null, m.higher_is_better), m.higher_is_better, strata is not None)


def _check_resamples(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer of at least 2 resamples, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")


def query_interval(per_sentence: np.ndarray, n_boot: int = 200, seed: int = 0, level: float = 0.95) -> IntervalResult:
    """Percentile interval of the mean of ``per_sentence`` scores resampled with replacement.

    For precision@k pass :func:`alignnb.measure.metrics.per_sentence_precision` (neighbours among
    all sentences): the interval is about which sentences are asked about, and it contains
    the estimate.
    """
    per_sentence = np.asarray(per_sentence, dtype=float)
    if per_sentence.ndim != 1 or len(per_sentence) < 2:
        raise ValueError(f"per_sentence must be a 1-D array of at least 2 scores, got shape {per_sentence.shape}")
    _check_level(level)
    rng = np.random.default_rng(seed)
    n = len(per_sentence)
    _check_resamples(n_boot, level)
    samples = per_sentence[rng.integers(0, n, size=(n_boot, n))].mean(1)
    alpha = (1 - level) / 2
    return IntervalResult(float(per_sentence.mean()), float(np.quantile(samples, alpha)),
                          float(np.quantile(samples, 1 - alpha)), samples)


def subsample_interval(score: Callable[[np.ndarray, np.ndarray], float], A, B, n_boot: int = 200, seed: int = 0,
                       fraction: float = 0.8, level: float = 0.95, replace: bool = False) -> IntervalResult:
    """Percentile interval of ``score(A[idx], B[idx])`` over random subsets of the sentences.

    ``fraction`` of the sentences without replacement (``replace=False``), or all n drawn with
    replacement (``replace=True``: a duplicated sentence is its own nearest neighbour, which
    inflates k-NN metrics).
    """
    A, B = check_pair(A, B)
    _check_level(level)
    n = len(A)
    if replace:
        size = n
    else:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        size = int(round(fraction * n))
        if size < 4:
            raise ValueError(f"fraction={fraction} of {n} sentences leaves {size}: too few to score")
    rng = np.random.default_rng(seed)
    _check_resamples(n_boot, level)
    samples = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.choice(n, size=size, replace=replace)
        samples[i] = score(A[idx], B[idx])
    alpha = (1 - level) / 2
    return IntervalResult(float(score(A, B)), float(np.quantile(samples, alpha)),
                          float(np.quantile(samples, 1 - alpha)), samples)


# --------------------------------------------------------------------------------------
# restricted (stratified) permutation nulls
# --------------------------------------------------------------------------------------


def _strata_codes(strata, n: int) -> np.ndarray:
    s = np.asarray(strata, dtype=object)
    if s.ndim != 1 or len(s) != n:
        raise ValueError(f"strata must give one label per sentence: expected {n} labels, got shape {s.shape}")
    return _level_codes(s, "strata")[0]


def restricted_permutation(strata, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """A random permutation ``perm`` of range(n) with strata[perm[i]] == strata[i] for every i.

    ``strata`` holds one label per sentence (e.g. its level or its verb); the indices of each
    stratum are shuffled among themselves, uniformly. A stratum of one sentence stays in place.
    Apply it as ``B[perm]`` or :func:`alignnb.measure.metrics.relabel_membership`.
    """
    s = np.asarray(strata, dtype=object)
    if s.ndim != 1 or len(s) == 0:
        raise ValueError(f"strata must be a non-empty 1-D array of labels, got shape {s.shape}")
    rng = np.random.default_rng(rng)
    codes = _level_codes(s, "strata")[0]
    return _restricted_from_codes(codes, rng)


def _restricted_from_codes(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    order = np.argsort(codes, kind="stable")  # indices grouped by stratum
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    perm = np.empty(len(codes), dtype=np.int64)
    for group in np.split(order, bounds):
        perm[group] = rng.permutation(group)
    return perm


def permutation_sampler(n: int, strata, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    if strata is None:
        return lambda: rng.permutation(n)
    codes = _strata_codes(strata, n)
    return lambda: _restricted_from_codes(codes, rng)


#: Scores closer than this count as tied with the observed one in p-values: precision@k values
#: that are equal in exact arithmetic can differ in the last bits by summation order.
TIE_TOLERANCE = 1e-12


def p_value(observed: float, null: np.ndarray, greater_is_better: bool = True) -> float:
    """(1 + #{null at least as good as observed, ties within TIE_TOLERANCE}) / (1 + len(null))."""
    as_good = (null >= observed - TIE_TOLERANCE) if greater_is_better else (null <= observed + TIE_TOLERANCE)
    return float((1 + as_good.sum()) / (1 + len(null)))


# --------------------------------------------------------------------------------------
# crossed-design intervals (attributes shared by many sentences)
# --------------------------------------------------------------------------------------

#: The level that sentences without a value for a factor (None, NaN, "none", "") belong to.
MISSING_LEVEL = "<none>"


def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip().lower() in ("", "none", "nan")


def _level_codes(values, name: str) -> tuple[np.ndarray, list]:
    """Integer codes 0..L-1 for a 1-D array of labels; missing values form the level MISSING_LEVEL."""
    v = np.asarray(values, dtype=object)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sentence), got shape {v.shape}")
    labels = [MISSING_LEVEL if _is_missing(x) else str(x) for x in v]
    uniq, codes = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    return codes.astype(np.int64), list(uniq)


def _factor_codes(factors: Mapping, n: int) -> list[tuple[str, np.ndarray, int]]:
    if not isinstance(factors, Mapping) or not factors:
        raise ValueError("factors must be a non-empty dict {name: one attribute value per sentence}")
    out = []
    for name, values in factors.items():
        v = np.asarray(values, dtype=object)
        if v.ndim != 1 or len(v) != n:
            raise ValueError(f"factor {name!r} must give one value per sentence: expected {n}, got shape {v.shape}")
        codes, levels = _level_codes(v, f"factor {name!r}")
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


def attribute_bootstrap_ci(per_sentence, factors: Mapping, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95, weights: str = "poisson", chunk: int = 256) -> AttributeInterval:
    """Owen's pigeonhole (multiway) bootstrap percentile interval for the mean of ``per_sentence``.

    ``factors`` maps a factor name to one attribute value per sentence (colour, object, ...);
    missing values (None, NaN, "none", "") form their own level. Each bootstrap draw gives every
    level of every factor an independent weight, Poisson(1) (the resampling analogue) or Exp(1)
    (never 0); a sentence's weight is the product of its levels' weights, and the statistic is
    the weighted mean sum(w y) / sum(w). Draws whose weights are all 0 (possible with Poisson
    weights and few levels) are redrawn. Owen (2007) and Owen & Eckles (2012) show the variance
    is slightly conservative for crossed random effects, where an iid bootstrap of sentences
    ignores the variation between levels and under-covers. With few levels per factor (< ~10)
    every interval for a population of levels is rough.
    """
    y = as_scores(per_sentence, "per_sentence")
    n = len(y)
    coded = _factor_codes(factors, n)
    level = _check_level(level)
    if int(n_boot) != n_boot or n_boot < 10:
        raise ValueError(f"n_boot must be an integer >= 10, got {n_boot}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    rng = np.random.default_rng(seed)

    def draw(size):
        return rng.poisson(1.0, size).astype(np.float64) if weights == "poisson" else rng.exponential(1.0, size)

    samples = np.empty(int(n_boot))
    done = 0
    for _ in range(100 * (int(n_boot) // chunk + 1)):
        if done == n_boot:
            break
        b = min(chunk, int(n_boot) - done)
        W = np.ones((b, n))
        for _, codes, L in coded:
            W *= draw((b, L))[:, codes]
        total = W.sum(1)
        ok = total > 0
        m = int(ok.sum())
        samples[done:done + m] = (W[ok] @ y) / total[ok]
        done += m
    if done < n_boot:
        raise ValueError("almost every bootstrap draw gave every sentence weight 0: use weights='exponential'")
    a = (1 - level) / 2
    return AttributeInterval(float(y.mean()), float(np.quantile(samples, a)), float(np.quantile(samples, 1 - a)),
                             float(samples.std(ddof=1)), f"pigeonhole bootstrap ({weights} weights)", samples,
                             {name: L for name, _, L in coded})


def attribute_jackknife_ci(per_sentence, factors: Mapping, level: float = 0.95) -> AttributeInterval:
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
    level = _check_level(level)
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


def level_balanced_mean(per_sentence, levels) -> float:
    """The mean of the per-level means of ``per_sentence`` (each level weighs the same, whatever its size)."""
    y = as_scores(per_sentence, "per_sentence")
    v = np.asarray(levels, dtype=object)
    if v.ndim != 1 or len(v) != len(y):
        raise ValueError(f"levels must give one label per sentence: expected {len(y)}, got shape {v.shape}")
    codes, labels = _level_codes(v, "levels")
    means = np.bincount(codes, weights=y, minlength=len(labels)) / np.bincount(codes, minlength=len(labels))
    return float(means.mean())


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------


def as_scores(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per sentence), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has {int((~np.isfinite(x)).sum())} NaN or infinite value(s)")
    return x


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


