"""The measure stage writes each rule once: one k bound, one metric registry, one null engine, named streams."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest

from alignnb.measure import calibration, metrics, nulls
from alignnb.measure.checks import check_k, usable_ks

PACKAGE = Path(__file__).resolve().parents[2] / "alignnb"
MEASURE = PACKAGE / "measure"


def _spaces(n: int = 40, seed: int = 0, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, 8))
    return A.astype(np.float32), (A @ rng.normal(size=(8, 6)) + noise * rng.normal(size=(n, 6))).astype(np.float32)


# --------------------------------------------------------------------------------------
# one k check
# --------------------------------------------------------------------------------------


def test_check_k_accepts_exactly_1_to_n_minus_2():
    n = 10
    assert [k for k in range(-2, n + 3) if usable_ks([k], n)] == list(range(1, n - 1))
    assert check_k(np.int64(3), n) == 3 and type(check_k(np.int32(3), n)) is int
    for bad in (0, n - 1, n, -1):
        with pytest.raises(ValueError, match=rf"k={bad} is out of range for n={n}.*n-2 = {n - 2}"):
            check_k(bad, n)


@pytest.mark.parametrize("bad", [True, False, None, 2.0, 3.5, np.bool_(True), "3", np.float64(3)])
def test_check_k_rejects_what_is_not_an_integer_and_names_k(bad):
    with pytest.raises(ValueError, match=r"^k must be a positive integer"):
        check_k(bad, 50)


@pytest.mark.parametrize("bad", [True, None, 2.0, np.bool_(True)])
def test_every_k_entry_point_rejects_a_non_integer_k_with_a_message_naming_k(bad):
    A, B = _spaces()
    for call in (lambda: metrics.precision_at_k(A, B, bad), lambda: metrics.knn_membership(A, bad),
                 lambda: metrics.knn_indices(A, bad), lambda: nulls.permutation_null("precision", A, B, bad, 5),
                 lambda: calibration.rnx(0.5, len(A), bad), lambda: metrics.chance_precision(len(A), bad),
                 lambda: calibration.calibrate_precision(A, B, bad, 5)):
        with pytest.raises(ValueError, match="^k must be a positive integer"):
            call()


def test_k_at_n_minus_1_is_uninformative_which_is_why_it_is_rejected():
    """At k = n-1 every space has the same neighbourhoods; at k = n-2 two spaces still differ."""
    A, B = _spaces(n=12)
    n = len(A)
    full = [np.asarray(metrics.knn_membership(X, n - 2).todense()) for X in (A, B)]
    assert not np.array_equal(full[0], full[1])
    assert metrics.precision_at_k(A, B, n - 2) < 1.0
    for call in (lambda: metrics.precision_at_k(A, B, n - 1), lambda: calibration.rnx(1.0, n, n - 1)):
        with pytest.raises(ValueError, match="n-2"):
            call()


#: A comparison of a k against a count of sentences, or a bound like "n - 1" / "k + 2" beside a k.
_K_BOUND = re.compile(r"\bk{1,2}\s*(<|<=|>|>=)\s*(n\b|len\s*\(|n_\w+|self\s*\.\s*n|size\b)"  # k < n, k >= len(A)
                      r"|(<|<=)\s*k{1,2}\s*(<|<=)"  # 1 <= k < n
                      r"|\bk{1,2}\s*\+\s*\d\s*<"  # k + 2 < m
                      r"|\bk{1,2}\s*(<|<=|>=|>)\s*[\w.()\s]*?-\s*[12]\b"  # kk < n - 1
                      r"|\.\s*k\s*(<|<=|>|>=)")  # cfg.k >= ...


def _k_bounds(path: Path) -> list[str]:
    """Lines of code (strings and comments left out) that compare a k with a number of sentences."""
    text = path.read_text()
    code: dict[int, list[str]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in (tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE) and \
                tok.type not in {getattr(tokenize, t, -1) for t in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")}:
            code.setdefault(tok.start[0], []).append(tok.string)
    lines = text.splitlines()
    return [f"{path.relative_to(PACKAGE.parent)}:{i}: {lines[i - 1].strip()}" for i, toks in sorted(code.items())
            if _K_BOUND.search(" ".join(toks))]


def test_check_k_is_the_only_k_bound_in_measure():
    hits = [h for p in sorted(MEASURE.glob("*.py")) if p.name != "checks.py" for h in _k_bounds(p)]
    assert not hits, "k bounds outside measure/checks.check_k:\n" + "\n".join(hits)


#: Sites outside measure/ whose owners replace their bound with check_k (issue 23); none may be added.
PENDING: set[str] = set()


def test_no_new_k_bound_elsewhere_in_the_package():
    hits = [h for p in sorted(PACKAGE.rglob("*.py")) if "measure" not in p.parts
            and str(p.relative_to(PACKAGE.parent)) not in PENDING for h in _k_bounds(p)]
    assert not hits, "k bounds outside measure/checks.check_k:\n" + "\n".join(hits)


def test_the_grep_finds_the_old_bounds():
    """The pattern recognises each way the bound used to be written."""
    for old in ("if not 1 <= k < n:", "if k >= len(A):", "for kk in ks if kk < n - 1", "if self.k >= n - 1:",
                "if cfg.k >= len(sentences) - 1:", "for m in subset_sizes if k + 2 < m < n",
                "ks = [k for k in asked if k < n]"):
        toks = [t.string for t in tokenize.generate_tokens(io.StringIO(old).readline) if t.string.strip()]
        assert _K_BOUND.search(" ".join(toks)), old


def test_checks_imports_numpy_only():
    code = "import sys, alignnb.measure.checks; print(sorted(m for m in ('torch', 'scipy', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------


def test_every_metric_states_definition_k_null_and_name():
    A, B = _spaces()
    for name, m in metrics.METRICS.items():
        assert m.name == name and m.label and m.null in metrics.NULL_KINDS
        assert m.definition is not None and len((m.definition.__doc__ or "").strip()) > 20, name
        assert m.value(A, B, 5) == pytest.approx(m.score(A, B, 5), abs=1e-9), name
        assert m.check_k(5, len(A)) == (5 if m.uses_k else None)
        if m.uses_k:
            with pytest.raises(ValueError, match="out of range"):
                m.check_k(len(A) - 1, len(A))
        assert "{k}" in m.label or not m.uses_k
    assert [m.name for m in metrics.k_metrics()] == ["precision"]
    heads = [m.headline for m in metrics.METRICS.values() if m.headline]
    assert len(heads) == len(set(heads))


def test_null_draws_follow_the_null_kind():
    assert metrics.METRICS["precision"].null_draws(1000, 5, 99) == 1000
    assert metrics.METRICS["cka_unbiased"].null_draws(1000, 5, 99) == 200
    assert metrics.METRICS["rsa"].null_draws(200, 10, 20) == 20


def test_summary_table_has_a_column_for_every_registered_headline(planted_small):
    from alignnb.measure import analysis

    spaces = planted_small
    table = analysis.summary_table(spaces, "a", 3, n_perm=19, n_boot=10)
    for m in metrics.METRICS.values():
        if m.headline:
            assert m.headline in table
        if m.headline_p:
            assert m.headline_p in table and ((table[m.headline_p] > 0) & (table[m.headline_p] <= 1)).all()
    assert list(table.columns) == [c for c in analysis.SUMMARY_COLUMNS if c in table]


@pytest.fixture
def planted_small():
    from alignnb.extract.embeddings import Embeddings

    A, B = _spaces(n=30)
    sentences = [f"go to the {i}" for i in range(30)]
    return {"a": Embeddings("a", sentences, A), "b": Embeddings("b", sentences, B)}


# --------------------------------------------------------------------------------------
# the null engine
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", list(metrics.METRICS))
def test_band_q95_and_p_value_agree_with_the_draws(metric):
    A, B = _spaces()
    res = nulls.permutation_null(metric, A, B, 5, n_perm=40, seed=3)
    assert res.null.shape == (40,)
    np.testing.assert_array_equal([res.null_low, res.null_high, res.null_q95, res.null_q05],
                                  np.quantile(res.null, [0.025, 0.975, 0.95, 0.05]))
    better = res.null >= res.observed - nulls.TIE_TOLERANCE if res.greater_is_better else \
        res.null <= res.observed + nulls.TIE_TOLERANCE
    assert res.p_value == (1 + better.sum()) / 41


def test_a_planted_alignment_beats_every_draw_and_an_unrelated_one_does_not():
    A, B = _spaces(noise=0.05)
    res = nulls.permutation_null("precision", A, B, 5, n_perm=99, seed=0)
    assert res.p_value == 1 / 100 and res.observed > res.null_high
    C = np.random.default_rng(9).normal(size=A.shape).astype(np.float32)
    ps = [nulls.permutation_null("precision", A, C, 5, n_perm=49, seed=s).p_value for s in range(5)]
    assert min(ps) > 0.02


def test_the_engine_draws_the_analysis_stream():
    """Seed s gives numpy default_rng(s)'s permutations, whatever the metric."""
    A, B = _spaces()
    rng = np.random.default_rng(7)
    m = metrics.METRICS["rsa"]
    expected = [m.compare(A, B[rng.permutation(len(A))]) for _ in range(6)]
    np.testing.assert_array_equal(nulls.permutation_null("rsa", A, B, n_perm=6, seed=7).null, expected)


