"""The sentence set and the instruction parser."""

from __future__ import annotations

import numpy as np
import pytest

from alignnb.collect import instructions as ins
from support import LEVELS


def render(a: dict) -> str:
    """Rebuild a sentence from parsed attributes (inverse of the parser)."""
    locs = {v: k for k, v in ins.LOCATIONS.items()}

    def obj(det, color, kind, loc):
        words = [det] + ([color] if color != "none" else []) + [kind] + ([locs[loc]] if loc != "none" else [])
        return " ".join(words)

    verb = {"goto": "go to", "pickup": "pick up", "open": "open"}
    if a["verb"] == "putnext":
        return f"put {obj(a['det'], a['color'], a['object'], a['loc'])} next to " \
               f"{obj(a['det2'], a['color2'], a['object2'], a['loc2'])}"
    return f"{verb[a['verb']]} {obj(a['det'], a['color'], a['object'], a['loc'])}"


@pytest.fixture(scope="module")
def sentence_set(data_root):
    return ins.build_sentence_set(LEVELS, seed=0, patience=2000, data_dir=data_root, progress=False)


def test_sentence_set_is_the_full_grammar_of_the_default_levels(sentence_set):
    counts = {lv: sentence_set.levels.count(lv) for lv in LEVELS}
    # go to: {the,a} x 6 colours x 3 objects; pick up: {the,a} x {none, 6 colours} x 3 x {none, 4 locations};
    # open: {the,a} door x 4 locations; put next to: ordered pairs of 18 distinct coloured objects
    assert counts == {LEVELS[0]: 36, LEVELS[1]: 210, LEVELS[2]: 8, LEVELS[3]: 18 * 17}
    assert sentence_set.sentences == sorted(sentence_set.sentences, key=lambda s: (
        LEVELS.index(sentence_set.levels[sentence_set.sentences.index(s)]), s))


def test_parser_round_trips_every_mission(sentence_set):
    attrs = sentence_set.attributes
    assert list(attrs.index) == sentence_set.sentences
    for sentence, row in attrs.iterrows():
        assert render(row.to_dict()) == sentence
    assert set(attrs["verb"]) == {"goto", "pickup", "open", "putnext"}
    assert attrs.loc["pick up a ball behind you", ["det", "color", "object", "loc"]].tolist() == ["a", "none", "ball", "behind"]


def test_demo_missions_are_in_the_sentence_set(sentence_set, small_demos):
    assert set(small_demos.missions) <= set(sentence_set.sentences)
    from_demos = ins.sentence_set_from_demos(small_demos)
    assert from_demos.sentences == small_demos.missions
    assert set(from_demos.levels) == set(LEVELS)


def test_parser_rejects_other_text_and_reads_composites():
    for bad in ["go to the moon", "pick up", "put the red ball next to", "open the red window", ""]:
        with pytest.raises(ValueError, match="not a BabyAI instruction"):
            ins.parse_instruction(bad)
    a = ins.parse_instruction("open the red door, then go to a ball")
    assert a["verb"] == "open" and a["color"] == "red" and a["n_clauses"] == 2


def test_subset_inventory_and_onehot(sentence_set):
    sub = sentence_set.subset("BabyAI-GoToLocal-v0")
    assert len(sub) == 36 and sub.digest != sentence_set.digest
    with pytest.raises(ValueError, match="no sentences"):
        sentence_set.subset("BabyAI-Nope-v0")
    inv = ins.inventory(sentence_set)
    assert inv.loc["all levels", "missions"] == 560
    assert inv.loc["BabyAI-GoToLocal-v0", "vocabulary"] == len(sub.vocabulary())
    x, cols = ins.attribute_onehot(sentence_set)
    assert x.shape == (560, len(cols)) and x.dtype == np.float32
    # exactly one value per attribute column (verb + 4 per object, "n/a" for a missing second object)
    assert np.all(x.sum(1) == 9)
    is_put = np.array([s.startswith("put") for s in sentence_set.sentences])
    assert np.all(x[~is_put, cols.index("object2=n/a")] == 1) and np.all(x[is_put, cols.index("object2=n/a")] == 0)
    assert len({tuple(r) for r in x}) == 560  # distinct sentences, distinct symbols


def test_save_load_round_trip(sentence_set, tmp_path):
    path = tmp_path / "s.json"
    sentence_set.save(path)
    again = ins.SentenceSet.load(path)
    assert again.sentences == sentence_set.sentences and again.levels == sentence_set.levels
    with pytest.raises(ValueError, match="distinct"):
        ins.SentenceSet(["a", "a"], ["L", "L"])
