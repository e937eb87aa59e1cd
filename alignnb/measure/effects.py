"""Stage 4: the registered tests over seeds, E1 (the training effect) and E2 (model contrasts).

The design is fixed here, before any result, and notebook 04 states it in words before its
first table:

- **points** :data:`PRIMARY_POINTS` (the embedding, as in the paper; the FiLM parameters, the
  identified version of it; behaviour) of the primary learner :data:`PRIMARY_LEARNER`, every
  seed;
- **metric** precision@k at the study's k (15), ties fractional;
- **E1** for each point X and language model M: Δ_s = p(trained_s, M) − p(untrained_s, M), each
  seed against its own untrained twin, averaged over seeds;
- **E2** for each point X and each decoder D against each comparison space C of
  :data:`E2_COMPARISONS` (bag-of-words, tf-idf, the sentence encoder, the seed's own untrained
  twin at the same point): d_si = overlap_i(agent_s, D) − overlap_i(agent_s, C), averaged over
  seeds and sentences;
- **intervals** a hierarchical bootstrap (:func:`alignnb.measure.inference.hierarchical_bootstrap`):
  seeds resampled, and colour and object values resampled by pigeonhole weights shared by both
  terms of a difference; at behaviour the probe states are resampled too, within their level
  (registered rows only: an exploratory behaviour row keeps its probe states fixed);
- **tests** E1: the bootstrap's two-sided p, with the exact sign-flip p over seeds beside it (with
  5 seeds it cannot go below 2/32); E2: a permutation test that swaps D and C within colour ×
  object blocks (:func:`~alignnb.measure.inference.block_sign_flip_test`), the same swap in
  every seed;
- **correction** Holm over each family (E1: points × language models; E2: points × decoders ×
  comparisons), at 0.05.

Everything else (the second learner, the other points, CKA and Procrustes) is labelled
exploratory: its p is not corrected and its verdict is not a finding. CKA and Procrustes have no
per-sentence decomposition, so their intervals resample seeds only. E1's bootstrap p is not a
seed-level test: with 5 seeds, resampling seeds under-covers, and the exact sign-flip p beside it
(at least 2/32) is what the seeds alone support. Behaviour rows use at most
:data:`BEHAVIOUR_DRAWS` draws, so their bootstrap p cannot go below 1/200.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from alignnb.core import streams
from alignnb.core.progress import tqdm
from alignnb.extract.embeddings import Embeddings, check_same_sentences
from alignnb.extract.models import family_of
from alignnb.measure import inference, metrics
from alignnb.measure.intervals import pigeonhole_weights
from alignnb.measure.variants import INTERVAL_FACTORS, Variant

#: The registered extraction points, the primary learner and the significance level.
PRIMARY_POINTS = ("embedding", "film", "behaviour")
PRIMARY_LEARNER = "transformer"
ALPHA = 0.05
#: What each decoder is contrasted with in E2; ``TWIN`` is the seed's own untrained twin at the same point.
TWIN = "untrained twin"
E2_COMPARISONS = ("bag-of-words", "tf-idf", "minilm-l6", TWIN)
#: The blocks of E2's permutation test: sentences with the same colour and object are swapped together.
BLOCK_FACTORS = ("color", "object")
#: Bootstrap draws at behaviour (each draw recomputes every agent's neighbours): at most this many.
BEHAVIOUR_DRAWS = 200

E1_COLUMNS = ("family", "learner", "extraction", "model", "metric", "seeds", "trained", "untrained", "estimate",
              "ci_low", "ci_high", "p", "p_sign_flip", "p_holm", "seeds_up", "per_seed", "verdict", "inits",
              "init_mean", "init_low", "init_high", "inits_below_trained", "interval_excludes_zero")
E2_COLUMNS = ("family", "learner", "extraction", "model", "versus", "seeds", "model_score", "versus_score",
              "estimate", "ci_low", "ci_high", "p", "p_holm", "seeds_up", "per_seed", "verdict", "interval_excludes_zero")


@dataclass
class PointOverlaps:
    """Per-sentence overlaps [S, n] of one learner's seeds at one point, trained and untrained, against each space.

    ``draws`` holds the same with a leading axis of bootstrap draws when the probe states are
    resampled (behaviour): {(kind, model): [B, S, n]}, kind "trained" or "untrained"; the
    trained agent against its twin is ``("trained", TWIN)``.
    """

    learner: str
    extraction: str
    seeds: list[int]
    overlaps: dict[tuple[str, str], np.ndarray]
    draws: dict[tuple[str, str], np.ndarray] | None = field(default=None, repr=False)

    def values(self, kind: str, model: str) -> np.ndarray:
        """[S, n] overlaps on all probe states, or [B, S, n] under probe resampling if there are draws."""
        if self.draws is not None:
            return self.draws[(kind, model)]
        return self.overlaps[(kind, model)]


def probe_groups(emb: Embeddings) -> np.ndarray | None:
    """The level of each probe state of a behavioural embedding (from its ``probes`` metadata), or None."""
    spec = emb.meta.get("probes") if emb.meta else None
    if not spec or emb.meta.get("extraction") != "behaviour":
        return None
    groups = np.repeat(np.asarray(spec["levels"], dtype=object), int(spec["per_level"]))
    if emb.vectors.shape[1] % len(groups):
        raise ValueError(f"{emb.model}: {emb.vectors.shape[1]} behaviour dimensions are not a whole number per "
                         f"probe state ({len(groups)} states)")
    return groups


def probe_weights(groups: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """[n_draws, P] counts: the probe states resampled with replacement within each group (level)."""
    groups = np.asarray(groups, dtype=object)
    out = np.zeros((int(n_draws), len(groups)))
    for g in dict.fromkeys(groups.tolist()):
        idx = np.flatnonzero(groups == g)
        picks = rng.integers(0, len(idx), size=(int(n_draws), len(idx)))
        for j, i in enumerate(idx):
            out[:, i] = (picks == j).sum(1)
    return out


def reweigh_probes(vectors: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """A behavioural embedding [n, P * A] whose probe states are repeated ``counts`` [P] times: the
    cosine geometry of the resampled concatenation (each block scaled by sqrt(count))."""
    n, dims = vectors.shape
    P = len(counts)
    return (vectors.reshape(n, P, dims // P) * np.sqrt(counts)[None, :, None]).reshape(n, dims)


def paired_seeds(variants: Mapping[Variant, Embeddings], learner: str, extraction: str) -> list[int]:
    """The seeds of ``learner`` with both a trained and an untrained space at ``extraction``, sorted."""
    return sorted(s for (ln, s, x) in variants if ln == learner and x == extraction
                  and (f"{learner}-untrained", s, extraction) in variants)


def point_overlaps(variants: Mapping[Variant, Embeddings], references: Mapping[str, Embeddings], learner: str,
                   extraction: str, k: int, probe_draws: np.ndarray | None = None,
                   progress: bool = False) -> PointOverlaps:
    """Per-sentence precision@k overlaps of ``learner``'s seeds at ``extraction`` (trained and untrained)
    against every reference space and against each other (see :class:`PointOverlaps`).

    ``probe_draws`` [B, P] (behaviour only): probe counts of each bootstrap draw
    (:func:`probe_weights`); the trained and untrained spaces are recomputed under each.
    """
    untrained = f"{learner}-untrained"
    seeds = paired_seeds(variants, learner, extraction)
    if not seeds:
        raise ValueError(f"no seed of {learner!r} has both a trained and an untrained {extraction!r} space")
    ref_dense = {m: metrics.knn_membership(e.vectors, k).toarray() for m, e in references.items()}

    def overlaps_of(trained_vecs: Sequence[np.ndarray], untrained_vecs: Sequence[np.ndarray]) -> dict:
        out: dict = {}
        for s_i, (tv, uv) in enumerate(zip(trained_vecs, untrained_vecs)):
            mt, mu = metrics.knn_membership(tv, k), metrics.knn_membership(uv, k)
            for m, dense in ref_dense.items():
                out.setdefault(("trained", m), []).append(metrics.overlap_with_dense(mt, dense))
                out.setdefault(("untrained", m), []).append(metrics.overlap_with_dense(mu, dense))
            out.setdefault(("trained", TWIN), []).append(metrics.overlap_from_membership(mt, mu))
        return {key: np.stack(v) for key, v in out.items()}

    T = [variants[(learner, s, extraction)] for s in seeds]
    U = [variants[(untrained, s, extraction)] for s in seeds]
    for e in [*T, *U, *references.values()]:
        check_same_sentences(T[0], e)
    result = PointOverlaps(learner, extraction, seeds, overlaps_of([e.vectors for e in T], [e.vectors for e in U]))
    if probe_draws is not None:
        draws: dict = {}
        for counts in tqdm(probe_draws, desc=f"{learner} {extraction}: probe resamples", disable=not progress,
                           leave=False):
            one = overlaps_of([reweigh_probes(e.vectors, counts) for e in T],
                              [reweigh_probes(e.vectors, counts) for e in U])
            for key, v in one.items():
                draws.setdefault(key, []).append(v)
        result.draws = {key: np.stack(v) for key, v in draws.items()}
    return result


def _verdict(p_holm: float, estimate: float, up: str, down: str) -> str:
    if np.isnan(p_holm):
        return "exploratory"
    if p_holm < ALPHA:
        return up if estimate > 0 else down
    return "not decided"


def _per_seed(values: np.ndarray) -> str:
    return " ".join(f"{v:+.3f}" for v in values)


@dataclass
class Inference:
    """The shared draws of one analysis: pigeonhole weights over sentences, and the generator."""

    weights: np.ndarray  # [n_boot, n]
    blocks: np.ndarray  # the block (colour x object cell) of each sentence
    n_boot: int
    n_perm: int
    seed: int


def inference_draws(attributes: pd.DataFrame, sentences: Sequence[str], n_boot: int, n_perm: int,
                    seed: int = 0) -> Inference:
    """The pigeonhole weights over colours and objects (one row per bootstrap draw) and the
    colour × object blocks of the permutation tests, for ``sentences`` (stream ``analysis`` [seed, 25])."""
    attrs = attributes.loc[list(sentences)]
    rng = streams.rng("analysis", seed, 25)
    W = pigeonhole_weights({f: attrs[f].to_numpy() for f in INTERVAL_FACTORS}, n_boot, rng)
    blocks = attrs[list(BLOCK_FACTORS)].astype(str).agg(" ".join, axis=1).to_numpy()
    return Inference(W, blocks, int(n_boot), int(n_perm), int(seed))


def _draws(values: np.ndarray, inf: Inference, seed_offset: int) -> np.ndarray:
    """Hierarchical bootstrap draws of a [S, n] or [B, S, n] difference with the shared sentence weights."""
    if values.ndim == 3:  # probe resamples: the first B rows of the weights
        B = len(values)
        return inference.hierarchical_bootstrap(values, None, B, seed=inf.seed + seed_offset, weights=inf.weights[:B])
    return inference.hierarchical_bootstrap(values, None, inf.n_boot, seed=inf.seed + seed_offset,
                                            weights=inf.weights)


def training_effect_rows(po: PointOverlaps, models: Sequence[str], inf: Inference, k: int) -> list[dict]:
    """E1 rows of one learner and point for precision@k (Holm is applied by :func:`training_effect_table`)."""
    rows = []
    for j, m in enumerate(models):
        t, u = po.overlaps[("trained", m)], po.overlaps[("untrained", m)]
        per_seed = t.mean(1) - u.mean(1)
        draws = _draws(po.values("trained", m) - po.values("untrained", m), inf, j)
        low, high = inference.percentile_interval(draws)
        rows.append({"family": family_of(m), "learner": po.learner, "extraction": po.extraction, "model": m,
                     "metric": f"precision@{k}", "seeds": len(po.seeds), "trained": float(t.mean()),
                     "untrained": float(u.mean()), "estimate": float(per_seed.mean()), "ci_low": low, "ci_high": high,
                     "p": inference.bootstrap_p(draws), "p_sign_flip": inference.sign_flip_test(per_seed),
                     "seeds_up": int((per_seed > 0).sum()), "per_seed": _per_seed(per_seed)})
    return rows


def whole_space_effect_rows(variants: Mapping[Variant, Embeddings], references: Mapping[str, Embeddings],
                            learner: str, extraction: str, models: Sequence[str], n_boot: int,
                            seed: int = 0, k: int = 15) -> list[dict]:
    """E1 for the whole-space metrics (unbiased linear CKA, Procrustes disparity): per seed, the
    trained agent's score minus its own twin's; a bootstrap over seeds and the exact sign-flip p."""
    untrained = f"{learner}-untrained"
    seeds = paired_seeds(variants, learner, extraction)
    rng = streams.rng("analysis", seed, 26)
    rows = []
    for name in ("cka_unbiased", "procrustes_disparity"):
        metric = metrics.get_metric(name)
        for m in models:
            B = references[m].vectors
            t = np.array([metric.value(variants[(learner, s, extraction)].vectors, B) for s in seeds])
            u = np.array([metric.value(variants[(untrained, s, extraction)].vectors, B) for s in seeds])
            per_seed = t - u
            counts = inference.seed_resampling(n_boot, len(seeds), rng)
            draws = counts @ per_seed / len(seeds)
            low, high = inference.percentile_interval(draws)
            rows.append({"family": family_of(m), "learner": learner, "extraction": extraction, "model": m,
                         "metric": metric.display(k), "seeds": len(seeds), "trained": float(t.mean()),
                         "untrained": float(u.mean()), "estimate": float(per_seed.mean()), "ci_low": low,
                         "ci_high": high, "p": inference.bootstrap_p(draws),
                         "p_sign_flip": inference.sign_flip_test(per_seed), "seeds_up": int((per_seed > 0).sum()),
                         "per_seed": _per_seed(per_seed)})
    return rows


def model_contrast_rows(po: PointOverlaps, contrasts: Sequence[tuple[str, str]], inf: Inference) -> list[dict]:
    """E2 rows of one learner and point (Holm is applied by :func:`model_contrast_table`)."""
    rows = []
    for j, (m1, m2) in enumerate(contrasts):
        a = po.overlaps[("trained", m1)]
        b = po.overlaps[("trained", m2)]
        d = a - b
        per_seed = d.mean(1)
        draws = _draws(po.values("trained", m1) - po.values("trained", m2), inf, 100 + j)
        low, high = inference.percentile_interval(draws)
        p, _ = inference.block_sign_flip_test(d, inf.blocks, inf.n_perm, seed=inf.seed + 200 + j)
        rows.append({"family": family_of(m1), "learner": po.learner, "extraction": po.extraction, "model": m1,
                     "versus": m2, "seeds": len(po.seeds), "model_score": float(a.mean()),
                     "versus_score": float(b.mean()), "estimate": float(per_seed.mean()), "ci_low": low,
                     "ci_high": high, "p": p, "seeds_up": int((per_seed > 0).sum()), "per_seed": _per_seed(per_seed)})
    return rows


def _place_in_inits(rows: list[dict], inits: Mapping[Variant, Embeddings], references: Mapping[str, Embeddings],
                    learner: str, extraction: str, k: int) -> None:
    """Add the random-initialisation columns to E1 rows of one learner and point (in place)."""
    spaces = [e for (ln, _, x), e in inits.items() if ln == f"{learner}-init" and x == extraction]
    if not spaces:
        return
    for e in spaces:
        check_same_sentences(references[rows[0]["model"]], e)
    members = [metrics.knn_membership(e.vectors, k) for e in spaces]
    for row in rows:
        mm = metrics.knn_membership(references[row["model"]].vectors, k)
        values = np.array([float(metrics.overlap_from_membership(m, mm).mean()) for m in members])
        row.update(inits=len(values), init_mean=float(values.mean()), init_low=float(np.percentile(values, 2.5)),
                   init_high=float(np.percentile(values, 97.5)),
                   inits_below_trained=float((values < row["trained"]).mean()))


def _registered(learner: str, extraction: str) -> bool:
    return learner == PRIMARY_LEARNER and extraction in PRIMARY_POINTS


def _apply_holm(rows: pd.DataFrame, registered: pd.Series, up: str, down: str) -> pd.DataFrame:
    """``p_holm`` (Holm within the registered rows, one family per metric; NaN elsewhere) and ``verdict``."""
    rows = rows.copy()
    rows["p_holm"] = np.nan
    metric = rows["metric"] if "metric" in rows else pd.Series("precision", index=rows.index)
    for _, idx in rows[registered].groupby(metric[registered]).groups.items():
        rows.loc[idx, "p_holm"] = inference.holm(rows.loc[idx, "p"].to_numpy())
    rows["verdict"] = [_verdict(p, e, up, down) for p, e in zip(rows["p_holm"], rows["estimate"])]
    return rows


@dataclass
class SeedTests:
    """E1 and E2 of a study: the two tables, and the overlaps they were computed from."""

    training_effect: pd.DataFrame
    model_contrasts: pd.DataFrame
    overlaps: dict[tuple[str, str], PointOverlaps] = field(repr=False)


def seed_tests(variants: Mapping[Variant, Embeddings], references: Mapping[str, Embeddings],
               language_models: Sequence[str], attributes: pd.DataFrame, k: int = 15, n_boot: int = 2000,
               n_perm: int = 10_000, seed: int = 0, learners: Sequence[str] | None = None,
               points: Sequence[str] | None = None, behaviour_draws: int = BEHAVIOUR_DRAWS,
               inits: Mapping[Variant, Embeddings] | None = None, progress: bool = False) -> SeedTests:
    """E1 and E2 (see the module docstring) for every learner and point with untrained twins.

    ``references``: the spaces the agents are compared with (language models, controls, the
    bot); ``language_models``: those that E1 tests and E2's decoders come from. E1 columns
    :data:`E1_COLUMNS` (``p`` the test's raw p, ``p_holm`` its Holm-adjusted p within the
    registered family, NaN for exploratory rows; ``per_seed`` each seed's difference);
    With ``inits`` ({("<learner>-init", init seed, extraction): Embeddings}, random
    initialisations), E1's precision rows also place the trained agents in the spread of the
    floor: ``inits``, ``init_mean``, ``init_low``/``init_high`` (2.5 and 97.5 percentiles over the
    initialisations) and ``inits_below_trained`` (the share of initialisations below the trained
    mean). E2 columns :data:`E2_COLUMNS`. Verdicts: "higher after training" / "lower after training"
    (E1), "<model> higher" / "<model> lower" (E2), "not decided", or "exploratory".
    ``interval_excludes_zero`` (both tables) was added after the first results were seen and is
    not part of the registered verdict: E2's permutation test swaps spaces within blocks for the
    seeds at hand (it holds them fixed), while the interval also resamples seeds, so a decided E2
    row whose interval contains 0 holds for these agents, not necessarily for other seeds.
    """
    if not variants:
        raise ValueError("seed_tests needs agent variants (notebook 03 extracts them)")
    first = next(iter(variants.values()))
    inf = inference_draws(attributes, first.sentences, n_boot, n_perm, seed)
    trained_learners = list(dict.fromkeys(ln for (ln, _, _) in variants if not ln.endswith("-untrained")))
    learners = [ln for ln in (learners or trained_learners) if ln in trained_learners]
    lms = [m for m in language_models if m in references]
    decoders = [m for m in lms if family_of(m) == "decoder LLM"]
    contrasts = [(d, c) for d in decoders for c in E2_COMPARISONS if c == TWIN or (c in references and c != d)]
    e1, e2, kept = [], [], {}
    todo = [(ln, x) for ln in learners for x in dict.fromkeys(x for (l2, _, x) in variants if l2 == ln)
            if points is None or x in points]
    for learner, extraction in tqdm(todo, desc="E1 and E2", disable=not progress, leave=False):
        untrained = f"{learner}-untrained"
        if not any(v[0] == untrained and v[2] == extraction for v in variants):
            continue
        groups = probe_groups(variants[next(v for v in variants if v[0] == learner and v[2] == extraction)])
        draws = None
        if groups is not None and _registered(learner, extraction):  # exploratory rows: probe states fixed
            draws = probe_weights(groups, min(int(n_boot), int(behaviour_draws)), streams.rng("analysis", seed, 27))
        po = point_overlaps(variants, references, learner, extraction, k, draws, progress)
        kept[(learner, extraction)] = po
        rows = training_effect_rows(po, lms, inf, k)
        if inits:
            _place_in_inits(rows, inits, references, learner, extraction, k)
        e1 += rows
        if _registered(learner, extraction):
            e1 += whole_space_effect_rows(variants, references, learner, extraction, lms, n_boot, seed, k)
        e2 += model_contrast_rows(po, contrasts, inf)
    t1 = pd.DataFrame(e1, columns=[c for c in E1_COLUMNS if c not in ("p_holm", "verdict")])
    t1 = t1.astype({c: float for c in ("init_mean", "init_low", "init_high", "inits_below_trained", "interval_excludes_zero")})
    t2 = pd.DataFrame(e2, columns=[c for c in E2_COLUMNS if c not in ("p_holm", "verdict")])
    registered1 = pd.Series([_registered(r.learner, r.extraction) and r.metric.startswith("precision")
                             for r in t1.itertuples()], index=t1.index, dtype=bool)
    t1 = _apply_holm(t1, registered1, "higher after training", "lower after training")
    registered2 = pd.Series([_registered(r.learner, r.extraction) for r in t2.itertuples()], index=t2.index,
                            dtype=bool)
    t2 = _apply_holm(t2, registered2, "higher", "lower")
    t2["verdict"] = [v if v not in ("higher", "lower") else f"{m} {v}" for v, m in zip(t2["verdict"], t2["model"])]
    for t in (t1, t2):  # added after the first results: E2's permutation test holds the seeds fixed, the interval not
        t["interval_excludes_zero"] = (t["ci_low"] > 0) | (t["ci_high"] < 0)
    return SeedTests(t1[list(E1_COLUMNS)], t2[list(E2_COLUMNS)], kept)
