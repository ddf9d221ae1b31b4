"""Grading on recorded replies of a real model: what reading the answer must preserve.

The replies (tests/fixtures/real_generations, SmolLM2-135M-Instruct) are what the shipped
answer prompt and the one before it drew from a real model; these tests keep the figures the
prompt was chosen on (docs/prompts.md), so an extraction or grading change that loses them
fails here, in a second, rather than in a real run.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Any

import pytest

from evalq.rag.scoring import extract_short_answer, parse_option, score_answer

FIXTURE = (
    Path(__file__).parent.parent / "fixtures" / "real_generations" / "smollm2-135m-instruct.jsonl"
)


def _records(kind: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if r["prompt_kind"] == kind]


def _f1(record: dict[str, Any]) -> float:
    answer = extract_short_answer(record["generated"])
    return score_answer(record["dataset"], answer, [record["gold"], *record["aliases"]])[1]


def test_squad_passages_raise_f1_of_the_shipped_prompt() -> None:
    squad = [r for r in _records("answer") if r["dataset"] == "squad"]
    closed = mean(_f1(r) for r in squad if r["k"] == 0)
    retrieved = mean(_f1(r) for r in squad if r["k"] == 3)
    assert len(squad) == 200
    assert retrieved > closed + 0.05, (closed, retrieved)


def test_the_shipped_prompt_beats_the_original_on_squad_with_passages() -> None:
    def squad_f1(kind: str) -> float:
        return mean(_f1(r) for r in _records(kind) if r["dataset"] == "squad" and r["k"] == 3)

    assert squad_f1("answer") > squad_f1("answer-original") + 0.03


@pytest.mark.parametrize("kind", ["answer", "answer-original"])
def test_every_open_reply_yields_an_answer(kind: str) -> None:
    open_replies = [r for r in _records(kind) if not r["options"] and r["generated"].strip()]
    unread = [r["generated"][:60] for r in open_replies if not extract_short_answer(r["generated"])]
    assert len(unread) <= 0.03 * len(open_replies), unread


def test_option_replies_are_read() -> None:
    options = [r for r in _records("answer") if r["options"]]
    read = [parse_option(r["generated"], len(r["options"]), r["options"]) for r in options]
    assert len(options) == 60
    assert sum(choice is None for choice in read) <= 3
