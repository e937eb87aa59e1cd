"""Stage 4: alignment across all models, with controls, statistics and sensitivity checks.

Everything returns tidy pandas DataFrames (a score is a ``precision`` column beside a ``k``
column, never a column named after k); nothing here draws or writes (plots.py and the
notebooks do). Inputs are :class:`~alignnb.extract.embeddings.Embeddings` keyed by model name, all
of the same ordered sentence list (checked). Neighbours are k-NN memberships
(:func:`~alignnb.measure.metrics.knn_membership`): a sentence tied for the k-th place counts
fractionally, with its chance of a place under random tie-breaking, so no number here depends
on the order of the sentences.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from alignnb.core.progress import tqdm

from alignnb.measure import calibration
from alignnb.measure import metrics
from alignnb.measure import nulls
from alignnb.extract.embeddings import Embeddings, check_all, check_same_sentences
from alignnb.measure.preprocessing import deconfounded_cka, deconfounded_rsa, preprocess
from alignnb.extract.controls import bag_of_words
from alignnb.extract.models import family_of, get_spec, language_models


def pairwise_matrix(spaces: Mapping[str, Embeddings], metric: str = "precision", k: int = 15) -> pd.DataFrame:
    """Symmetric [model x model] matrix of a registered metric (:data:`alignnb.measure.metrics.METRICS`)."""
    m = metrics.get_metric(metric)
    keys = check_all(spaces)
    if m.uses_k:
        metrics.check_pair(spaces[keys[0]].vectors, spaces[keys[0]].vectors, k)
    prepared = {key: m.prepare(spaces[key].vectors, k) for key in keys}  # neighbours once per space
    out = pd.DataFrame(np.nan, index=keys, columns=keys)
    for a in keys:
        out.loc[a, a] = m.identical
    for a, b in combinations(keys, 2):
        out.loc[a, b] = out.loc[b, a] = float(m.compare(prepared[a], prepared[b]))
    return out


def precision_vs_k(spaces: Mapping[str, Embeddings], reference: str = "agent", ks: Sequence[int] = range(1, 51),
                   n_perm: int = 200, seed: int = 0) -> pd.DataFrame:
    """precision@k of ``reference`` against every other space for each k, with chance and null band.

    Columns: model, family, k, precision, chance (k/(n-1)), null_low, null_high (2.5 and 97.5
    percentiles of the permutation null).
    """
    keys = check_all(spaces)
    ref = spaces[reference].vectors
    n = len(ref)
    asked = list(ks)
    ks = [k for k in asked if k < n]
    if not ks:
        raise ValueError(f"every k of {asked} is at least the number of sentences n={n}: choose k < n")
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(n) for _ in range(n_perm)]
    ma = {k: metrics.knn_membership(ref, k) for k in ks}
    rows = []
    for key in tqdm([key for key in keys if key != reference], desc="precision vs k", leave=False):
        mb = {k: metrics.knn_membership(spaces[key].vectors, k) for k in ks}
        null = np.empty((n_perm, len(ks)))
        for p, perm in enumerate(perms):
            null[p] = [metrics.overlap_from_membership(ma[k], metrics.relabel_membership(mb[k], perm)).mean()
                       for k in ks]
        for j, k in enumerate(ks):
            rows.append({"model": key, "family": family_of(key), "k": k,
                         "precision": float(metrics.overlap_from_membership(ma[k], mb[k]).mean()),
                         "chance": metrics.chance_precision(n, k),
                         "null_low": float(np.percentile(null[:, j], 2.5)),
                         "null_high": float(np.percentile(null[:, j], 97.5))})
    return pd.DataFrame(rows)


def layer_sweep(layers: Embeddings, reference: Embeddings, k: int = 15) -> pd.DataFrame:
    """precision@k of ``reference`` against each layer of an all-layers set (columns layer, precision)."""
    check_same_sentences(layers, reference)
    if layers.vectors.ndim != 3:
        raise ValueError(f"{layers.model}: expected an all-layers set (embed with layer='all')")
    kr = metrics.knn_membership(reference.vectors, k)
    rows = [{"model": layers.model, "layer": i,
             "precision": float(metrics.overlap_from_membership(kr, metrics.knn_membership(v, k)).mean())}
            for i, v in enumerate(layers.vectors)]
    return pd.DataFrame(rows)


#: The attributes whose values the headline interval resamples (a crossed design).
INTERVAL_FACTORS = ("color", "object")


def summary_table(spaces: Mapping[str, Embeddings], reference: str = "agent", k: int = 15, n_perm: int = 1000,
                  n_boot: int = 200, seed: int = 0, attributes: pd.DataFrame | None = None,
                  ks_auc: Sequence[int] = range(1, 51)) -> pd.DataFrame:
    """The headline table: one row per model compared with ``reference``, every number beside its null.

    Columns:
    - k, n, precision (precision@k), chance (k/(n-1)), rnx (R_NX(k), 0 for unrelated spaces),
      rnx_auc (area under R_NX over log k for ``ks_auc``);
    - calibrated ((s - tau)/(1 - tau) clipped at 0, tau the null's critical value), null_q95,
      p_value (global permutation null, ``n_perm`` draws), p_within_level and p_within_verb
      (restricted nulls: sentences shuffled only within their level / verb);
    - ci_low, ci_high: 95% pigeonhole bootstrap over colour and object values (a crossed
      design); ci_low_iid, ci_high_iid: the naive interval over sentences, for comparison;
      level_balanced: the mean of the per-level precisions;
    - precision_centred, rnx_centred: the same after mean-centring both spaces;
    - procrustes_disparity with procrustes_p, retrieval_top1; cka (unbiased linear CKA) with
      cka_p; cka_biased; rsa; cka_deconfounded and rsa_deconfounded (the bag-of-words
      similarity regressed out, Cui et al. 2022). The CKA and Procrustes nulls use
      max(99, n_perm // 5) draws: each recomputes a decomposition.

    ``attributes`` (indexed by sentence, with level, verb, color and object) is needed for the
    restricted nulls, the attribute interval and the level-balanced mean.
    """
    keys = check_all(spaces)
    sentences = spaces[reference].sentences
    ref = spaces[reference].vectors
    n = len(ref)
    attrs = attributes.loc[sentences] if attributes is not None else None
    lexical = bag_of_words(sentences)[0]
    ref_centred = preprocess(ref, "centred")
    ks_auc = [kk for kk in ks_auc if kk < n - 1]
    ref_members = {kk: metrics.knn_membership(ref, kk) for kk in ks_auc}
    n_slow = max(99, n_perm // 5)
    rows = []
    for key in tqdm([key for key in keys if key != reference], desc="headline table", leave=False):
        B = spaces[key].vectors
        cal = calibration.calibrate_precision(ref, B, k, n_perm=n_perm, seed=seed)
        per = metrics.per_sentence_precision(ref, B, k)
        iid = nulls.query_interval(per, n_boot=n_boot, seed=seed)
        row = {"model": key, "family": family_of(key), "k": k, "n": n, "precision": cal.score,
               "chance": metrics.chance_precision(n, k), "rnx": calibration.rnx(cal.score, n, k),
               "rnx_auc": calibration.rnx_auc(ks_auc, [calibration.rnx(metrics.overlap_from_membership(
                   ref_members[kk], metrics.knn_membership(B, kk)).mean(), n, kk) for kk in ks_auc]),
               "calibrated": cal.calibrated, "null_q95": float(np.percentile(cal.null, 95)), "p_value": cal.p_value}
        if attrs is not None:
            for name, column in (("p_within_level", "level"), ("p_within_verb", "verb")):
                row[name] = nulls.permutation_null("precision", ref, B, k, n_perm, seed, strata=attrs[column]).p_value
            ci = nulls.attribute_bootstrap_ci(per, {f: attrs[f].to_numpy() for f in INTERVAL_FACTORS},
                                              n_boot=n_boot, seed=seed)
            row.update(ci_low=ci.low, ci_high=ci.high, level_balanced=nulls.level_balanced_mean(per, attrs["level"]))
        row.update(ci_low_iid=iid.low, ci_high_iid=iid.high)
        centred = metrics.precision_at_k(ref_centred, preprocess(B, "centred"), k)
        row.update(precision_centred=centred, rnx_centred=calibration.rnx(centred, n, k))
        pr = metrics.procrustes(ref, B, seed=seed)
        row.update(procrustes_disparity=pr.disparity, retrieval_top1=pr.retrieval_top1,
                   procrustes_p=nulls.permutation_null("procrustes_disparity", ref, B, n_perm=n_slow, seed=seed).p_value)
        cka = nulls.permutation_null("cka_unbiased", ref, B, n_perm=n_slow, seed=seed)
        row.update(cka=cka.observed, cka_p=cka.p_value, cka_biased=metrics.cka(ref, B), rsa=metrics.rsa(ref, B),
                   cka_deconfounded=_or_nan(deconfounded_cka, ref, B, lexical),
                   rsa_deconfounded=_or_nan(deconfounded_rsa, ref, B, lexical))
        rows.append(row)
    return pd.DataFrame(rows)


def _or_nan(fn: Callable[..., float], *args: np.ndarray) -> float:
    """fn(*args), or NaN where it is undefined (a space fully explained by the confounder)."""
    try:
        return fn(*args)
    except ValueError:
        return float("nan")


def tie_table(spaces: Mapping[str, Embeddings], reference: str = "agent", k: int = 15) -> pd.DataFrame:
    """How much ties at the k-th neighbour matter, per space.

    Columns: model, rows_with_ties (share of sentences whose k-th place is tied), tied_mean
    (mean number of sentences tied for it, on those rows), precision (with ``reference``, tied
    sentences as fractional neighbours, the study's rule) and precision_index_ties (the same with
    ties broken by the lower sentence index, as a plain top-k does).
    """
    keys = check_all(spaces)
    ref = spaces[reference].vectors
    rows = []
    for key in keys:
        X = spaces[key].vectors
        m = metrics.knn_membership(X, k)
        tied_count = np.add.reduceat((m.data < 1).astype(int), m.indptr[:-1])  # fractional neighbours per row
        tied_rows = tied_count > 0
        rows.append({"model": key, "rows_with_ties": float(tied_rows.mean()),
                     "tied_mean": float(tied_count[tied_rows].mean()) if tied_rows.any() else 0.0,
                     "precision": metrics.precision_at_k(ref, X, k) if key != reference else 1.0,
                     "precision_index_ties": metrics.precision_at_k(ref, X, k, ties="index") if key != reference else 1.0})
    return pd.DataFrame(rows)


def neighbour_attribute_share(emb: Embeddings, attributes: pd.DataFrame, k: int = 15,
                              columns: Sequence[str] = ("verb", "color", "object", "loc")) -> pd.DataFrame:
    """For each attribute, the mean share of a sentence's k neighbours with the same value.

    Also gives the share expected of k random other sentences (``chance``), so a reader can
    see which attributes organise each space. ``attributes`` is indexed like the sentences.
    """
    if list(attributes.index) != list(emb.sentences):
        attributes = attributes.loc[emb.sentences]
    member = metrics.knn_membership(emb.vectors, k).tocoo()  # tied neighbours count fractionally
    n = member.shape[0]
    rows = []
    for col in columns:
        values = attributes[col].fillna("n/a").astype(str).to_numpy()
        same = values[member.row] == values[member.col]
        share = np.bincount(member.row, weights=member.data * same, minlength=n) / k
        counts = pd.Series(values).value_counts()
        chance = float(np.mean((counts[values].to_numpy() - 1) / (n - 1)))
        rows.append({"model": emb.model, "attribute": col, "share": float(share.mean()), "chance": chance})
    return pd.DataFrame(rows)


#: The paper's reported precision@15 between the agent and each family (from its abstract):
#: decoder LLMs and BLIP 0.70-0.73; CLIP and BERT "clearly less" (no number given).
PAPER_PRECISION_AT_15 = {
    "LLaMA": "0.70-0.73", "Qwen": "0.70-0.73", "DeepSeek": "0.70-0.73", "BLIP": "0.70-0.73",
    "CLIP": "clearly lower", "BERT": "clearly lower",
}


def paper_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """Our agent-vs-model precision@k (columns k, precision) beside the paper's reported
    precision@15 for the same family."""
    rows = []
    for _, r in summary.iterrows():
        try:
            pf = get_spec(r["model"]).paper_family
        except KeyError:
            pf = ""
        rows.append({"model": r["model"], "paper_family": pf or "(none)",
                     "paper_precision_at_15": PAPER_PRECISION_AT_15.get(pf, "n/a"),
                     "k": int(r["k"]), "precision": r["precision"]})
    return pd.DataFrame(rows)


#: What each control stands for, in the headline's words.
CONTROL_ROLES = {"agent-untrained": "floor: no training", "bag-of-words": "shared words alone",
                 "tf-idf": "shared words, weighted", "bag-of-attributes": "the grammar alone",
                 "agent-replicate": "ceiling: another agent from the next seed"}


def headline_lines(summary: pd.DataFrame, conclusions: pd.DataFrame) -> list[str]:
    """The headline in sentences (markdown bullets): the best language model with its chance
    level, R_NX, calibrated score and attribute interval; each control's score; and the
    comparisons that survive every analysis choice, per metric."""
    k, n = int(summary["k"].iloc[0]), int(summary["n"].iloc[0])
    lm_rows = summary[summary["model"].isin(language_models(summary["model"]))]
    best = (lm_rows if len(lm_rows) else summary).sort_values("precision", ascending=False).iloc[0]
    by_model = summary.set_index("model")
    interval = (f", 95% interval over colours and objects {best['ci_low']:.3f}-{best['ci_high']:.3f}"
                if "ci_low" in best else "")
    lines = [f"- Highest precision@{k} of a language model with the agent: **{best['model']}** "
             f"({best['precision']:.3f}{interval}; chance {best['chance']:.3f}; R_NX {best['rnx']:.3f}; "
             f"calibrated {best['calibrated']:.3f})."]
    for control, role in CONTROL_ROLES.items():
        if control in by_model.index:
            lines.append(f"- Control {control} ({role}): {by_model.loc[control, 'precision']:.3f} "
                         f"(R_NX {by_model.loc[control, 'rnx']:.3f}).")
    survive = conclusions[conclusions["survives_every_choice"]]
    said = "; ".join(f"{r.comparison} ({r.metric})" for r in survive.itertuples()) or "none"
    lines.append(f"- Conclusions that hold in every setting of the sensitivity table: {said}.")
    return lines


def spaces_to_picture(keys: Sequence[str], reference: str = "agent", limit: int = 6) -> list[str]:
    """The spaces that the 2-D pictures show, in order: the reference, the replicate and the
    grammar controls, then the language models, then any other space, at most ``limit``."""
    preferred = [reference, "agent-replicate", "bag-of-attributes", *language_models(keys)]
    show = [m for m in dict.fromkeys(preferred) if m in keys]
    return (show + [m for m in keys if m not in show])[:limit]


# --------------------------------------------------------------------------------------
# agent variants: extraction points, learners and seeds (alignnb.extract.points)
# --------------------------------------------------------------------------------------

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
