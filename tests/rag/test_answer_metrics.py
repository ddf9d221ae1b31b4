"""Each dataset's answer metric against the behaviour of its official evaluation script."""

import pytest

from evalq.data.question import DEFAULT_METRIC
from evalq.rag.scoring import (
    METRICS,
    answer_metric,
    normalize_answer,
    score_answer,
)


def test_registry_holds_one_metric_per_dataset() -> None:
    assert set(METRICS) == {"squad", "hotpotqa", "musique"}
    assert DEFAULT_METRIC == "squad"
    for name, metric in METRICS.items():
        assert metric.name == name
        assert metric.source
    assert answer_metric("hotpotqa") is METRICS["hotpotqa"]
    with pytest.raises(ValueError, match="unknown answer metric 'nq'"):
        answer_metric("nq")
    with pytest.raises(ValueError):
        score_answer("nq", "x", ["x"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  The Denver   Broncos! ", "denver broncos"),
        ("An apple, a day.", "apple day"),
        ("theatre another thereby", "theatre another thereby"),  # whole words only
        ("a-b", "ab"),  # punctuation is dropped, not replaced by a space
        ("The", ""),
        ("Café", "café"),
        ("«Paris»", "«paris»"),  # only ASCII punctuation is dropped
        ("Paris\u2014France", "paris\u2014france"),
        ("x\t\ny", "x y"),
    ],
)
def test_normalization_of_the_official_scripts(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_exact_match_is_equality_after_normalization(metric: str) -> None:
    m = METRICS[metric]
    assert m.exact_match("the Denver Broncos.", ["Denver Broncos"]) == 1.0
    assert m.exact_match("Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert m.exact_match("Panthers", ["Denver Broncos"]) == 0.0
    assert m.exact_match("CAFÉ", ["café"]) == 1.0
    assert m.exact_match("«Paris»", ["Paris"]) == 0.0
    assert m.exact_match("", [""]) == 1.0
    assert m.exact_match("the", ["a"]) == 1.0  # both normalize to ""
    with pytest.raises(ValueError):
        m.exact_match("x", [])
    with pytest.raises(ValueError):
        m.f1("x", [])


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_token_f1_partial_overlap_and_best_gold(metric: str) -> None:
    m = METRICS[metric]
    assert m.f1("Denver", ["Denver Broncos"]) == pytest.approx(2 / 3)
    assert m.f1("Denver Broncos", ["Broncos", "Denver Broncos"]) == 1.0
    assert m.f1("Panthers", ["Denver Broncos"]) == 0.0
    # Bag of tokens: "y" twice on both sides counts twice; P = 2/3, R = 2/3.
    assert m.f1("x y y", ["y y z"]) == pytest.approx(2 / 3)
    assert m.f1("", ["Denver"]) == 0.0
    assert m.f1("Denver", [""]) == 0.0


def test_squad_f1_is_zero_when_both_sides_are_empty() -> None:
    assert METRICS["squad"].f1("", [""]) == 0.0
    assert METRICS["squad"].f1("The", ["a"]) == 0.0
    assert METRICS["squad"].f1("yes, both are American", ["yes"]) == pytest.approx(0.4)


def test_musique_f1_is_one_when_both_sides_are_empty() -> None:
    m = METRICS["musique"]
    assert m.f1("", [""]) == 1.0
    assert m.f1("The", ["a"]) == 1.0
    assert m.f1("", ["Paris"]) == 0.0
    assert m.f1("!!", ["Paris", ""]) == 1.0  # best over answer and aliases


def test_musique_takes_the_best_over_answer_and_aliases() -> None:
    golds = ["United States of America", "USA", "U.S."]
    assert score_answer("musique", "usa", golds) == (1.0, 1.0)
    assert score_answer("musique", "US", golds) == (1.0, 1.0)  # "U.S." normalizes to "us"
    em, f1 = score_answer("musique", "the United States", golds)
    assert em == 0.0 and f1 == pytest.approx(2 * (2 / 2) * (2 / 4) / (1 + 2 / 4))


@pytest.mark.parametrize(
    ("prediction", "gold", "f1"),
    [
        ("Yes, both are American.", "yes", 0.0),  # SQuAD's F1 would give 0.4
        ("yes", "yes sir", 0.0),
        ("no way", "no", 0.0),
        ("No.", "no", 1.0),
        ("YES", "Yes", 1.0),
        ("noanswer", "no answer", 0.0),
        ("noanswer", "noanswer", 1.0),
        ("yes", "no", 0.0),
        ("the yes", "yes", 1.0),  # normalizes to "yes"
        ("Chief of Protocol", "Chief of Protocol of the US", 2 * 1 * 0.6 / 1.6),
    ],
)
def test_hotpotqa_f1_zero_on_differing_yes_no_noanswer(
    prediction: str, gold: str, f1: float
) -> None:
    assert METRICS["hotpotqa"].f1(prediction, [gold]) == pytest.approx(f1)


def test_hotpotqa_exact_match_and_empty_answers() -> None:
    assert score_answer("hotpotqa", "Yes, both are American.", ["yes"]) == (0.0, 0.0)
    assert score_answer("hotpotqa", "yes.", ["Yes"]) == (1.0, 1.0)
    assert score_answer("hotpotqa", "", [""]) == (1.0, 0.0)
    assert score_answer("hotpotqa", "", ["no"]) == (0.0, 0.0)


def test_f1_floats_are_those_of_the_official_arithmetic() -> None:
    precision, recall = 1.0 * 2 / 3, 1.0 * 2 / 7
    expected = (2 * precision * recall) / (precision + recall)
    for name in METRICS:
        assert METRICS[name].f1("a1 b1 c1", ["a1 b1 d e f g h"]) == expected


def test_a_lone_string_is_one_gold_answer() -> None:
    assert score_answer("squad", "Paris", "Paris") == (1.0, 1.0)
    assert score_answer("musique", "P", "Paris") == (0.0, 0.0)
