"""The permutation-null engine: one way to draw the null of any registered metric.

permutation null  B's rows shuffled (the sentence correspondence broken), the metric of
                  :data:`alignnb.measure.metrics.METRICS` recomputed from prepared spaces (k-NN
                  memberships are relabelled, never recomputed); p = (1 + #{null >= s}) /
                  (1 + n_perm), with the inequality reversed for a lower-is-better metric.
restricted null   each shuffle moves a sentence only within its stratum (its level, its
                  verb). A global shuffle breaks every shared structure, including the coarse
                  structure both spaces get for free from the stratum (both separate the four
                  BabyAI levels); the restricted null keeps it, so it asks whether the spaces
                  agree *within* strata (Good 2005, "Permutation, parametric and bootstrap
                  tests of hypotheses", ch. 3; Winkler et al. 2014, NeuroImage 92,
                  exchangeability blocks).

:func:`permutation_test` is the engine: it draws ``n_perm`` permutations from the
``analysis`` stream (:func:`alignnb.core.streams.rng`), evaluates a statistic of the
permutation (a number, or one number per k, per layer pair, ...) and returns a
:class:`NullResult` carrying the draws, the 2.5/97.5 band, q95/q05 and the p-value.
:func:`permutation_null` (one metric), :func:`prepared_null` (prepared spaces, several k at
once), :mod:`~alignnb.measure.calibration` and the tables all call it. The resampling
intervals live in :mod:`alignnb.measure.intervals` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignnb.core import streams
# the intervals were part of this module: re-exported so ``nulls.query_interval`` and so on keep working
from alignnb.measure.intervals import (AttributeInterval, IntervalResult, attribute_bootstrap_ci,  # noqa: F401
                                       attribute_jackknife_ci, level_balanced_mean, query_interval,
                                       subsample_interval)
from alignnb.measure.checks import as_scores, check_count, check_pair, level_codes  # noqa: F401
from alignnb.measure.metrics import Metric, get_metric

#: The central band of a null that tables and figures show: its 2.5 and 97.5 percentiles.
BAND = (2.5, 97.5)

#: Scores closer than this count as tied with the observed one in p-values: precision@k values
#: that are equal in exact arithmetic can differ in the last bits by summation order.
TIE_TOLERANCE = 1e-12


def _scalar(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


@dataclass
class NullResult:
    """A permutation test of one alignment score (or of one score per k / per setting).

    ``null`` holds the draws, [n_perm] (or [n_perm, m] for m scores tested under the same
    permutations); every other number is derived from it here, once: ``null_low`` and
    ``null_high`` the 2.5 / 97.5 percentiles (:data:`BAND`), ``null_q95`` / ``null_q05`` the 95th
    / 5th, ``p_value`` (1 + #{null at least as good as observed}) / (1 + n_perm). All
    percentiles are ``np.percentile`` (linear interpolation) along the draws.
    """

    observed: float | np.ndarray
    null: np.ndarray = field(repr=False)
    greater_is_better: bool = True
    stratified: bool = False
    null_low: float | np.ndarray = field(init=False)
    null_high: float | np.ndarray = field(init=False)
    null_q95: float | np.ndarray = field(init=False)
    null_q05: float | np.ndarray = field(init=False)  # the critical value when lower is better
    p_value: float | np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.null = np.asarray(self.null, dtype=float)
        if self.null.ndim not in (1, 2) or len(self.null) == 0:
            raise ValueError(f"null must hold at least one draw, [n_perm] or [n_perm, m]; got shape {self.null.shape}")
        self.observed = _scalar(np.asarray(self.observed, dtype=float))
        q = np.percentile(self.null, [BAND[0], BAND[1], 95, 5], axis=0)
        self.null_low, self.null_high, self.null_q95, self.null_q05 = (_scalar(v) for v in q)
        self.p_value = p_value(self.observed, self.null, self.greater_is_better)

    @property
    def n_perm(self) -> int:
        return len(self.null)

    @property
    def null_mean(self) -> float | np.ndarray:
        return _scalar(self.null.mean(0))


def p_value(observed: float | np.ndarray, null: np.ndarray, greater_is_better: bool = True) -> float | np.ndarray:
    """(1 + #{null at least as good as observed, ties within TIE_TOLERANCE}) / (1 + len(null)), along the draws."""
    null = np.asarray(null, dtype=float)
    as_good = (null >= observed - TIE_TOLERANCE) if greater_is_better else (null <= observed + TIE_TOLERANCE)
    return _scalar(np.asarray((1 + as_good.sum(0)) / (1 + len(null)), dtype=float))


# --------------------------------------------------------------------------------------
# permutations: global or within strata
# --------------------------------------------------------------------------------------


def _strata_codes(strata: Any, n: int) -> np.ndarray:
    s = np.asarray(strata, dtype=object)
    if s.ndim != 1 or len(s) != n:
        raise ValueError(f"strata must give one label per sentence: expected {n} labels, got shape {s.shape}")
    return level_codes(s, "strata")[0]


def _restricted_from_codes(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    order = np.argsort(codes, kind="stable")  # indices grouped by stratum
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    perm = np.empty(len(codes), dtype=np.int64)
    for group in np.split(order, bounds):
        perm[group] = rng.permutation(group)
    return perm


def restricted_permutation(strata: Any, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """A random permutation ``perm`` of range(n) with strata[perm[i]] == strata[i] for every i.

    ``strata`` holds one label per sentence (e.g. its level or its verb); the indices of each
    stratum are shuffled among themselves, uniformly. A stratum of one sentence stays in place.
    ``rng``: a Generator, or a seed of the ``analysis`` stream. Apply it as ``B[perm]`` or
    :func:`alignnb.measure.metrics.relabel_membership`.
    """
    s = np.asarray(strata, dtype=object)
    if s.ndim != 1 or len(s) == 0:
        raise ValueError(f"strata must be a non-empty 1-D array of labels, got shape {s.shape}")
    return _restricted_from_codes(level_codes(s, "strata")[0], streams.rng("analysis", rng))


def permutation_sampler(n: int, strata: Any, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """A function drawing one permutation of range(n) per call from ``rng``: global, or within ``strata``."""
    if strata is None:
        return lambda: rng.permutation(n)
    codes = _strata_codes(strata, n)
    return lambda: _restricted_from_codes(codes, rng)


# --------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------


def permutation_test(statistic: Callable[[np.ndarray], float | Sequence[float] | np.ndarray],
                     observed: float | Sequence[float] | np.ndarray, n: int, n_perm: int = 1000, seed: int = 0,
                     strata: Any = None, greater_is_better: bool = True) -> NullResult:
    """The permutation null of ``statistic``: its value at ``n_perm`` seeded permutations of range(n).

    ``statistic(perm)`` scores the data with B's rows taken as ``B[perm]`` (a number, or an
    array: one score per k, per layer pair, ...); ``observed`` is its value at the identity.
    Permutations come from ``streams.rng("analysis", seed)`` (the same ones for the same seed,
    whatever the statistic), shuffling globally or, with ``strata`` (one label per sentence),
    only within strata.
    """
    n_perm = check_count(n_perm, "n_perm")
    draw = permutation_sampler(int(n), strata, streams.rng("analysis", seed))
    null = np.array([statistic(draw()) for _ in range(n_perm)], dtype=float)
    return NullResult(observed, null, greater_is_better, strata is not None)


def prepared_null(metric: str | Metric, pa: Any, pb: Any, n: int, n_perm: int = 1000, seed: int = 0,
                  strata: Any = None) -> NullResult:
    """The permutation null of ``metric`` between two spaces already prepared (``Metric.prepare``).

    ``pa``, ``pb``: one prepared form each, or two equally long lists of them (e.g. the k-NN
    memberships at several k), which are then tested under the same permutations and give a
    [n_perm, len(pa)] null.
    """
    m = get_metric(metric)
    if isinstance(pa, list):
        if not isinstance(pb, list) or len(pa) != len(pb):
            raise ValueError("pa and pb must both be single prepared spaces or lists of the same length")
        observed = [float(m.compare(a, b)) for a, b in zip(pa, pb)]
        scores = [_relabelled(m, a, b) for a, b in zip(pa, pb)]
        return permutation_test(lambda perm: [score(perm) for score in scores], observed,
                                n, n_perm, seed, strata, m.higher_is_better)
    return permutation_test(_relabelled(m, pa, pb), float(m.compare(pa, pb)), n, n_perm, seed, strata,
                            m.higher_is_better)


def _relabelled(m: Metric, pa: Any, pb: Any) -> Callable[[np.ndarray], float]:
    """perm -> the metric of pa against pb relabelled by perm (the metric's fast path if it has one)."""
    if m.relabelled is not None:
        return m.relabelled(pa, pb)
    return lambda perm: m.compare(pa, m.relabel(pb, perm))


def permutation_null(metric: str | Metric, A: Any, B: Any, k: int = 15, n_perm: int = 1000, seed: int = 0,
                     strata: Any = None) -> NullResult:
    """Score A against B with a registered metric, then with B's rows shuffled ``n_perm`` times (seeded).

    ``strata`` (one label per sentence, e.g. its level or verb) restricts each shuffle to
    within strata (:func:`restricted_permutation`); None shuffles globally. Each space is
    prepared once (:class:`alignnb.measure.metrics.Metric`); a permuted B is its prepared form
    relabelled, which for precision@k is exact and fast.
    """
    m = get_metric(metric)
    A, B = check_pair(A, B, k if m.uses_k else None)
    check_count(n_perm, "n_perm")
    return prepared_null(m, m.prepare(A, k), m.prepare(B, k), len(A), n_perm, seed, strata)
