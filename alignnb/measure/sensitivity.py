"""Stage 4: how each headline comparison moves with the analysis choices the paper leaves open.

Every row of :func:`sensitivity_table` is one setting of one choice (k, the sentences, N,
pooling, layer, hygiene), with precision@k beside its chance level k/(n-1), R_NX, the 95%
quantile of its permutation null and the calibrated score (:mod:`alignnb.measure.calibration`).
Where a number is a maximum over layers ("best layer"), its null takes the same maximum
under one permutation applied to every layer, so the choice made on these data is paid for.
:func:`robust_conclusions` reads the table per metric (raw precision, R_NX, calibrated) and
adds the null axis (global, within level, within verb) from the headline table.
:func:`precision_vs_n` measures how precision and R_NX depend on the number of sentences.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from alignnb.core import streams
from alignnb.core.progress import tqdm
from alignnb.extract.embeddings import Embeddings, check_all, check_same_sentences
from alignnb.extract.models import LANGUAGE_FAMILIES, family_of, get_spec
from alignnb.measure import calibration, metrics
from alignnb.measure.checks import check_k, usable_ks
from alignnb.measure.preprocessing import HYGIENES, preprocess

#: The subset sizes of the size axis (those below the number of sentences are used).
SUBSET_SIZES = (36, 50, 100, 200, 300, 400)
#: The metrics whose comparisons between spaces :func:`robust_conclusions` reads.
CONCLUSION_METRICS = ("precision", "rnx", "calibrated")


#: The fewest sentences a level must have to get its own row ("sentences" choice); its k is
#: min(k, a third of them), which check_k accepts for any level of at least 3 sentences.
MIN_LEVEL_SENTENCES = 4


def space_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th space's nulls and subsets in :func:`sensitivity_table`: ``seed + index``.

    This is the table's legacy derivation, kept so that ``figures/sensitivity.csv`` stays what
    it is; it is used as the seed of the ``analysis`` stream (:func:`alignnb.core.streams.rng`).
    Unlike a spawn key it is not disjoint across study seeds (space 1 of seed 0 draws what space
    0 of seed 1 draws).
    """
    return int(seed) + int(index)


def _calibrated_row(cal: calibration.CalibratedScore, n: int, k: int) -> dict[str, float]:
    return {"k": k, "n": n, "precision": cal.score, "chance": metrics.chance_precision(n, k),
            "rnx": calibration.rnx(cal.score, n, k), "null_q95": cal.null_q95, "calibrated": cal.calibrated}


def _score_row(A: np.ndarray, B: np.ndarray, k: int, n_perm: int, seed: int) -> dict[str, float]:
    """precision@k, chance, R_NX, null 95% quantile and calibrated score of A against B."""
    return _calibrated_row(calibration.calibrate_precision(A, B, k, n_perm=n_perm, seed=seed), len(A), k)


