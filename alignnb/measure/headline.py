"""Stage 4: the headline table over the agent's seeds.

:func:`summary_over_seeds` runs :func:`alignnb.measure.analysis.summary_table` once per seed of the
primary learner (each seed's agent against its own untrained twin, the next seed as its
replicate), then adds a block of rows with seed "mean". ``figures/alignment_summary.csv`` holds
both; :func:`over_seeds` and :func:`of_seed` read them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from alignnb.extract.embeddings import Embeddings
from alignnb.extract.models import family_of
from alignnb.measure import inference, metrics
from alignnb.measure.analysis import SUMMARY_COLUMNS, summary_table
from alignnb.measure.variants import INTERVAL_FACTORS, Variant


#: The columns of the over-seeds block that are not averaged: p-values (the largest over seeds is shown).
_WORST_OVER_SEEDS = ("p_value", "p_within_level", "p_within_verb", "procrustes_p", "cka_p", "cka_deconfounded_p",
                     "rsa_deconfounded_p")


def seed_spaces(spaces: Mapping[str, Embeddings], variants: Mapping[Variant, Embeddings], seed: int,
                seeds: Sequence[int], learner: str = "transformer", extraction: str = "embedding",
                agent: str = "agent") -> dict[str, Embeddings]:
    """The headline's spaces with seed ``seed``'s agent as ``agent``: its own untrained twin as
    ``<agent>-untrained`` and the next seed of ``seeds`` (cyclically) as ``<agent>-replicate``
    (left as it is when there is one seed)."""
    order = list(seeds)
    swaps = {agent: (learner, seed), f"{agent}-untrained": (f"{learner}-untrained", seed)}
    if len(order) > 1:
        swaps[f"{agent}-replicate"] = (learner, order[(order.index(seed) + 1) % len(order)])
    out = dict(spaces)
    for name, (ln, s) in swaps.items():
        if name in spaces and (ln, s, extraction) not in variants:
            raise ValueError(f"seed {seed}: no {ln!r} variant of seed {s} at {extraction!r} for {name!r}; "
                             "run notebook 03 with the same study parameters")
        if name in spaces:
            e = variants[(ln, s, extraction)]
            out[name] = Embeddings(name, e.sentences, e.vectors, {**(spaces[name].meta or {}), "seed": s})
    return out


def summary_over_seeds(spaces: Mapping[str, Embeddings], variants: Mapping[Variant, Embeddings],
                       reference: str = "agent", k: int = 15, n_perm: int = 1000, n_boot: int = 200, seed: int = 0,
                       attributes: pd.DataFrame | None = None, learner: str = "transformer",
                       extraction: str = "embedding") -> pd.DataFrame:
    """The headline table once per seed of ``learner`` (:func:`seed_spaces`), then a block of rows
    with seed "mean": each model's mean over seeds.

    In the mean block, ``precision_sd`` is the sd over seeds; ``ci_low``/``ci_high`` are the
    hierarchical bootstrap of the over-seeds mean (seeds resampled, colours and objects by shared
    pigeonhole weights: :func:`alignnb.measure.inference.hierarchical_bootstrap`); the p-value
    columns hold the largest p over seeds; every other number is the mean over seeds. The slow
    "rescore" nulls of the whole-space metrics (procrustes_p, cka_p, the deconfounded nulls) are
    drawn for the first seed only, so their p in the mean block is that seed's.
    """
    seeds = sorted(s for (ln, s, x) in variants if ln == learner and x == extraction)
    if not seeds:
        raise ValueError(f"no {learner!r} variant at {extraction!r}: cannot build the headline over seeds")
    tables, per_sentence, cache = [], {}, {}
    for s in seeds:
        sp = seed_spaces(spaces, variants, s, seeds, learner, extraction)
        table = summary_table(sp, reference, k, n_perm=n_perm, n_boot=n_boot, seed=seed, attributes=attributes,
                              whole_space_nulls=s == seeds[0], members_cache=cache)
        tables.append(table.assign(seed=s))
        for m in table["model"]:
            per_sentence.setdefault(m, []).append(metrics.per_sentence_precision(sp[reference].vectors,
                                                                                 sp[m].vectors, k))
    rows = pd.concat(tables, ignore_index=True)
    numeric = [c for c in rows.columns if c not in ("model", "family", "seed") and pd.api.types.is_numeric_dtype(rows[c])]
    g = rows.groupby("model", sort=False)
    mean = g[numeric].mean()
    for c in _WORST_OVER_SEEDS:
        if c in mean:
            mean[c] = g[c].max()
    mean["precision_sd"] = g["precision"].std(ddof=1)
    if attributes is not None:
        attrs = attributes.loc[spaces[reference].sentences]
        factors = {f: attrs[f].to_numpy() for f in INTERVAL_FACTORS}
        for m, values in per_sentence.items():
            draws = inference.hierarchical_bootstrap(np.stack(values), factors, n_boot, seed=seed)
            mean.loc[m, "ci_low"], mean.loc[m, "ci_high"] = inference.percentile_interval(draws)
    mean = mean.reset_index().assign(family=lambda d: d["model"].map(family_of), seed="mean")
    out = pd.concat([rows.assign(seed=rows["seed"].astype(object)), mean], ignore_index=True)
    return out[["seed", *[c for c in SUMMARY_COLUMNS if c in out], "precision_sd",
                *[c for c in out if c not in SUMMARY_COLUMNS and c not in ("seed", "precision_sd")]]]


def over_seeds(summary: pd.DataFrame) -> pd.DataFrame:
    """The mean-over-seeds block of :func:`summary_over_seeds` (one row per model); a table without
    a seed column is returned as it is."""
    if "seed" not in summary:
        return summary
    return summary[summary["seed"].astype(str) == "mean"].reset_index(drop=True)


def of_seed(summary: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The rows of one seed of :func:`summary_over_seeds` (one row per model)."""
    return summary[summary["seed"].astype(str) == str(seed)].reset_index(drop=True)
