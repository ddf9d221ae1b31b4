import pytest

from evalq.rag.scoring import (
    METRICS,
    exact_match,
    extract_short_answer,
    normalize_answer,
    parse_option,
    retrieval_recall,
    token_f1,
)


def test_normalize_answer_like_squad() -> None:
    assert normalize_answer("  The Denver   Broncos! ") == "denver broncos"
    assert normalize_answer("An apple, a day.") == "apple day"


def test_exact_match_takes_the_best_gold() -> None:
    assert exact_match("the Denver Broncos.", ["Denver Broncos"]) == 1.0
    assert exact_match("Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Panthers", ["Denver Broncos"]) == 0.0


def test_token_f1_partial_overlap_and_max_over_golds() -> None:
    assert token_f1("Denver", ["Denver Broncos"]) == pytest.approx(2 / 3)
    assert token_f1("Denver Broncos", ["Broncos", "Denver Broncos"]) == 1.0
    assert token_f1("", ["Denver"]) == 0.0
    with pytest.raises(ValueError):
        token_f1("x", [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("Answer: 3", 3),
        ("The correct answer is (2).", 2),
        ("option 4", 4),
        ("4.", 4),
        ("(1) O-RAN.WG1", 1),
        ("In 5G and O-RAN.WG3, per 3GPP Release 15, the answer is option 2.", 2),
        ("Options 1 and 2 are wrong. Final answer: 3", 3),
        ("Answer: 9, no wait, 2", 2),
        ("Option 3 is the best choice", 3),
    ],
)
def test_parse_option_reads_the_chosen_number(text: str, expected: int) -> None:
    assert parse_option(text, 4) == expected


@pytest.mark.parametrize(
    "text", ["", "I am not sure.", "The 5G core", "Release 15 and 2.5 GHz", "Answer: 7"]
)
def test_parse_option_is_none_when_unparseable(text: str) -> None:
    assert parse_option(text, 4) is None


def test_extract_short_answer() -> None:
    assert extract_short_answer("Answer: Paris\nBecause it is the capital.") == "Paris"
    assert extract_short_answer("  Paris  \nmore") == "Paris"
    assert extract_short_answer("Let me think.\nFinal answer: Chief of Protocol") == (
        "Chief of Protocol"
    )
    assert extract_short_answer("Answer:\n\nyes") == "yes"
    assert extract_short_answer("") == ""


def test_retrieval_recall() -> None:
    assert retrieval_recall(["a", "b", "c"], ["a", "z"]) == 0.5
    assert retrieval_recall([], ["a"]) == 0.0
    assert retrieval_recall(["a"], []) is None


def test_exact_match_and_token_f1_are_the_squad_metric() -> None:
    for prediction, golds in [("yes, both", ["yes"]), ("", [""]), ("the x", ["x", "y"])]:
        assert exact_match(prediction, golds) == METRICS["squad"].exact_match(prediction, golds)
        assert token_f1(prediction, golds) == METRICS["squad"].f1(prediction, golds)
