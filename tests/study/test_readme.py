"""The README's results agree with the committed tables that the full run wrote."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from alignnb.core import paths

#: Each column of the README's results table and the alignment_summary.csv columns its numbers come from, in order.
SHOWN = {
    "precision@15 (mean ± sd over seeds)": ["precision", "precision_sd"], "chance": ["chance"], "R_NX": ["rnx"],
    "calibrated": ["calibrated"], "95% CI (seeds, colours × objects)": ["ci_low", "ci_high"],
    "largest p over seeds: global / level / verb": ["p_value", "p_within_level", "p_within_verb"],
    "centred": ["precision_centred"], "Procrustes (p)": ["procrustes_disparity", "procrustes_p"],
    "CKA (p)": ["cka", "cka_p"], "RSA: Spearman / rho-a": ["rsa", "rsa_rho_a"],
}


def _block(marker: str) -> pd.DataFrame:
    text = (paths.REPO_ROOT / "README.md").read_text()
    block = text.split(f"<!-- {marker}:", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[1:]
            if line.startswith("|") and not line.startswith("|---")]
    return pd.DataFrame(rows[1:], columns=rows[0])


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", cell)]


def _close(value: float, stored: float, what) -> None:
    assert abs(value - stored) <= 0.00051, (what, value, stored)  # 3 decimals shown, 4 stored: both rounded


def test_readme_results_table_is_the_mean_over_seeds_of_alignment_summary():
    shown = _block("results-table")
    summary = pd.read_csv(paths.REPO_ROOT / "figures" / "alignment_summary.csv")
    mean = summary[summary["seed"].astype(str) == "mean"]
    seeds = summary[summary["seed"].astype(str) != "mean"]
    assert list(shown["model"]) == list(mean["model"]) and (summary["k"] == 15).all()
    assert list(shown.columns) == ["model", "family", "precision@15 (mean ± sd over seeds)", "per seed", "chance",
                                   "R_NX", "calibrated", "95% CI (seeds, colours × objects)",
                                   "largest p over seeds: global / level / verb", "null z", "centred",
                                   "Procrustes (p)", "CKA (p)", "RSA: Spearman / rho-a"]
    for (_, r), (_, s) in zip(shown.iterrows(), mean.iterrows()):
        assert r["family"] == s["family"]
        for column, sources in SHOWN.items():
            values = _numbers(r[column])
            assert len(values) == len(sources), (s["model"], column, r[column])
            for value, source in zip(values, sources):
                _close(value, s[source], (s["model"], source))
        own = seeds[seeds["model"] == s["model"]]["precision"].to_numpy()
        assert _numbers(r["per seed"]) == pytest.approx(own, abs=0.00051)
        assert own.mean() == pytest.approx(s["precision"], abs=1e-4)  # both stored with 4 decimals


@pytest.mark.parametrize("marker, csv, key", [("training-effect-table", "training_effect.csv", ["extraction", "model"]),
                                              ("model-contrast-table", "model_contrasts.csv", ["extraction", "model", "versus"])])
def test_readme_registered_tests_match_their_tables(marker, csv, key):
    shown = _block(marker)
    table = pd.read_csv(paths.REPO_ROOT / "figures" / csv)
    registered = table[table["p_holm"].notna()]
    assert len(shown) == len(registered) > 0
    for (_, r), (_, t) in zip(shown.iterrows(), registered.iterrows()):
        assert r["verdict"] == t["verdict"]
        _close(_numbers(r["p (Holm)"])[0], t["p_holm"], (csv, "p_holm"))
        low, high = _numbers(r["95% interval"])
        _close(low, t["ci_low"], (csv, "ci_low"))
        _close(high, t["ci_high"], (csv, "ci_high"))
        estimate = _numbers(r["Δ (trained − twin)"] if "Δ (trained − twin)" in r else r["difference"])[0]
        _close(estimate, t["estimate"], (csv, "estimate"))


def test_registered_verdicts_follow_from_their_p_values():
    """A verdict says 'decided' exactly when the Holm-adjusted p is below 0.05, in the estimate's direction."""
    for csv in ("training_effect.csv", "model_contrasts.csv"):
        table = pd.read_csv(paths.REPO_ROOT / "figures" / csv)
        for _, t in table.iterrows():
            if pd.isna(t["p_holm"]):
                assert t["verdict"] == "exploratory"
            elif t["p_holm"] < 0.05:
                assert ("higher" in t["verdict"]) == (t["estimate"] > 0), t.to_dict()
                assert t["ci_low"] > 0 or t["ci_high"] < 0 or csv == "model_contrasts.csv", t.to_dict()
            else:
                assert t["verdict"] == "not decided"


