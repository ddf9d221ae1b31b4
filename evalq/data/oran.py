"""ORAN-Bench-13K: O-RAN multiple-choice questions in three difficulty files, no corpus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from evalq.data.question import Question
from evalq.errors import UserError

DATA_DIR = Path(__file__).parent / "files" / "oran-bench-13k"
EXPECTED_OPTIONS = 4

# difficulty -> (file code used in ids, file name)
FILES: dict[str, tuple[str, str]] = {
    "easy": ("E", "fin_E.json"),
    "medium": ("M", "fin_M.json"),
    "hard": ("H", "fin_H.json"),
}
DIFFICULTIES = (*FILES, "mixed")


def load(difficulty: str) -> list[Question]:
    """The questions of one difficulty, or of all three ("mixed", in easy, medium, hard order).

    Malformed rows are kept as invalid questions with the reason; ids are
    ``oran-<E|M|H>-<0-based line number>``, so they stay stable across releases of evalq.

    Args:
        difficulty: "easy", "medium", "hard" or "mixed".

    Raises:
        UserError: If the difficulty is unknown.
    """
    if difficulty == "mixed":
        return [question for level in FILES for question in _load_file(level)]
    if difficulty not in FILES:
        raise UserError(
            f"unknown difficulty {difficulty!r} for oran-bench; choose from "
            + ", ".join(DIFFICULTIES)
        )
    return _load_file(difficulty)


def _load_file(difficulty: str) -> list[Question]:
    code, file_name = FILES[difficulty]
    # The files are JSON Lines despite the .json suffix (and use CRLF line ends).
    lines = (DATA_DIR / file_name).read_text(encoding="utf-8").splitlines()
    return [
        parse_row(line, f"oran-{code}-{line_no:05d}", difficulty)
        for line_no, line in enumerate(lines)
    ]


def parse_row(line: str, question_id: str, difficulty: str) -> Question:
    """One ``[question, ["1. ...", ...], "n"]`` line as a Question, invalid with a reason if bad.

    Args:
        line: The raw JSON line.
        question_id: The id to give the question.
        difficulty: Its difficulty label.
    """
    try:
        row: Any = json.loads(line)
    except json.JSONDecodeError as error:
        return _invalid(question_id, difficulty, f"not valid JSON ({error.msg})")
    if not isinstance(row, list) or len(row) != 3:
        return _invalid(question_id, difficulty, "not a [question, options, answer] list")
    text, raw_options, raw_answer = row
    if not isinstance(text, str):
        return _invalid(question_id, difficulty, "question is not a string")
    if not isinstance(raw_options, list) or not all(isinstance(o, str) for o in raw_options):
        return _invalid(question_id, difficulty, "options are not a list of strings", text)
    if isinstance(raw_answer, int) and not isinstance(raw_answer, bool):
        raw_answer = str(raw_answer)
    if not isinstance(raw_answer, str):
        return _invalid(question_id, difficulty, "answer is not an option number", text)

    options = tuple(
        strip_option_prefix(option, number) for number, option in enumerate(raw_options, 1)
    )
    gold = raw_answer.strip()
    invalid: str | None = None
    if not options:
        invalid = "no options"
    elif len(options) != EXPECTED_OPTIONS:
        invalid = f"expected {EXPECTED_OPTIONS} options, found {len(options)}"
    elif not (gold.isdigit() and 1 <= int(gold) <= len(options)):
        invalid = f"answer {gold!r} is not an option number 1..{len(options)}"
    elif not text.strip():
        invalid = "empty question text"
    return Question(
        id=question_id,
        text=text.strip(),
        gold=gold,
        options=options,
        difficulty=difficulty,
        corpus=None,
        invalid=invalid,
    )


def strip_option_prefix(option: str, number: int) -> str:
    """The option text without its own ``"N. "`` or ``"N) "`` prefix (N = its position)."""
    # Only the option's own number is a prefix: "3.5 GHz" as option 1 keeps its "3.".
    return re.sub(rf"^\s*{number}\s*[.)]\s+", "", option, count=1).strip()


def _invalid(question_id: str, difficulty: str, reason: str, text: str = "") -> Question:
    return Question(
        id=question_id,
        text=text.strip(),
        gold="",
        options=(),
        difficulty=difficulty,
        corpus=None,
        invalid=reason,
    )
