"""A user's own questions as JSON Lines; bad rows become invalid questions, never a crash.

Each line is one object::

    {"id": "q1", "question": "...", "answer": "2",
     "options": ["...", "...", "..."],          # optional: multiple choice, answer = 1-based number
     "gold_passages": ["corpus-passage-id"],    # optional
     "aliases": ["..."], "difficulty": "hard",  # optional
     "metric": "squad"}                         # optional: "squad", "hotpotqa" or "musique"

``metric`` names the official answer metric that grades a short answer (default "squad";
see ``evalq.data.question.METRIC_NAMES``); an unknown name makes the row invalid.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from evalq.data.oran import strip_option_prefix
from evalq.data.question import DEFAULT_METRIC, METRIC_NAMES, Question
from evalq.errors import UserError

ALL = "all"
# What no database stores as text: NUL (Postgres refuses it) and unpaired surrogates (not
# UTF-8). JSON can still spell both (\u0000, \ud800), so such a row is invalid as a whole.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def load(path: str | Path, difficulty: str = ALL, corpus: str | None = None) -> list[Question]:
    """The questions in a JSON Lines file, in file order.

    A row missing ``id``, ``question`` or ``answer``, or with a field of the wrong type,
    is kept as an invalid question with the reason. A row without a usable id gets
    ``line-<0-based line number>``; a repeated id gets ``<id>#line<n>`` and is invalid.

    Args:
        path: The file.
        difficulty: "all", or one of the ``difficulty`` labels the rows carry.
        corpus: The corpus the questions retrieve from (its name), or None.

    Raises:
        UserError: If the file cannot be read, is not UTF-8, has no rows, or the difficulty
            is not among its labels.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"question file {file} does not exist") from None
    except UnicodeDecodeError:
        raise UserError(f"question file {file} is not UTF-8 text") from None
    except OSError as error:
        raise UserError(f"cannot read question file {file}: {error.strerror}") from None

    questions: list[Question] = []
    first_line_of: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        question = parse_row(line, line_no, corpus)
        if question.id in first_line_of:
            question = Question(
                id=f"{question.id}#line{line_no}",
                text=question.text,
                gold=question.gold,
                difficulty=question.difficulty,
                corpus=corpus,
                invalid=f"duplicate id (first on line {first_line_of[question.id]})",
            )
        first_line_of[question.id] = line_no
        questions.append(question)
    if not questions:
        raise UserError(f"question file {file} holds no rows")

    if difficulty == ALL:
        return questions
    labels = sorted({question.difficulty for question in questions} - {ALL})
    if difficulty not in labels:
        raise UserError(
            f"unknown difficulty {difficulty!r} for {file}; choose from "
            + ", ".join([ALL, *labels])
        )
    return [question for question in questions if question.difficulty == difficulty]


def parse_row(line: str, line_no: int, corpus: str | None) -> Question:
    """One JSON line as a Question; invalid with the reason if it is malformed.

    Args:
        line: The raw line.
        line_no: Its 0-based line number (names rows without an id).
        corpus: The corpus name for the question.
    """
    fallback_id = f"line-{line_no:05d}"
    try:
        row: Any = json.loads(line)
    except json.JSONDecodeError as error:
        return _invalid(fallback_id, corpus, f"not valid JSON ({error.msg})")
    if not isinstance(row, dict):
        return _invalid(fallback_id, corpus, "not a JSON object")
    if _unstorable(row):
        return _invalid(
            fallback_id, corpus, "holds a NUL character or an unpaired surrogate (\\u0000, \\ud800)"
        )

    raw_id = row.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    if not isinstance(raw_id, str) or not raw_id.strip():
        reason = "missing 'id'" if raw_id is None else "'id' is not a non-empty string"
        return _invalid(fallback_id, corpus, reason, _string_or_empty(row.get("question")))
    question_id = raw_id.strip()
    text = _string_or_empty(row.get("question"))
    difficulty = row.get("difficulty", ALL)
    if not isinstance(difficulty, str) or not difficulty:
        return _invalid(question_id, corpus, "'difficulty' is not a non-empty string", text)

    def invalid(reason: str) -> Question:
        return _invalid(question_id, corpus, reason, text, difficulty)

    if "question" not in row:
        return invalid("missing 'question'")
    if not text.strip():
        return invalid("'question' is not a non-empty string")
    answer = row.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool):
        answer = str(answer)
    if answer is None:
        return invalid("missing 'answer'")
    if not isinstance(answer, str) or not answer.strip():
        return invalid("'answer' is not a non-empty string")
    answer = answer.strip()

    options: tuple[str, ...] | None = None
    raw_options = row.get("options")
    if raw_options is not None:
        if not _is_string_list(raw_options):
            return invalid("'options' is not a list of strings")
        options = tuple(strip_option_prefix(o, n) for n, o in enumerate(raw_options, 1))
        if not options:
            return invalid("no options")
        if not (answer.isdigit() and 1 <= int(answer) <= len(options)):
            return invalid(f"answer {answer!r} is not an option number 1..{len(options)}")

    gold_passages = row.get("gold_passages", [])
    if not _is_string_list(gold_passages):
        return invalid("'gold_passages' is not a list of strings")
    aliases = row.get("aliases", [])
    if not _is_string_list(aliases):
        return invalid("'aliases' is not a list of strings")
    metric = row.get("metric", DEFAULT_METRIC)
    if not isinstance(metric, str) or metric not in METRIC_NAMES:
        return invalid(f"'metric' {metric!r} is not one of: " + ", ".join(METRIC_NAMES))
    return Question(
        id=question_id,
        text=text.strip(),
        gold=answer,
        options=options,
        difficulty=difficulty,
        corpus=corpus,
        gold_passages=tuple(gold_passages),
        aliases=tuple(aliases),
        metric=metric,
    )


def _unstorable(value: object) -> bool:
    """Whether any key or string anywhere in a parsed JSON value holds unstorable text."""
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


def _is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _string_or_empty(value: object) -> str:
    return value if isinstance(value, str) else ""


def _invalid(
    question_id: str,
    corpus: str | None,
    reason: str,
    text: str = "",
    difficulty: str = ALL,
) -> Question:
    return Question(
        id=question_id,
        text=text.strip(),
        gold="",
        difficulty=difficulty,
        corpus=corpus,
        invalid=reason,
    )
