"""Inference over seeds: the tests and intervals behind the training effect (E1) and the model contrasts (E2).

The unit of replication is the agent's seed; within a seed the sentences are a crossed design
(every colour with every object), so neither seeds nor sentences are independent draws alone.

========================  =====================================================================
function                  what it computes
========================  =====================================================================
sign_flip_test            exact p of mean(x) over seeds: all 2^S sign patterns of the S values
                          (a seed-level paired test; with 5 seeds p >= 1/32 one-sided,
                          2/32 two-sided)
block_sign_flip_test      Monte-Carlo p of mean(d) for per-sentence differences d [S, n]: one
                          random sign per block (colour x object cell), the same for every seed,
                          so swapping the two spaces' labels stays within blocks
hierarchical_bootstrap    draws of mean_s mean_i d[s, i]: seeds resampled with replacement, and
                          within each draw one row of pigeonhole weights over colours and objects
                          shared by every seed and by both terms of d (paired)
bootstrap_p               two-sided p of 0 under the bootstrap draws: 2 min(P(x* <= 0), P(x* >= 0))
holm                      Holm's (1979) step-down adjusted p-values of one family
========================  =====================================================================

Every generator is the ``analysis`` stream (:func:`alignnb.core.streams.rng`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import product
from typing import Any

import numpy as np

from alignnb.core import streams
from alignnb.measure.checks import check_count, level_codes
from alignnb.measure.intervals import pigeonhole_weights

#: Sign-flip tests enumerate every pattern up to this many seeds (2^16 patterns), else they sample.
EXACT_SEEDS = 16
ALTERNATIVES = ("two-sided", "greater", "less")


def _check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    return alternative


def _tail(null: np.ndarray, observed: float, alternative: str, tol: float = 1e-12) -> np.ndarray:
    if alternative == "greater":
        return null >= observed - tol
    if alternative == "less":
        return null <= observed + tol
    return np.abs(null) >= abs(observed) - tol


def sign_flip_test(values: Any, alternative: str = "two-sided") -> float:
    """Exact sign-flip p of mean(values) = 0: the share of the 2^S sign patterns whose mean is at
    least as extreme as the observed one (the identity pattern included).

    ``values``: one paired difference per seed (e.g. trained minus its own untrained twin).
    Under H0 each difference is symmetric about 0. "greater"/"less" are one-sided. The smallest
    possible p is 2^-S one-sided and 2^(1-S) two-sided (with all values non-zero).
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"values must be a 1-D array of finite numbers, one per seed; got {values!r}")
    if len(x) > EXACT_SEEDS:
        raise ValueError(f"an exact sign-flip test enumerates 2^S patterns: at most {EXACT_SEEDS} values, got {len(x)}")
    alternative = _check_alternative(alternative)
    signs = np.array(list(product((1.0, -1.0), repeat=len(x))))
    null = signs @ x / len(x)
    return float(_tail(null, x.mean(), alternative).mean())


def block_sign_flip_test(d: Any, blocks: Any, n_perm: int = 10_000, seed: int = 0,
                         alternative: str = "two-sided") -> tuple[float, np.ndarray]:
    """Monte-Carlo p of mean(d) = 0 for per-sentence differences ``d`` [S, n] (or [n]), flipping
    signs by block.

    ``blocks`` gives each sentence its block (e.g. its colour x object cell). Each draw gives
    every block one random sign, the same in every seed, so the statistic mean_s mean_i e_b(i)
    d[s, i] is what swapping the labels of the two compared spaces within blocks gives. Returns
    (p, null draws); p = (1 + #{as extreme}) / (1 + n_perm).
    """
    D = np.atleast_2d(np.asarray(d, dtype=float))
    if D.ndim != 2 or not np.all(np.isfinite(D)):
        raise ValueError(f"d must be [seeds, sentences] of finite numbers, got shape {np.shape(d)}")
    S, n = D.shape
    codes, labels = level_codes(np.asarray(blocks, dtype=object), "blocks")
    if len(codes) != n:
        raise ValueError(f"blocks must give one label per sentence: expected {n}, got {len(codes)}")
    n_perm = check_count(n_perm, "n_perm")
    alternative = _check_alternative(alternative)
    block_sums = np.zeros(len(labels))
    np.add.at(block_sums, codes, D.sum(0))
    block_sums /= S * n  # the statistic is signs @ block_sums
    rng = streams.rng("analysis", seed)
    signs = rng.choice((-1.0, 1.0), size=(n_perm, len(labels)))
    null = signs @ block_sums
    observed = float(block_sums.sum())
    p = (1 + _tail(null, observed, alternative).sum()) / (1 + n_perm)
    return float(p), null


