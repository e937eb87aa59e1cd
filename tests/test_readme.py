"""The README's results agree with the committed tables that the full run wrote."""

from __future__ import annotations

import re

import pandas as pd

from alignnb import config


def _readme_results() -> pd.DataFrame:
    text = (config.REPO_ROOT / "README.md").read_text()
    block = text.split("<!-- results-table:", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[1:]
            if line.startswith("|") and not line.startswith("|---")]
    return pd.DataFrame(rows[1:], columns=rows[0])


def _same(shown: str | float, stored: float) -> bool:
    """A 3-decimal README value agrees with a 4-decimal CSV value (both are rounded)."""
    return abs(float(shown) - stored) <= 0.00051


def test_readme_results_table_matches_alignment_summary():
    shown = _readme_results()
    summary = pd.read_csv(config.REPO_ROOT / "figures" / "alignment_summary.csv")
    assert list(shown["model"]) == list(summary["model"]) and (summary["k"] == 15).all()
    for (_, r), (_, s) in zip(shown.iterrows(), summary.iterrows()):
        assert r["family"] == s["family"]
        low, high = r["95% CI"].split("-")
        for shown, col in ((r["precision@15"], "precision"), (low, "ci_low"), (high, "ci_high"),
                           (r["permutation p"], "p_value"), (r["Procrustes disparity"], "procrustes_disparity"),
                           (r["CKA"], "cka")):
            assert _same(shown, s[col]), (s["model"], col, shown, s[col])


def test_readme_success_rates_match_agent_success():
    text = (config.REPO_ROOT / "README.md").read_text()
    table = pd.read_csv(config.REPO_ROOT / "figures" / "agent_success.csv")
    for _, row in table.iterrows():
        level = row["level"].removeprefix("BabyAI-").removesuffix("-v0")
        assert re.search(rf"{row['success_rate']:.3f}\s+\({level}\)", text), level
