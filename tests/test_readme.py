"""The README's results agree with the committed tables that the full run wrote."""

from __future__ import annotations

import re

import pandas as pd

from alignnb import config

#: Each column of the README's results table and the alignment_summary.csv columns its numbers come from, in order.
SHOWN = {
    "precision@15": ["precision"], "chance": ["chance"], "R_NX": ["rnx"], "calibrated": ["calibrated"],
    "95% CI (colours × objects)": ["ci_low", "ci_high"], "p: global / level / verb": ["p_value", "p_within_level",
                                                                                     "p_within_verb"],
    "centred": ["precision_centred"], "Procrustes (p)": ["procrustes_disparity", "procrustes_p"],
    "CKA (p)": ["cka", "cka_p"],
}


def _readme_results() -> pd.DataFrame:
    text = (config.REPO_ROOT / "README.md").read_text()
    block = text.split("<!-- results-table:", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[1:]
            if line.startswith("|") and not line.startswith("|---")]
    return pd.DataFrame(rows[1:], columns=rows[0])


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+", cell)]


def test_readme_results_table_matches_alignment_summary():
    shown = _readme_results()
    summary = pd.read_csv(config.REPO_ROOT / "figures" / "alignment_summary.csv")
    assert list(shown["model"]) == list(summary["model"]) and (summary["k"] == 15).all()
    assert list(shown.columns) == ["model", "family", *SHOWN]
    for (_, r), (_, s) in zip(shown.iterrows(), summary.iterrows()):
        assert r["family"] == s["family"]
        for column, sources in SHOWN.items():
            values = _numbers(r[column])
            assert len(values) == len(sources), (s["model"], column, r[column])
            for value, source in zip(values, sources):  # 3 decimals shown, 4 stored: both rounded
                assert abs(value - s[source]) <= 0.00051, (s["model"], source, value, s[source])


def test_readme_success_rates_match_agent_success():
    text = (config.REPO_ROOT / "README.md").read_text()
    table = pd.read_csv(config.REPO_ROOT / "figures" / "agent_success.csv")
    for _, row in table.iterrows():
        level = row["level"].removeprefix("BabyAI-").removesuffix("-v0")
        assert re.search(rf"{row['success_rate']:.3f}\s+\({level}\)", text), level