def seed_resampling(n_draws: int, n_seeds: int, rng: np.random.Generator) -> np.ndarray:
    """[n_draws, n_seeds] counts: how often each seed is drawn when n_seeds are drawn with replacement."""
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=int(n_draws)).astype(float)


def hierarchical_bootstrap(d: Any, factors: Mapping | None, n_boot: int = 2000, seed: int = 0,
                           weights: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap draws of mean_s mean_i d[s, i]: seeds resampled, sentences by pigeonhole weights.

    ``d``: [S, n] per-sentence differences (one row per seed), or [n_boot, S, n] when each draw
    has its own values (behaviour, whose probe states are resampled too). Each draw resamples
    the S seeds with replacement and weighs the sentences by one row of Owen's pigeonhole
    weights over ``factors`` (the same row for every seed: the same colours and objects are
    drawn for all of them); with ``factors`` None the sentences are not resampled. ``weights``
    (precomputed rows, [n_boot, n]) overrides ``factors``, so that several statistics can share
    the same draws.
    """
    D = np.asarray(d, dtype=float)
    if D.ndim not in (2, 3):
        raise ValueError(f"d must be [seeds, sentences] or [draws, seeds, sentences], got shape {D.shape}")
    n_boot = check_count(n_boot, "n_boot", least=2)
    if D.ndim == 3 and len(D) != n_boot:
        raise ValueError(f"d holds {len(D)} draws, n_boot is {n_boot}")
    S, n = D.shape[-2:]
    rng = streams.rng("analysis", seed)
    if weights is None:
        weights = pigeonhole_weights(factors, n_boot, rng) if factors else np.ones((n_boot, n))
    W = np.asarray(weights, dtype=float)
    if W.shape != (n_boot, n):
        raise ValueError(f"weights must be [n_boot, n] = [{n_boot}, {n}], got {W.shape}")
    counts = seed_resampling(n_boot, S, rng)
    if D.ndim == 2:
        per_seed = (W @ D.T) / W.sum(1, keepdims=True)  # [n_boot, S]
    else:
        per_seed = np.einsum("bn,bsn->bs", W, D) / W.sum(1, keepdims=True)
    return (counts * per_seed).sum(1) / S


def bootstrap_p(draws: Any) -> float:
    """Two-sided bootstrap p of the value 0: 2 min(P(draw <= 0), P(draw >= 0)), at most 1, at least
    1/len(draws) (a p of 0 cannot be claimed from finitely many draws)."""
    x = np.asarray(draws, dtype=float)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError("draws must be a 1-D array of at least 2 bootstrap values")
    p = 2 * min(float((x <= 0).mean()), float((x >= 0).mean()))
    return float(min(1.0, max(p, 1.0 / len(x))))


def percentile_interval(draws: Any, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap draws."""
    a = (1 - level) / 2
    x = np.asarray(draws, dtype=float)
    return float(np.quantile(x, a)), float(np.quantile(x, 1 - a))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: sorted p_(1) <= ... <= p_(m) become
    max_{j <= i} min(1, (m - j + 1) p_(j)), returned in the input order. NaN entries are left out
    of the family and stay NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if len(ok) == 0:
        return out
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p_values!r}")
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def p_floor(n_perm: int) -> float:
    """The smallest p-value a permutation null of ``n_perm`` draws can give: 1 / (n_perm + 1)."""
    return 1.0 / (int(n_perm) + 1)


def null_z(observed: float, null: Any) -> float:
    """The observed value in standard deviations of its null above the null's mean (ranks
    spaces whose p-values all sit at the floor)."""
    x = np.asarray(null, dtype=float)
    sd = float(x.std(ddof=1))
    return float((observed - x.mean()) / sd) if sd > 0 else float("nan")


def format_p(p: float, n_perm: int | None = None) -> str:
    """A p-value for a reader: "p <= 1/(n+1)" when it sits at its permutation floor, else 3 digits."""
    if n_perm is not None and p <= p_floor(n_perm) + 1e-15:
        return f"p <= 1/{int(n_perm) + 1}"
    return f"p = {p:.3f}" if p >= 0.001 else f"p = {p:.1e}"
