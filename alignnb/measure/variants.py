"""Stage 4: agent variants (extraction points, learners, seeds) against the reference spaces.

Every extraction point of every agent (:mod:`alignnb.extract.points`) is compared with the
language models, the lexical and grammar controls and the bot's behaviour
(:func:`reference_spaces`); two trained variants at the same point give the seed-to-seed
ceiling (:func:`agreement_table`). Tidy DataFrames; nothing here draws or writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import pandas as pd

from alignnb.core.progress import tqdm
from alignnb.extract.embeddings import Embeddings, check_same_sentences
from alignnb.measure import calibration, metrics, nulls

#: The attributes whose values the headline interval resamples (a crossed design).
INTERVAL_FACTORS = ("color", "object")
#: The controls that every agent variant is compared with, besides the language models and the bot.
REFERENCE_CONTROLS = ("bag-of-words", "tf-idf", "bag-of-attributes")


def reference_spaces(spaces: Mapping[str, Embeddings], language_models: Sequence[str],
                     bot: Embeddings | None = None) -> dict[str, Embeddings]:
    """The spaces the agent variants are compared with: each language model, then the controls of
    :data:`REFERENCE_CONTROLS` (those present in ``spaces``), then the bot's behaviour as
    ``"bot-behaviour"`` (if given)."""
    out = {m: spaces[m] for m in [*language_models, *REFERENCE_CONTROLS] if m in spaces}
    if bot is not None:
        out["bot-behaviour"] = bot
    return out


#: A variant of an agent: (learner, seed, extraction); learner "<name>-untrained" for an untrained twin.
Variant = tuple[str, int, str]


def variant_table(variants: Mapping[Variant, Embeddings], references: Mapping[str, Embeddings], k: int = 15,
                  n_boot: int = 2000, seed: int = 0, attributes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every agent variant against every reference space (language models, controls, the bot).

    Columns learner, seed, extraction, model, k, precision (precision@k), rnx (R_NX(k): 0 for
    unrelated spaces), ci_low, ci_high (95% pigeonhole bootstrap over colour and object values,
    as in :func:`summary_table`; the iid interval over sentences without ``attributes``).
    """
    first = next(iter(variants.values()))
    for emb in [*variants.values(), *references.values()]:
        check_same_sentences(first, emb)
    n = len(first.sentences)
    attrs = attributes.loc[first.sentences] if attributes is not None else None
    ref_members = {m: metrics.knn_membership(e.vectors, k) for m, e in references.items()}
    rows = []
    for (learner, s, extraction), emb in tqdm(list(variants.items()), desc="agent variants", leave=False):
        members = metrics.knn_membership(emb.vectors, k)
        for model, mb in ref_members.items():
            per = metrics.overlap_from_membership(members, mb)
            if attrs is not None:
                ci = nulls.attribute_bootstrap_ci(per, {f: attrs[f].to_numpy() for f in INTERVAL_FACTORS},
                                                  n_boot=n_boot, seed=seed)
            else:
                ci = nulls.query_interval(per, n_boot=n_boot, seed=seed)
            p = float(per.mean())
            rows.append({"learner": learner, "seed": int(s), "extraction": extraction, "model": model, "k": k,
                         "precision": p, "rnx": calibration.rnx(p, n, k), "ci_low": ci.low, "ci_high": ci.high})
    return pd.DataFrame(rows)


def agreement_table(variants: Mapping[Variant, Embeddings], k: int = 15) -> pd.DataFrame:
    """precision@k between every two trained agent variants at the same extraction point.

    Columns learner_a, seed_a, learner_b, seed_b, extraction, pair ("seed to seed": one
    learner, two seeds; "learner to learner": two learners), precision, rnx. The seed-to-seed
    rows are the noise ceiling that an agent-vs-language-model number is read against.
    """
    trained = {v: e for v, e in variants.items() if not v[0].endswith("-untrained")}
    n = len(next(iter(trained.values())).sentences)
    members = {v: metrics.knn_membership(e.vectors, k) for v, e in trained.items()}
    rows = []
    for a, b in combinations(trained, 2):
        if a[2] != b[2] or a[:2] == b[:2]:
            continue
        p = float(metrics.overlap_from_membership(members[a], members[b]).mean())
        rows.append({"learner_a": a[0], "seed_a": a[1], "learner_b": b[0], "seed_b": b[1], "extraction": a[2],
                     "pair": "seed to seed" if a[0] == b[0] else "learner to learner", "k": k, "precision": p,
                     "rnx": calibration.rnx(p, n, k)})
    return pd.DataFrame(rows)


def variant_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of :func:`variant_table`: learner, extraction, model, seeds, precision_mean,
    precision_sd, rnx_mean, rnx_sd (sd with ddof=1; NaN for one seed)."""
    g = table.groupby(["learner", "extraction", "model"], sort=False)
    out = g.agg(seeds=("seed", "nunique"), precision_mean=("precision", "mean"), precision_sd=("precision", "std"),
                rnx_mean=("rnx", "mean"), rnx_sd=("rnx", "std"))
    return out.reset_index()


def ceiling_summary(agreement: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and count of :func:`agreement_table` per learner pair and extraction point."""
    if agreement.empty:
        return pd.DataFrame(columns=["learner_a", "learner_b", "extraction", "pair", "pairs", "precision_mean",
                                     "precision_sd"])
    g = agreement.groupby(["learner_a", "learner_b", "extraction", "pair"], sort=False)
    return g.agg(pairs=("precision", "size"), precision_mean=("precision", "mean"),
                 precision_sd=("precision", "std")).reset_index()


def variant_markdown(summary: pd.DataFrame, ceiling: pd.DataFrame, models: Sequence[str]) -> list[str]:
    """The README's table of agent variants: one row per learner and extraction point, one column
    per reference space in ``models`` plus the seed-to-seed ceiling; cells "mean ± sd" over seeds
    (3 decimals; "mean" alone for one seed). Untrained twins are rows of their own."""
    def cell(mean: float, sd: float) -> str:
        return f"{mean:.3f}" if pd.isna(sd) else f"{mean:.3f} ± {sd:.3f}"

    seeds = ceiling[ceiling["pair"] == "seed to seed"] if len(ceiling) else ceiling
    lines = ["| learner | extraction | " + " | ".join(models) + " | seed to seed |",
             "|---|---|" + "---|" * (len(models) + 1)]
    for (learner, extraction), g in summary.groupby(["learner", "extraction"], sort=False):
        by_model = g.set_index("model")
        cells = [cell(by_model.loc[m, "precision_mean"], by_model.loc[m, "precision_sd"]) if m in by_model.index
                 else "" for m in models]
        c = seeds[(seeds["learner_a"] == learner) & (seeds["extraction"] == extraction)] if len(seeds) else seeds
        ceil = cell(c["precision_mean"].iloc[0], c["precision_sd"].iloc[0]) if len(c) else ""
        lines.append(f"| {learner} | {extraction} | " + " | ".join(cells) + f" | {ceil} |")
    return lines
