from collections import Counter

from evalq.data import oran
from evalq.data.question import Question


def _reasons(questions: list[Question]) -> Counter[str]:
    return Counter(q.invalid for q in questions if q.invalid is not None)


def test_row_counts_match_the_files() -> None:
    assert len(oran.load("easy")) == 1139
    assert len(oran.load("medium")) == 9570
    assert len(oran.load("hard")) == 3243


def test_malformed_option_rows_are_kept_invalid_with_reasons() -> None:
    # Counts from the dataset README's "Malformed rows" table.
    assert "no options" not in _reasons(oran.load("easy"))
    medium = _reasons(oran.load("medium"))
    assert medium["no options"] == 32
    assert medium["expected 4 options, found 6"] == 1
    assert medium["expected 4 options, found 3"] == 1
    hard = _reasons(oran.load("hard"))
    assert hard["no options"] == 13
    assert hard["expected 4 options, found 5"] == 2


def test_rows_with_empty_question_text_are_invalid() -> None:
    medium = oran.load("medium")
    assert medium[494].text == ""
    assert medium[494].invalid == "empty question text"


def test_valid_row_has_stripped_options_and_string_gold() -> None:
    first = oran.load("easy")[0]
    assert first.id == "oran-E-00000"
    assert first.options == ("O-RAN.WG3", "O-RAN.WG4", "O-RAN.WG1", "O-RAN.WG5")
    assert first.gold == "3"
    assert first.difficulty == "easy"
    assert first.corpus is None
    assert first.invalid is None
    assert first.is_multiple_choice


def test_ids_are_line_numbers_and_unique() -> None:
    hard = oran.load("hard")
    assert [q.id for q in hard[:2]] == ["oran-H-00000", "oran-H-00001"]
    assert hard[-1].id == "oran-H-03242"
    mixed = oran.load("mixed")
    assert len({q.id for q in mixed}) == len(mixed)


def test_mixed_is_easy_then_medium_then_hard() -> None:
    mixed = oran.load("mixed")
    assert mixed == oran.load("easy") + oran.load("medium") + oran.load("hard")
    assert Counter(q.difficulty for q in mixed) == {"easy": 1139, "medium": 9570, "hard": 3243}


def test_bad_lines_become_invalid_questions() -> None:
    not_json = oran.parse_row("[not json", "oran-E-00007", "easy")
    assert not_json.id == "oran-E-00007"
    assert not_json.invalid is not None and "not valid JSON" in not_json.invalid
    wrong_shape = oran.parse_row('["q", ["1. a"]]', "oran-E-00008", "easy")
    assert wrong_shape.invalid == "not a [question, options, answer] list"
    out_of_range = oran.parse_row('["q", ["1. a", "2. b", "3. c", "4. d"], "7"]', "x", "easy")
    assert out_of_range.invalid == "answer '7' is not an option number 1..4"
