"""Replies recorded from a real model are read: few are left unparsed.

Reads tests/fixtures/real_generations/*.jsonl when it exists (one recorded reply a line,
with "dataset", "question_id", "prompt_kind", "gold", "aliases", "options", "generated").
"""

import json
from pathlib import Path
from typing import Any

import pytest

from evalq.rag.scoring import extract_short_answer, parse_option

FIXTURES = Path(__file__).parent.parent / "fixtures" / "real_generations"
# Blank replies have nothing to read and are left out; of the rest, at most this share unread.
MAX_UNPARSED_SHARE = 0.10


def _records() -> list[dict[str, Any]]:
    files = sorted(FIXTURES.glob("*.jsonl")) if FIXTURES.is_dir() else []
    return [
        json.loads(line)
        for file in files
        for line in file.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def _parsed(record: dict[str, Any]) -> bool:
    generated = str(record["generated"])
    options = record.get("options")
    if options:
        return parse_option(generated, len(options), options) is not None
    return extract_short_answer(generated) != ""


def test_unparsed_share_of_real_replies_stays_small() -> None:
    records = [r for r in _records() if str(r.get("generated") or "").strip()]
    if not records:
        pytest.skip("no recorded generations in tests/fixtures/real_generations")
    unparsed = [r for r in records if not _parsed(r)]
    share = len(unparsed) / len(records)
    examples = [(r["dataset"], r["question_id"], r["generated"][:80]) for r in unparsed[:5]]
    assert share <= MAX_UNPARSED_SHARE, f"{share:.1%} unparsed, e.g. {examples}"
