"""Stage 4: alignment across all models, with controls, statistics and sensitivity checks.

Everything returns tidy pandas DataFrames (a score is a ``precision`` column beside a ``k``
column, never a column named after k); nothing here draws or writes (plots.py and the
notebooks do). Inputs are :class:`~alignnb.embeddings.Embeddings` keyed by model name, all
of the same ordered sentence list (checked). Neighbours are k-NN memberships
(:func:`~alignnb.metrics.knn_membership`): a sentence tied for the k-th place counts
fractionally, with its chance of a place under random tie-breaking, so no number here depends
on the order of the sentences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from . import metrics, nulls
from .embeddings import Embeddings, check_all, check_same_sentences
from .registry import LANGUAGE_FAMILIES, family_of, get_spec, language_models


def pairwise_matrix(spaces: Mapping[str, Embeddings], metric: str = "precision", k: int = 15) -> pd.DataFrame:
    """Symmetric [model x model] matrix of a registered metric (:data:`alignnb.metrics.METRICS`)."""
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
    ks = [k for k in ks if k < n]
    if not ks:
        raise ValueError(f"every k of {list(ks)} is at least the number of sentences n={n}: choose k < n")
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(n) for _ in range(n_perm)]
    ma = {k: metrics.knn_membership(ref, k) for k in ks}
    rows = []
    for key in keys:
        if key == reference:
            continue
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


def summary_table(spaces: Mapping[str, Embeddings], reference: str = "agent", k: int = 15, n_perm: int = 1000,
                  n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """The headline table: one row per model compared with ``reference``.

    Columns: model, family, k, precision (precision@k), ci_low, ci_high (95% bootstrap
    interval over the query sentences, neighbours among all sentences), null_mean, p_value
    (permutation test), procrustes_disparity, retrieval_top1 (5-fold cross-validated), cka
    (linear).
    """
    keys = check_all(spaces)
    ref = spaces[reference].vectors
    rows = []
    for key in keys:
        if key == reference:
            continue
        B = spaces[key].vectors
        null = nulls.permutation_null("precision", ref, B, k, n_perm=n_perm, seed=seed)
        ci = nulls.query_interval(metrics.per_sentence_precision(ref, B, k), n_boot=n_boot, seed=seed)
        pr = metrics.procrustes(ref, B, seed=seed)
        rows.append({"model": key, "family": family_of(key), "k": k, "precision": null.observed,
                     "ci_low": ci.low, "ci_high": ci.high, "null_mean": null.null_mean, "p_value": null.p_value,
                     "procrustes_disparity": pr.disparity, "retrieval_top1": pr.retrieval_top1,
                     "cka": metrics.cka(ref, B)})
    return pd.DataFrame(rows)


def sensitivity_table(reference: Embeddings, defaults: Mapping[str, Embeddings],
                      all_layers: Mapping[tuple[str, str], Embeddings], sentence_levels: Sequence[str],
                      k: int = 15, ks: Sequence[int] = (5, 10, 15, 30)) -> pd.DataFrame:
    """How agent-vs-model precision moves with each analysis choice that the paper leaves open.

    ``defaults``: each model's default embedding; ``all_layers``: {(model, pooling): all-layer
    set} for the language models; ``sentence_levels``: the level of each sentence. Rows: model,
    family, choice (pooling / layer / k / sentences), setting, k, precision, chance.
    """
    n = len(reference.sentences)
    rows = []

    def add(model, choice, setting, kk, value, n_sent):
        rows.append({"model": model, "family": family_of(model), "choice": choice, "setting": setting, "k": kk,
                     "precision": value, "chance": metrics.chance_precision(n_sent, kk)})

    for model, emb in defaults.items():
        for kk in ks:
            if kk < n:
                add(model, "k", f"k={kk}", kk, metrics.precision_at_k(reference.vectors, emb.vectors, kk), n)
        levels = np.asarray(sentence_levels)
        for level in dict.fromkeys(sentence_levels):
            keep = np.flatnonzero(levels == level)
            kk = min(k, len(keep) // 3)
            if kk >= 1 and len(keep) > kk + 1:
                add(model, "sentences", level.removeprefix("BabyAI-").removesuffix("-v0"), kk,
                    metrics.precision_at_k(reference.vectors[keep], emb.vectors[keep], kk), len(keep))
        add(model, "sentences", "all levels", k, metrics.precision_at_k(reference.vectors, emb.vectors, k), n)
    for (model, pooling), emb in all_layers.items():
        sweep = layer_sweep(emb, reference, k)
        add(model, "pooling", f"{pooling} (last layer)", k, float(sweep["precision"].iloc[-1]), n)
        if pooling == get_spec(model).pooling:
            best = sweep.loc[sweep["precision"].idxmax()]
            add(model, "layer", "last", k, float(sweep["precision"].iloc[-1]), n)
            add(model, "layer", f"best ({int(best['layer'])} of {len(sweep) - 1}; chosen on these data)", k,
                float(best["precision"]), n)
    return pd.DataFrame(rows)


def robust_conclusions(sens: pd.DataFrame, trained: str = "agent") -> pd.DataFrame:
    """Check comparisons in every setting of the sensitivity table.

    For each (choice, setting) with both models present, does model X align with the agent more
    than model Y? Reported: the comparison, in how many settings it holds, out of how many.
    """
    by = sens.pivot_table(index=["choice", "setting"], columns="model", values="precision", aggfunc="first")
    fam = sens.drop_duplicates("model").set_index("model")["family"]
    lm = [m for m in by.columns if fam.get(m) in LANGUAGE_FAMILIES]
    controls = [m for m in by.columns if fam.get(m) == "control"]
    rows = []

    def check(label, a_cols, b_cols):
        sub = by[a_cols + b_cols].dropna()
        if sub.empty:
            return
        holds = (sub[a_cols].min(axis=1) > sub[b_cols].max(axis=1))
        rows.append({"comparison": label, "holds_in": int(holds.sum()), "settings": len(sub),
                     "survives_every_choice": bool(holds.all())})

    chance_by = sens.drop_duplicates(["choice", "setting"]).set_index(["choice", "setting"])["chance"]
    for m in lm:
        sub = by[m].dropna()
        above = sub > chance_by.reindex(sub.index) * 2
        rows.append({"comparison": f"{m} aligns with the agent at more than twice chance", "holds_in": int(above.sum()),
                     "settings": len(sub), "survives_every_choice": bool(above.all())})
    decoders = [m for m in lm if fam.get(m) == "decoder LLM"]
    encoders = [m for m in lm if fam.get(m) != "decoder LLM"]
    if decoders and encoders:
        check("every decoder LLM > every encoder / VLM text tower", decoders, encoders)
    for c in controls:
        for m in lm:
            check(f"{m} > control {c}", [m], [c])
    return pd.DataFrame(rows)


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
CONTROL_ROLES = {"agent-untrained": "floor: no training", "bag-of-attributes": "the grammar alone",
                 "agent-replicate": "ceiling: another agent from the next seed"}


def headline_lines(summary: pd.DataFrame, conclusions: pd.DataFrame, n: int) -> list[str]:
    """The headline in sentences (markdown bullets): the best language model with its interval
    and chance, each control's score, and the comparisons that survive every analysis choice."""
    k = int(summary["k"].iloc[0])
    lm_rows = summary[summary["model"].isin(language_models(summary["model"]))]
    best = (lm_rows if len(lm_rows) else summary).sort_values("precision", ascending=False).iloc[0]
    by_model = summary.set_index("model")
    lines = [f"- Highest precision@{k} of a language model with the agent: **{best['model']}** "
             f"({best['precision']:.3f}, 95% interval {best['ci_low']:.3f}-{best['ci_high']:.3f}; "
             f"chance {metrics.chance_precision(n, k):.3f})."]
    for control, role in CONTROL_ROLES.items():
        if control in by_model.index:
            lines.append(f"- Control {control} ({role}): {by_model.loc[control, 'precision']:.3f}.")
    survive = conclusions[conclusions["survives_every_choice"]]["comparison"].tolist()
    lines.append("- Conclusions that hold in every setting of the sensitivity table: "
                 + ("; ".join(survive) if survive else "none") + ".")
    return lines


def spaces_to_picture(keys: Sequence[str], reference: str = "agent", limit: int = 6) -> list[str]:
    """The spaces that the 2-D pictures show, in order: the reference, the replicate and the
    grammar controls, then the language models, then any other space, at most ``limit``."""
    preferred = [reference, "agent-replicate", "bag-of-attributes", *language_models(keys)]
    show = [m for m in dict.fromkeys(preferred) if m in keys]
    return (show + [m for m in keys if m not in show])[:limit]
