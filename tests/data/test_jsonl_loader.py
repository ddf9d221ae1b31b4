import json
from pathlib import Path

import pytest

from evalq.data import jsonl
from evalq.errors import UserError


def _write(path: Path, rows: list[object]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_valid_rows_load_with_options_and_corpus(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "q.jsonl",
        [
            {
                "id": "a",
                "question": "Capital of France?",
                "answer": "Paris",
                "gold_passages": ["p1"],
            },
            {"id": 7, "question": "Pick one", "options": ["1. x", "2. y"], "answer": 2},
        ],
    )
    first, second = jsonl.load(file, corpus="mydocs")
    assert first.gold == "Paris" and first.gold_passages == ("p1",) and first.corpus == "mydocs"
    assert not first.is_multiple_choice
    assert second.id == "7" and second.options == ("x", "y") and second.gold == "2"
    assert first.invalid is None and second.invalid is None


def test_bad_rows_become_invalid_with_reasons(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "q.jsonl",
        [
            "{oops",
            {"question": "no id", "answer": "x"},
            {"id": "b", "answer": "x"},
            {"id": "c", "question": "q"},
            {"id": "d", "question": "q", "answer": ["x"]},
            {"id": "e", "question": "q", "answer": "5", "options": ["a", "b"]},
            {"id": "f", "question": "q", "answer": "x", "gold_passages": "p1"},
            {"id": "f", "question": "again", "answer": "x"},
            [1, 2],
        ],
    )
    questions = jsonl.load(file)
    reasons = {q.id: q.invalid for q in questions}
    assert reasons["line-00000"] is not None and "not valid JSON" in reasons["line-00000"]
    assert reasons["line-00001"] == "missing 'id'"
    assert reasons["b"] == "missing 'question'"
    assert reasons["c"] == "missing 'answer'"
    assert reasons["d"] == "'answer' is not a non-empty string"
    assert reasons["e"] == "answer '5' is not an option number 1..2"
    assert reasons["f"] == "'gold_passages' is not a list of strings"
    assert reasons["f#line7"] == "duplicate id (first on line 6)"
    assert reasons["line-00008"] == "not a JSON object"
    assert len(questions) == 9


def test_unreadable_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        jsonl.load(tmp_path / "missing.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="not UTF-8"):
        jsonl.load(tmp_path / "bin.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="no rows"):
        jsonl.load(tmp_path / "empty.jsonl")
