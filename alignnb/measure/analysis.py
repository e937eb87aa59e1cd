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

from alignnb.extract.controls import bag_of_words
from alignnb.extract.embeddings import Embeddings, check_all, check_same_sentences
from alignnb.extract.models import family_of, get_spec, language_models
from alignnb.measure import calibration, inference, metrics, nulls
from alignnb.measure.checks import usable_ks
from alignnb.measure.preprocessing import deconfounded_cka, deconfounded_nulls, deconfounded_rsa, preprocess
# the agent-variant tables were part of this module: re-exported so ``analysis.variant_table`` keeps working
from alignnb.measure.variants import (INTERVAL_FACTORS, Variant, agreement_table, ceiling_summary,  # noqa: F401
                                      reference_spaces, variant_markdown, variant_summary, variant_table)


def pairwise_matrix(spaces: Mapping[str, Embeddings], metric: str = "precision", k: int = 15) -> pd.DataFrame:
    """Symmetric [model x model] matrix of a registered metric (:data:`alignnb.measure.metrics.METRICS`)."""
    m = metrics.get_metric(metric)
    keys = check_all(spaces)
    metrics.check_pair(spaces[keys[0]].vectors, spaces[keys[0]].vectors)
    m.check_k(k, len(spaces[keys[0]].sentences))
    prepared = {key: m.prepare(spaces[key].vectors, k) for key in keys}  # neighbours once per space
    out = pd.DataFrame(np.nan, index=keys, columns=keys)
    for a in keys:
        out.loc[a, a] = m.identical
    for a, b in combinations(keys, 2):
        out.loc[a, b] = out.loc[b, a] = float(m.compare(prepared[a], prepared[b]))
    return out


#: The ks of the precision curves (those that :func:`~alignnb.measure.checks.check_k` accepts are used).
CURVE_KS = range(1, 51)
#: At most this many permutations for the nulls drawn per k or per setting (curves, sensitivity).
CURVE_PERMUTATIONS = 200


def curve_permutations(n_perm: int, cap: int = CURVE_PERMUTATIONS) -> int:
    """Permutations of the nulls drawn for every k or setting: the headline's ``n_perm``, at most ``cap``."""
    return min(int(n_perm), int(cap))


def precision_vs_k(spaces: Mapping[str, Embeddings], reference: str = "agent", ks: Sequence[int] = CURVE_KS,
                   n_perm: int = 200, seed: int = 0, metric: str = "precision") -> pd.DataFrame:
    """A k-NN metric (precision@k) of ``reference`` against every other space for each k, with chance and null band.

    The ks that :func:`~alignnb.measure.checks.check_k` accepts for n sentences are used. The
    null is the engine's (:func:`alignnb.measure.nulls.prepared_null`): the same ``n_perm``
    permutations for every k and every model. Columns: model, family, k, precision, chance
    (k/(n-1)), null_low, null_high (2.5 and 97.5 percentiles of the permutation null).
    """
    m = metrics.get_metric(metric)
    if not m.uses_k:
        raise ValueError(f"precision_vs_k draws a curve over k: {m.name!r} does not use k; choose one of "
                         f"{[x.name for x in metrics.k_metrics()]}")
    keys = check_all(spaces)
    ref = spaces[reference].vectors
    n = len(ref)
    asked = list(ks)
    ks = usable_ks(asked, n)
    if not ks:
        raise ValueError(f"no k of {asked} is usable with n={n} sentences: k must be from 1 to n-2 = {n - 2}")
    ma = [m.prepare(ref, k) for k in ks]
    rows = []
    for key in tqdm([key for key in keys if key != reference], desc=f"{m.name} vs k", leave=False):
        res = nulls.prepared_null(m, ma, [m.prepare(spaces[key].vectors, k) for k in ks], n, n_perm, seed)
        for j, k in enumerate(ks):
            rows.append({"model": key, "family": family_of(key), "k": k, m.headline: float(res.observed[j]),
                         "chance": metrics.chance_precision(n, k),
                         "null_low": float(res.null_low[j]), "null_high": float(res.null_high[j])})
    return pd.DataFrame(rows)