def test_readme_success_rates_match_agent_success():
    """The README's table of every agent's greedy success (one row per learner and seed)."""
    text = (paths.REPO_ROOT / "README.md").read_text()
    block = text.split("<!-- success-table:", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[1:]
            if line.startswith("|") and not line.startswith("|---")]
    shown = pd.DataFrame(rows[1:], columns=rows[0])
    table = pd.read_csv(paths.REPO_ROOT / "figures" / "agent_success.csv")
    wide = table.pivot_table(index=["learner", "seed"], columns="level", values="success_rate", sort=False)
    assert len(shown) == len(wide)
    for (_, r), ((learner, seed), values) in zip(shown.iterrows(), wide.iterrows()):
        assert (r["learner"], int(r["seed"])) == (learner, seed)
        for level, value in values.items():
            assert r[level.removeprefix("BabyAI-").removesuffix("-v0")] == f"{value:.3f}", (learner, seed, level)


def test_readme_variants_table_matches_the_variant_tables():
    """The README's agent-variants table is what analysis.variant_markdown makes of the committed tables."""
    from alignnb.measure import analysis

    text = (paths.REPO_ROOT / "README.md").read_text()
    block = text.split("<!-- variants-table:", 1)[1].split("-->", 1)[1].strip("\n").split("\n\n", 1)[0]
    lines = block.splitlines()
    models = [c.strip() for c in lines[0].strip("|").split("|")][2:-1]
    variants = pd.read_csv(paths.REPO_ROOT / "figures" / "agent_variants.csv")
    agreement = pd.read_csv(paths.REPO_ROOT / "figures" / "agent_agreement.csv")
    expected = analysis.variant_markdown(analysis.variant_summary(variants), analysis.ceiling_summary(agreement),
                                         models)
    assert lines == expected


def test_readme_tables_are_the_regenerated_ones():
    """Every marked table of the README is what ``python -m alignnb.run.readme`` makes from figures/."""
    from alignnb.run import readme

    text = (paths.REPO_ROOT / "README.md").read_text()
    assert readme.render(text, paths.REPO_ROOT / "figures") == text, "run: python -m alignnb.run.readme"


def test_the_readme_generator_rewrites_only_marked_blocks(tmp_path):
    from alignnb.run import readme

    pd.DataFrame({"learner": ["transformer"] * 2, "seed": [0, 0], "level": ["BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0"],
                  "success_rate": [0.995, 0.96], "episodes": [500, 500], "ci_low": [0.98, 0.94],
                  "ci_high": [0.999, 0.975]}).to_csv(tmp_path / "agent_success.csv", index=False)
    text = "intro\n\n<!-- success-table: from figures -->\n| old |\n\nafter\n"
    out = readme.render(text, tmp_path)
    assert out.startswith("intro\n\n<!-- success-table: from figures -->\n| learner | seed | GoToLocal | PickupLoc |")
    assert "| transformer | 0 | 0.995 | 0.960 | PickupLoc |" in out and out.endswith("\n\nafter\n")
    assert readme.render(out, tmp_path) == out


def test_the_goals_lines_name_every_miss_with_its_rate_and_goal(tmp_path):
    from alignnb.run import readme

    levels = ["BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0"]
    pd.DataFrame({"learner": ["transformer"] * 4 + ["gru-film-lstm"] * 2, "seed": [0, 0, 1, 1, 0, 0],
                  "level": levels * 3, "success_rate": [1.0, 0.98, 1.0, 0.96, 0.97, 0.94], "episodes": 500,
                  "ci_low": 0.9, "ci_high": 1.0}).to_csv(tmp_path / "agent_success.csv", index=False)
    out = readme.render("<!-- goals-lines: from figures -->\n- old\n\nafter\n", tmp_path)
    lines = out.splitlines()[1:3]
    assert lines[0] == "- **transformer: 1 of 2 seeds meet every goal** on the test episodes; misses: seed 1: PickupLoc 0.960 < 0.97."
    assert lines[1] == "- **gru-film-lstm: 0 of 1 seeds meet every goal** on the test episodes; misses: seed 0: PickupLoc 0.940 < 0.95."


def test_the_modes_table_gives_each_learners_mean_and_range_over_seeds(tmp_path):
    from alignnb.run import readme

    pd.DataFrame({"learner": ["gru-film-lstm"] * 2, "seed": [0, 1], "level": ["BabyAI-PutNextLocal-v0"] * 2,
                  "episodes": 500, "greedy": [0.8, 0.5], "sampled": [0.9, 0.7]}).to_csv(
        tmp_path / "agent_success_modes.csv", index=False)
    out = readme.render("<!-- modes-table: x -->\n| old |\n", tmp_path).splitlines()
    assert out[1:] == ["| learner | actions | PutNextLocal |", "|---|---|---|",
                       "| gru-film-lstm | greedy | 0.650 (0.500-0.800) |",
                       "| gru-film-lstm | sampled | 0.800 (0.700-0.900) |"]
