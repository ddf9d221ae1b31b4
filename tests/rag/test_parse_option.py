"""parse_option: the final stated choice of a multiple-choice reply."""

import pytest

from evalq.rag.scoring import parse_option

OPTIONS = ("Fronthaul", "Midhaul", "Backhaul", "Fronthaul and midhaul")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # numbers
        ("3", 3),
        ("4.", 4),
        ("Answer: 3", 3),
        ("Answer:\n3", 3),
        ("**Answer: 3**", 3),
        ("The correct answer is (2).", 2),
        ("option 4", 4),
        ("Option 3 is the best choice", 3),
        ("The correct option is 2", 2),
        ("3) Backhaul", 3),
        ("(1) O-RAN.WG1", 1),
        ("In 5G and O-RAN.WG3, per 3GPP Release 15, the answer is option 2.", 2),
        # letters: A=1, B=2, ...
        ("Answer: B", 2),
        ("The answer is C.", 3),
        ("I think the answer is C.", 3),
        ("(B)", 2),
        ("B", 2),
        ("B.", 2),
        ("A", 1),
        ("B) Midhaul", 2),
        ("Choice (C)", 3),
        ("Answer: option B", 2),
        ("B is the correct answer", 2),
        ("(C) would be the best choice", 3),
        ("Answer: 1. Actually B is the correct answer", 2),
        # number words
        ("two", 2),
        ("Second", 2),
        ("The correct answer is two.", 2),
        ("the second option", 2),
        ("Option three", 3),
        # the final stated choice
        ("Options 1 and 2 are wrong. Final answer: 3", 3),
        ("Final answer: 1. On reflection, final answer: 4", 4),
        ("Answer: 1\nThat was wrong. Answer: 2", 2),
        ("Answer: 9, no wait, 2", 2),
        # negated mentions are skipped
        ("The answer is not 4; it is 2", 2),
        ("The answer isn't 4, it is 3", 3),
        ("Option 1 is wrong; option 3 is right", 3),
        ("Option 1 is not correct, option 4 is", 4),
        # reasoning and continuations
        ("<think>maybe 1</think>Answer: 3", 3),
        ("Answer: 2\nQuestion: What next?\n1. a\n2. b\nAnswer: 4", 2),
    ],
)
def test_parse_option_reads_the_stated_choice(text: str, expected: int) -> None:
    assert parse_option(text, 4) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I am not sure.",
        "The 5G core",
        "Release 15 and 2.5 GHz",
        "Answer: 7",
        "E",
        "Answer: I don't know",
        "The answer is A cell",  # an article, not option A
        "The answer is one of the options",
        "not 4",
        "<think>maybe 1",
        "O-RAN uses E2",
        "Midhaul",  # a text answer without the option texts
        "B is not the answer",
    ],
)
def test_parse_option_is_none_when_no_choice_is_stated(text: str) -> None:
    assert parse_option(text, 4) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Midhaul", 2),
        ("midhaul.", 2),
        ("Answer: Backhaul", 3),
        ("Fronthaul and midhaul", 4),  # equal to option 4, though it contains option 1
        ("It runs over the backhaul link.", 3),
        ("Answer: 1", 1),  # a number wins over the texts
    ],
)
def test_parse_option_matches_option_texts_when_no_number(text: str, expected: int) -> None:
    assert parse_option(text, 4, OPTIONS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Both fronthaul and backhaul",  # two options' texts
        "The core network",  # none
    ],
)
def test_parse_option_text_match_must_be_unique(text: str) -> None:
    assert parse_option(text, 4, OPTIONS) is None


def test_out_of_range_choices_are_skipped() -> None:
    assert parse_option("Answer: E", 4) is None
    assert parse_option("Answer: E", 5) == 5
    assert parse_option("Answer: 5, or else 1", 4) == 1
    assert parse_option("3", 2) is None
    assert parse_option("1", 0) is None