def layer_sweep(layers: Embeddings, reference: Embeddings, k: int = 15) -> pd.DataFrame:
    """precision@k of ``reference`` against each layer of an all-layers set (columns model, layer, precision)."""
    check_same_sentences(layers, reference)
    if layers.vectors.ndim != 3:
        raise ValueError(f"{layers.model}: expected an all-layers set (embed with layer='all')")
    kr = metrics.knn_membership(reference.vectors, k)
    rows = [{"model": layers.model, "layer": i,
             "precision": float(metrics.overlap_from_membership(kr, metrics.knn_membership(v, k)).mean())}
            for i, v in enumerate(layers.vectors)]
    return pd.DataFrame(rows)


def layer_sweeps(all_layers: Mapping[tuple[str, str], Embeddings], reference: Embeddings, k: int = 15,
                 exclude: str | None = None) -> pd.DataFrame:
    """:func:`layer_sweep` of every all-layers set {(model, pooling): set} except model ``exclude``'s.

    ``exclude`` defaults to the reference's model. Columns model, layer, precision, pooling; an
    empty frame with those columns if no set is left.
    """
    exclude = reference.model if exclude is None else exclude
    sweeps = [layer_sweep(emb, reference, k).assign(pooling=pooling)
              for (model, pooling), emb in all_layers.items() if model != exclude]
    if not sweeps:
        return pd.DataFrame(columns=["model", "layer", "precision", "pooling"])
    return pd.concat(sweeps, ignore_index=True)


#: The headline table's columns, in the order of the committed ``figures/alignment_summary.csv``.
SUMMARY_COLUMNS = ("model", "family", "k", "n", "precision", "chance", "rnx", "rnx_auc", "calibrated", "null_q95",
                   "p_value", "null_z", "p_within_level", "p_within_verb", "ci_low", "ci_high", "level_balanced", "ci_low_iid",
                   "ci_high_iid", "precision_centred", "rnx_centred", "procrustes_disparity", "retrieval_top1", "retrieval_chance",
                   "procrustes_p", "cka", "cka_p", "cka_biased", "rsa", "rsa_rho_a", "cka_deconfounded", "cka_deconfounded_p",
                   "cka_deconfounded_null_low", "cka_deconfounded_null_high", "rsa_deconfounded", "rsa_deconfounded_p",
                   "rsa_deconfounded_null_low", "rsa_deconfounded_null_high")
#: The restricted nulls of the headline: column -> the attribute whose values are the strata.
RESTRICTED_NULLS = {"p_within_level": "level", "p_within_verb": "verb"}