def test_several_ks_under_the_same_permutations_equal_one_k_at_a_time():
    A, B = _spaces()
    m = metrics.METRICS["precision"]
    ks = [1, 5, 20]
    both = nulls.prepared_null(m, [m.prepare(A, k) for k in ks], [m.prepare(B, k) for k in ks], len(A), 30, 4)
    assert both.null.shape == (30, 3)
    for j, k in enumerate(ks):
        one = nulls.permutation_null("precision", A, B, k, 30, 4)
        np.testing.assert_array_equal(both.null[:, j], one.null)
        assert both.null_low[j] == one.null_low and both.null_high[j] == one.null_high
        assert both.p_value[j] == one.p_value and both.observed[j] == one.observed


def test_restricted_null_keeps_every_sentence_in_its_stratum():
    A, B = _spaces()
    strata = np.repeat(["x", "y", "z", "w"], 10)
    seen = []
    res = nulls.permutation_test(lambda perm: seen.append(perm) or 0.0, 0.0, len(A), 20, 1, strata=strata)
    assert res.stratified and len(seen) == 20
    assert all((strata[p] == strata).all() for p in seen) and any((p != np.arange(len(A))).any() for p in seen)


def test_calibration_uses_the_engine_null_and_the_package_agrees():
    A, B = _spaces()
    cal = calibration.calibrate_precision(A, B, 5, n_perm=39, seed=2)
    res = nulls.permutation_null("precision", A, B, 5, 39, 2)
    np.testing.assert_array_equal(cal.null, res.null)
    assert cal.score == res.observed and cal.p_value == res.p_value and cal.null_q95 == res.null_q95
    assert cal.package[1] == pytest.approx(cal.p_value, rel=1e-6) and cal.package[2] == pytest.approx(cal.tau, abs=1e-6)