def sensitivity_table(reference: Embeddings, others: Mapping[str, Embeddings],
                      all_layers: Mapping[tuple[str, str], Embeddings], sentence_levels: Sequence[str],
                      k: int = 15, ks: Sequence[int] = (5, 10, 15, 30), n_perm: int = 200, seed: int = 0,
                      subset_sizes: Sequence[int] = (100, 300), draws: int = 20) -> pd.DataFrame:
    """Agent-vs-model precision@k under each open choice, with chance, R_NX, null and calibration.

    ``others``: each model's default embedding; ``all_layers``: {(model, pooling): all-layer
    set} for the language models; ``sentence_levels``: the level of each sentence. Rows:
    model, family, choice (k / sentences / N / pooling / layer / hygiene), setting, k, n,
    precision, chance, rnx, null_q95, calibrated. The N rows are means over ``draws`` random
    subsets and carry no null.
    """
    ref = reference.vectors
    n = len(ref)
    levels = np.asarray(sentence_levels)
    rows = []

    def add(model: str, choice: str, setting: str, values: dict) -> None:
        rows.append({"model": model, "family": family_of(model), "choice": choice, "setting": setting, **values})

    with tqdm(total=len(others) + len(all_layers), desc="sensitivity", unit="space", leave=False) as bar:
        for i, (model, emb) in enumerate(others.items()):
            check_same_sentences(reference, emb)
            B = emb.vectors
            s = space_seed(seed, i)
            for kk in usable_ks(ks, n):
                add(model, "k", f"k={kk}", _score_row(ref, B, kk, n_perm, s))
            for level in dict.fromkeys(sentence_levels):
                keep = np.flatnonzero(levels == level)
                if len(keep) >= MIN_LEVEL_SENTENCES:
                    add(model, "sentences", level.removeprefix("BabyAI-").removesuffix("-v0"),
                        _score_row(ref[keep], B[keep], min(k, len(keep) // 3), n_perm, s))
            add(model, "sentences", "all levels", _score_row(ref, B, k, n_perm, s))
            for size in (m for m in subset_sizes if m < n and usable_ks([k], m)):
                add(model, "N", f"N={size} (mean of {draws} random subsets)", _subset_mean(ref, B, k, size, draws, s))
            for h in HYGIENES:
                add(model, "hygiene", h, _score_row(preprocess(ref, h), preprocess(B, h), k, n_perm, s))
            bar.update(1)
        for j, ((model, pooling), emb) in enumerate(all_layers.items()):
            check_same_sentences(reference, emb)
            s = space_seed(seed, j)
            add(model, "pooling", f"{pooling} (last layer)", _score_row(ref, emb.vectors[-1], k, n_perm, s))
            if pooling == get_spec(model).pooling:
                add(model, "layer", "last", _score_row(ref, emb.vectors[-1], k, n_perm, s))
                best = calibration.calibrate_precision_layers(ref, list(emb.vectors), k, n_perm=n_perm, seed=s)
                layer = int(np.argmax(best.layer_scores[0]))
                add(model, "layer", f"best ({layer} of {len(emb.vectors) - 1}; chosen on these data, null of the max)",
                    _calibrated_row(best, n, k))
            bar.update(1)
    return pd.DataFrame(rows)


def study_sensitivity(spaces: Mapping[str, Embeddings], all_layers: Mapping[tuple[str, str], Embeddings],
                      reference: str, sentence_levels: Sequence[str], k: int = 15, n_perm: int = 200, seed: int = 0,
                      draws: int = 20, **options) -> pd.DataFrame:
    """:func:`sensitivity_table` of the study: ``reference`` against every other space, and every
    all-layers set of another model (``options``: ks, subset_sizes)."""
    others = {m: e for m, e in spaces.items() if m != reference}
    layers = {key: e for key, e in all_layers.items() if key[0] != reference}
    return sensitivity_table(spaces[reference], others, layers, sentence_levels, k, n_perm=n_perm, seed=seed,
                             draws=draws, **options)


def _subset_mean(A: np.ndarray, B: np.ndarray, k: int, size: int, draws: int, seed: int,
                 metric: str = "precision") -> dict[str, float]:
    """A k-NN metric's mean over ``draws`` random subsets of ``size`` sentences (stream ``analysis`` [seed, size])."""
    m = metrics.get_metric(metric)
    rng = streams.rng("analysis", seed, size)
    values = []
    for _ in range(draws):
        keep = np.sort(rng.choice(len(A), size=size, replace=False))
        values.append(m.score(A[keep], B[keep], k))
    p = float(np.mean(values))
    return {"k": k, "n": size, "precision": p, "chance": metrics.chance_precision(size, k),
            "rnx": calibration.rnx(p, size, k), "null_q95": np.nan, "calibrated": np.nan}


#: A setting whose chance precision k/(n-1) exceeds this is too small to decide anything: the k
#: neighbours cover more than a fifth of its sentences (this includes every setting with n <= 2k).
TOO_SMALL_CHANCE = 0.2


def repeats_headline(sens: pd.DataFrame, k: int) -> pd.Series:
    """True for the rows of :func:`sensitivity_table` that repeat the headline setting (k, all
    sentences, raw vectors, the model's default pooling at its last layer) under another choice's
    name; the ``k={k}`` row stays as the headline's one representative."""
    def default_pooling(model: str) -> str:
        try:
            return f"{get_spec(model).pooling} (last layer)"
        except KeyError:
            return ""

    pooled = pd.Series([c == "pooling" and st == default_pooling(m) for c, st, m in
                        zip(sens["choice"], sens["setting"], sens["model"])], index=sens.index)
    repeats = (((sens["choice"] == "sentences") & (sens["setting"] == "all levels"))
               | ((sens["choice"] == "hygiene") & (sens["setting"] == "raw"))
               | ((sens["choice"] == "layer") & (sens["setting"] == "last")) | pooled)
    # a model without its k={k} row keeps its "all levels" row as the headline's representative
    kept = set(sens.loc[(sens["choice"] == "k") & (sens["setting"] == f"k={k}"), "model"])
    keep_all_levels = (sens["choice"] == "sentences") & (sens["setting"] == "all levels") & ~sens["model"].isin(kept)
    return repeats & ~keep_all_levels


def too_small(sens: pd.DataFrame) -> pd.Series:
    """True for settings too small to decide (:data:`TOO_SMALL_CHANCE`)."""
    return sens["chance"] > TOO_SMALL_CHANCE


def robust_conclusions(sens: pd.DataFrame, summary: pd.DataFrame | None = None, k: int | None = None) -> pd.DataFrame:
    """Which comparisons hold in every distinct setting of the sensitivity table, for each metric.

    Each distinct setting counts once: the rows that repeat the headline setting under another
    choice's name are left out (:func:`repeats_headline`; ``k`` is the headline's k, by default the
    k of the "all levels" rows), and settings too small to decide (:func:`too_small`) are left
    out and counted in ``too_small``. "Above chance" is a test: precision above its permutation
    null's 95% quantile (the calibrated score > 0); settings without a null (the N rows) are not
    counted for it. For each metric of :data:`CONCLUSION_METRICS`: does every decoder beat every
    other language model, and each language model each control? With ``summary`` (the headline
    table, one row per model), also: does each language model beat the global, within-level and
    within-verb permutation nulls (p < 0.05)? Columns: comparison, metric, holds_in, settings,
    too_small, survives_every_choice.
    """
    if k is None:
        heads = sens[(sens["choice"] == "sentences") & (sens["setting"] == "all levels")]["k"]
        k = int(heads.iloc[0]) if len(heads) else 15
    small = too_small(sens)
    n_small = int(sens.loc[small, ["choice", "setting"]].drop_duplicates().shape[0])
    sens = sens[~repeats_headline(sens, k) & ~small]
    fam = sens.drop_duplicates("model").set_index("model")["family"]
    lm = [m for m in fam.index if fam[m] in LANGUAGE_FAMILIES]
    controls = [m for m in fam.index if fam[m] == "control"]
    decoders = [m for m in lm if fam[m] == "decoder LLM"]
    others = [m for m in lm if fam[m] != "decoder LLM"]
    rows = []

    def record(label: str, metric: str, holds: pd.Series, smalls: int = n_small) -> None:
        holds = holds.dropna()
        if len(holds):
            rows.append({"comparison": label, "metric": metric, "holds_in": int(holds.sum()), "settings": len(holds),
                         "too_small": smalls, "survives_every_choice": bool(holds.all())})

    for m in lm:
        sub = sens[(sens["model"] == m) & sens["null_q95"].notna()]
        record(f"{m} aligns with the agent above chance (above its null's 95% quantile)", "precision",
               sub["precision"] > sub["null_q95"])
    for metric in CONCLUSION_METRICS:
        valid = sens[sens[metric].notna()]
        by = valid.pivot_table(index=["choice", "setting"], columns="model", values=metric, aggfunc="first")
        if decoders and others:
            both = by[[c for c in decoders + others if c in by]].dropna()
            if set(decoders + others) <= set(both.columns):
                record("every decoder LLM > every other language model", metric,
                       both[decoders].min(axis=1) > both[others].max(axis=1))
        for c in controls:
            for m in lm:
                if c in by and m in by:
                    pair = by[[m, c]].dropna()
                    record(f"{m} > control {c}", metric, pair[m] > pair[c])
    if summary is not None:
        nulls = [col for col in ("p_value", "p_within_level", "p_within_verb") if col in summary]
        for _, r in summary[summary["model"].isin(lm)].iterrows():
            record(f"{r['model']} beats the global, within-level and within-verb nulls (p < 0.05)", "permutation null",
                   pd.Series([r[c] < 0.05 for c in nulls]), 0)
    return pd.DataFrame(rows, columns=["comparison", "metric", "holds_in", "settings", "too_small",
                                       "survives_every_choice"])


# --------------------------------------------------------------------------------------
# size dependence
# --------------------------------------------------------------------------------------


def balanced_subset(levels: Sequence[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``size`` sentences with each level as equally represented as its size allows.

    Each level gets an equal quota; a level smaller than its quota gives all its sentences and
    the rest of its quota is shared among the larger levels.
    """
    levels = np.asarray(levels)
    groups = {lv: np.flatnonzero(levels == lv) for lv in dict.fromkeys(levels.tolist())}
    if size > len(levels):
        raise ValueError(f"a subset of {size} from {len(levels)} sentences")
    quota, left, remaining = {}, size, dict(groups)
    while remaining:
        share = left // len(remaining)
        small = {lv: g for lv, g in remaining.items() if len(g) <= share}
        if not small:
            for i, lv in enumerate(remaining):  # the remainder to the first levels
                quota[lv] = share + (1 if i < left - share * len(remaining) else 0)
            break
        for lv, g in small.items():
            quota[lv], left = len(g), left - len(g)
            del remaining[lv]
    return np.sort(np.concatenate([rng.choice(groups[lv], size=q, replace=False) for lv, q in quota.items()]))


def default_pairs(keys: Sequence[str], reference: str = "agent") -> list[tuple[str, str]]:
    """The pairs of the size curves: the reference against every other space, and every two language models."""
    lm = [m for m in keys if family_of(m) in LANGUAGE_FAMILIES]
    return [(reference, m) for m in keys if m != reference] + list(combinations(lm, 2))


def precision_vs_n(spaces: Mapping[str, Embeddings], pairs: Sequence[tuple[str, str]], sentence_levels: Sequence[str],
                   k: int = 15, sizes: Sequence[int] = SUBSET_SIZES, draws: int = 20, seed: int = 0,
                   progress: Callable | None = None) -> pd.DataFrame:
    """precision@k and R_NX of each pair on subsets of N sentences, N from ``sizes`` and all of them.

    For each N: ``draws`` random subsets and ``draws`` level-balanced ones
    (:func:`balanced_subset`), the same subsets for every pair. Columns: model_a, model_b, n,
    subset (random / level-balanced), k, precision (mean over draws), precision_sd, chance
    (k/(n-1)), rnx (of the mean precision), draws.
    """
    keys = check_all(spaces)
    n_all = len(spaces[keys[0]].sentences)
    check_k(k, n_all)
    ns = [m for m in sizes if m < n_all and usable_ks([k], m)] + [n_all]
    used = sorted({m for pair in pairs for m in pair})
    rng = streams.rng("analysis", seed)
    rows = []
    for n in (progress(ns) if progress else ns):
        for subset in ("random", "level-balanced"):
            reps = 1 if n == n_all else draws
            values = {pair: [] for pair in pairs}
            for _ in range(reps):
                keep = (np.arange(n_all) if n == n_all else np.sort(rng.choice(n_all, n, replace=False))
                        if subset == "random" else balanced_subset(sentence_levels, n, rng))
                member = {m: metrics.knn_membership(spaces[m].vectors[keep], k) for m in used}
                for a, b in pairs:
                    values[(a, b)].append(float(metrics.overlap_from_membership(member[a], member[b]).mean()))
            for (a, b), v in values.items():
                p = float(np.mean(v))
                rows.append({"model_a": a, "model_b": b, "n": n, "subset": subset, "k": k, "precision": p,
                             "precision_sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                             "chance": metrics.chance_precision(n, k), "rnx": calibration.rnx(p, n, k),
                             "draws": reps})
    return pd.DataFrame(rows)


def attribute_order_example(attributes: pd.DataFrame, k: int = 15) -> dict[str, float]:
    """Two spaces that rank the same sentences by different attributes, and their agreement.

    "colour first": one-hot colour x 10 + one-hot object x 1; "object first": the weights
    swapped (determiner and location one-hots x 0.1 in both, to break ties). On a small
    sentence set they can share every k-neighbourhood although they order the neighbours
    differently: when k covers whole attribute groups, the sets are fixed by the grammar, and
    neither precision@k nor R_NX (1 when precision is 1) can see the ordering; only a smaller k
    can. Returns n, k, precision, chance and rnx.
    """
    def onehot(column: str) -> np.ndarray:
        return pd.get_dummies(attributes[column].fillna("none").astype(str)).to_numpy(float)

    minor = np.hstack([onehot("det"), onehot("loc")]) * 0.1
    colour_first = np.hstack([10 * onehot("color"), onehot("object"), minor])
    object_first = np.hstack([onehot("color"), 10 * onehot("object"), minor])
    n = len(attributes)
    p = metrics.precision_at_k(colour_first, object_first, k)
    return {"n": n, "k": k, "precision": p, "chance": metrics.chance_precision(n, k), "rnx": calibration.rnx(p, n, k)}