def summary_table(spaces: Mapping[str, Embeddings], reference: str = "agent", k: int = 15, n_perm: int = 1000,
                  n_boot: int = 200, seed: int = 0, attributes: pd.DataFrame | None = None,
                  ks_auc: Sequence[int] = range(1, 51), whole_space_nulls: bool = True,
                  members_cache: dict | None = None) -> pd.DataFrame:
    """The headline table: one row per model compared with ``reference``, every number beside its null.

    Columns (:data:`SUMMARY_COLUMNS`):
    - k, n, precision (precision@k), chance (k/(n-1)), rnx (R_NX(k), 0 for unrelated spaces),
      rnx_auc (area under R_NX over log k for the usable ks of ``ks_auc``);
    - calibrated ((s - tau)/(1 - tau) clipped at 0, tau the null's critical value), null_q95,
      p_value (global permutation null, ``n_perm`` draws; at its floor it reads p <= 1/(n_perm + 1)),
      null_z (the score in sds of that null above its mean: it ranks spaces whose p sit at the floor), p_within_level and p_within_verb
      (restricted nulls: sentences shuffled only within their level / verb);
    - ci_low, ci_high: 95% pigeonhole bootstrap over colour and object values (a crossed
      design); ci_low_iid, ci_high_iid: the naive interval over sentences, for comparison;
      level_balanced: the mean of the per-level precisions;
    - precision_centred, rnx_centred: the same after mean-centring both spaces;
    - every other registered metric with a ``headline`` column (:data:`alignnb.measure.metrics.METRICS`:
      procrustes_disparity (zero-padded), cka (unbiased), cka_biased, rsa (Spearman), rsa_rho_a
      (rho-a, for spaces with tied dissimilarities)), with its permutation p-value
      where it has a ``headline_p`` column (procrustes_p, cka_p; a "rescore" null of
      max(99, n_perm // 5) draws, :meth:`~alignnb.measure.metrics.Metric.null_draws`);
      retrieval_top1 (cross-validated Procrustes retrieval) beside retrieval_chance (its value
      under a permutation null, exactly 1/|fold| in expectation); cka_deconfounded and
      rsa_deconfounded (the bag-of-words similarity regressed out, Cui et al. 2022), each with its
      permutation p and null band (:func:`deconfounded_nulls`).

    ``attributes`` (indexed by sentence, with level, verb, color and object) is needed for the
    restricted nulls, the attribute interval and the level-balanced mean. With
    ``whole_space_nulls`` False the "rescore" nulls (procrustes_p, cka_p and the deconfounded
    nulls, the slow ones) are left out (NaN). Two restricted nulls whose strata are the same
    partition of the sentences are one test, computed once. ``members_cache`` (a dict) keeps
    each compared space's k-NN memberships between calls that share spaces (one per seed).
    """
    keys = check_all(spaces)
    sentences = spaces[reference].sentences
    ref = spaces[reference].vectors
    n = len(ref)
    attrs = attributes.loc[sentences] if attributes is not None else None
    lexical = bag_of_words(sentences)[0]
    ref_centred = preprocess(ref, "centred")
    ks_auc = usable_ks(ks_auc, n)
    ref_members = {kk: metrics.knn_membership(ref, kk) for kk in ks_auc}
    others = [m for m in metrics.METRICS.values() if m.headline and not m.uses_k]
    rows = []
    for key in tqdm([key for key in keys if key != reference], desc="headline table", leave=False):
        B = spaces[key].vectors
        row = {"model": key, "family": family_of(key),
               **_precision_columns(ref, B, k, n_perm, n_boot, seed, attrs, ref_members,
                                    lambda kk, key=key, B=B: _cached(members_cache, (key, kk), B))}
        centred = metrics.precision_at_k(ref_centred, preprocess(B, "centred"), k)
        row.update(precision_centred=centred, rnx_centred=calibration.rnx(centred, n, k))
        for m in others:
            row[m.headline] = m.value(ref, B, k)
            if m.headline_p:
                row[m.headline_p] = (nulls.permutation_null(m, ref, B, n_perm=m.null_draws(n_perm, 5, 99),
                                                            seed=seed).p_value if whole_space_nulls else np.nan)
        fit = metrics.procrustes(ref, B, seed=seed)
        # with B's rows permuted, the right held-out sentence is a uniform draw among the fold's: 1/|fold| exactly
        row.update(retrieval_top1=fit.retrieval_top1, retrieval_chance=fit.chance_top1)
        row.update(cka_deconfounded=_or_nan(deconfounded_cka, ref, B, lexical),
                   rsa_deconfounded=_or_nan(deconfounded_rsa, ref, B, lexical))
        if whole_space_nulls:
            row.update(deconfounded_nulls(ref, B, lexical, n_perm=max(99, n_perm // 5), seed=seed))
        rows.append(row)
    out = pd.DataFrame(rows)
    return out[[c for c in SUMMARY_COLUMNS if c in out] + [c for c in out if c not in SUMMARY_COLUMNS]]


def _cached(cache: dict | None, key: tuple, B: np.ndarray) -> object:
    """B's k-NN membership at k = key[1], from ``cache`` when one is given (keyed by the array
    itself, so that a space swapped per seed, such as the untrained twin, is never mistaken)."""
    if cache is None:
        return metrics.knn_membership(B, key[1])
    slot = (id(B), key[1])
    if slot not in cache or cache[slot][0] is not B:
        cache[slot] = (B, metrics.knn_membership(B, key[1]))  # B kept alive: its id stays its own
    return cache[slot][1]


def _precision_columns(ref: np.ndarray, B: np.ndarray, k: int, n_perm: int, n_boot: int, seed: int,
                       attrs: pd.DataFrame | None, ref_members: Mapping[int, object],
                       b_members: Callable[[int], object]) -> dict[str, float]:
    """The headline's precision@k columns of one space: score, chance, R_NX, calibration, nulls, intervals."""
    n = len(ref)
    cal = calibration.calibrate_precision(ref, B, k, n_perm=n_perm, seed=seed)
    per = metrics.per_sentence_precision(ref, B, k)
    iid = nulls.query_interval(per, n_boot=n_boot, seed=seed)
    auc = calibration.rnx_auc(list(ref_members), [calibration.rnx(metrics.overlap_from_membership(
        members, b_members(kk)).mean(), n, kk) for kk, members in ref_members.items()])
    row = {"k": k, "n": n, "precision": cal.score, "chance": metrics.chance_precision(n, k),
           "rnx": calibration.rnx(cal.score, n, k), "rnx_auc": auc, "calibrated": cal.calibrated,
           "null_q95": cal.null_q95, "p_value": cal.p_value, "null_z": inference.null_z(cal.score, cal.null)}
    if attrs is not None:
        done: dict[tuple, float] = {}  # a partition already tested (the default levels' verbs are their levels)
        for name, column in RESTRICTED_NULLS.items():
            partition = tuple(pd.factorize(attrs[column].astype(str))[0])
            if partition not in done:
                done[partition] = nulls.permutation_null("precision", ref, B, k, n_perm, seed,
                                                         strata=attrs[column]).p_value
            row[name] = done[partition]
        ci = nulls.attribute_bootstrap_ci(per, {f: attrs[f].to_numpy() for f in INTERVAL_FACTORS},
                                          n_boot=n_boot, seed=seed)
        row.update(ci_low=ci.low, ci_high=ci.high, level_balanced=nulls.level_balanced_mean(per, attrs["level"]))
    row.update(ci_low_iid=iid.low, ci_high_iid=iid.high)
    return row


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
    k = int(summary["k"].iloc[0])
    lm_rows = summary[summary["model"].isin(language_models(summary["model"]))]
    best = (lm_rows if len(lm_rows) else summary).sort_values("precision", ascending=False).iloc[0]
    by_model = summary.set_index("model")
    over = " (mean over the agent's seeds)" if "precision_sd" in best and not pd.isna(best["precision_sd"]) else ""
    interval = (f", 95% interval over {'seeds, ' if over else ''}colours and objects "
                f"{best['ci_low']:.3f}-{best['ci_high']:.3f}" if "ci_low" in best else "")
    lines = [f"- Highest precision@{k} of a language model with the agent{over}: **{best['model']}** "
             f"({best['precision']:.3f}{interval}; chance {best['chance']:.3f}; R_NX {best['rnx']:.3f}; "
             f"calibrated {best['calibrated']:.3f}). The highest is picked after the fact: read it with E2 below."]
    for control, role in CONTROL_ROLES.items():
        if control in by_model.index:
            lines.append(f"- Control {control} ({role}): {by_model.loc[control, 'precision']:.3f} "
                         f"(R_NX {by_model.loc[control, 'rnx']:.3f}).")
    survive = conclusions[conclusions["survives_every_choice"]]
    said = "; ".join(f"{r.comparison} ({r.metric})" for r in survive.itertuples()) or "none"
    lines.append(f"- Conclusions that hold in every setting of the sensitivity table: {said}.")
    return lines


def procrustes_target(language_models: Sequence[str]) -> str:
    """The space that the Procrustes picture maps the reference onto: the first language model,
    else the grammar control ``bag-of-attributes``."""
    return language_models[0] if language_models else "bag-of-attributes"


def spaces_to_picture(keys: Sequence[str], reference: str = "agent", limit: int = 6) -> list[str]:
    """The spaces that the 2-D pictures show, in order: the reference, the replicate and the
    grammar controls, then the language models, then any other space, at most ``limit``."""
    preferred = [reference, "agent-replicate", "bag-of-attributes", *language_models(keys)]
    show = [m for m in dict.fromkeys(preferred) if m in keys]
    return (show + [m for m in keys if m not in show])[:limit]