def test_layer_calibration_null_is_the_max_over_layers_under_one_permutation():
    A, B = _spaces()
    layers = [B, B[:, ::-1].copy(), np.random.default_rng(1).normal(size=B.shape).astype(np.float32)]
    cal = calibration.calibrate_precision_layers(A, layers, 5, n_perm=25, seed=3)
    per_layer = [nulls.permutation_null("precision", A, L, 5, 25, 3).null for L in layers]
    np.testing.assert_array_equal(cal.null, np.max(per_layer, axis=0))
    assert cal.score == max(metrics.precision_at_k(A, L, 5) for L in layers)


# --------------------------------------------------------------------------------------
# streams, module size, docstrings
# --------------------------------------------------------------------------------------


def test_measure_derives_every_generator_from_streams():
    hits = [f"{p.name}:{i}" for p in MEASURE.glob("*.py") if p.name != "projections.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if "default_rng(" in line.split("#")[0]]
    assert not hits, hits


def test_measure_modules_are_short_and_public_functions_typed_and_documented():
    for path in MEASURE.glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 400, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and node.col_offset == 0:
                assert ast.get_docstring(node), f"{path.name}:{node.name} has no docstring"
                assert node.returns is not None, f"{path.name}:{node.name} has no return annotation"
                args = [a for a in node.args.args + node.args.kwonlyargs]
                assert all(a.annotation is not None for a in args), f"{path.name}:{node.name} has an untyped argument"


# --------------------------------------------------------------------------------------
# notebook 04's logic, now in the package
# --------------------------------------------------------------------------------------


def test_notebook_helpers(planted_small):
    from alignnb.extract.embeddings import Embeddings
    from alignnb.measure import analysis

    spaces = planted_small
    a = spaces["a"]
    layers = Embeddings("b", a.sentences, np.stack([spaces["b"].vectors[:, :6], a.vectors[:, :6]]))
    sweeps = analysis.layer_sweeps({("b", "mean"): layers, ("a", "mean"): layers}, a, 3)
    assert set(sweeps["model"]) == {"b"} and list(sweeps["pooling"]) == ["mean", "mean"]
    assert ((sweeps["precision"] > 0) & (sweeps["precision"] <= 1)).all()
    assert list(analysis.layer_sweeps({}, a, 3).columns) == ["model", "layer", "precision", "pooling"]
    assert analysis.curve_permutations(1000) == 200 and analysis.curve_permutations(50) == 50
    refs = analysis.reference_spaces({"x": a, "bag-of-words": a, "tf-idf": a}, ["x"], bot=a)
    assert list(refs) == ["x", "bag-of-words", "tf-idf", "bot-behaviour"]
    assert analysis.procrustes_target([]) == "bag-of-attributes" and analysis.procrustes_target(["m"]) == "m"
    curves = analysis.precision_vs_k(spaces, "a", n_perm=5)
    assert curves["k"].max() == len(a.sentences) - 2  # CURVE_KS cut to check_k's bound
