"""grade() scores a reply by its question's own metric, or by the option it states."""

import pytest

from evalq.data.question import Question
from evalq.rag.strategies.base import grade, new_result


def _graded(q: Question, generated: str) -> tuple[str | None, bool | None, float | None]:
    result = new_result(q, "fixed:k=0", 0)
    grade(result, q, generated)
    assert result.raw_output == generated
    return result.answer, result.correct, result.f1


def test_hotpotqa_question_gets_no_partial_credit_on_yes_no() -> None:
    q = Question(id="h", text="Are both American?", gold="yes", metric="hotpotqa")
    answer, correct, f1 = _graded(q, "Yes, both are American.")
    assert answer == "Yes, both are American" and correct is False and f1 == 0.0
    squad = Question(id="s", text="Are both American?", gold="yes")
    assert _graded(squad, "Yes, both are American.")[2] == pytest.approx(0.4)


def test_extracted_answer_is_scored_exactly() -> None:
    q = Question(id="h", text="Who directed it?", gold="Krzysztof Zanussi", metric="hotpotqa")
    assert _graded(q, "The answer is: Krzysztof Zanussi.") == ("Krzysztof Zanussi", True, 1.0)


def test_musique_question_takes_its_aliases() -> None:
    q = Question(
        id="m", text="Which country?", gold="United States", aliases=("USA",), metric="musique"
    )
    assert _graded(q, "Answer: USA") == ("USA", True, 1.0)


def test_unparsed_short_answer() -> None:
    q = Question(id="s", text="Capital?", gold="Paris")
    result = new_result(q, "fixed:k=0", 0)
    grade(result, q, "<think>The capital is")
    assert result.parsed is False and result.answer == "" and result.correct is False


def test_multiple_choice_uses_the_option_texts() -> None:
    q = Question(id="o", text="Which link?", gold="2", options=("Fronthaul", "Midhaul"))
    result = new_result(q, "fixed:k=0", 0)
    grade(result, q, "Midhaul.")
    assert result.parsed is True and result.answer == "2" and result.correct is True
    assert result.exact_match is None and result.f1 is None
    grade(result, q, "I cannot tell.")
    assert result.parsed is False and result.answer is None and result.correct is False
