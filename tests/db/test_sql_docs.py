"""Every query in docs/sql.md runs on SQLite and Postgres and answers with rows.

The queries are read out of the document itself, so the docs and this test cannot drift.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from test_views import add_runs

from evalq.db.session import open_store

DOC = Path(__file__).parents[2] / "docs" / "sql.md"
# A ``### question`` heading, then (after any prose) its ```sql block.
QUERY = re.compile(r"^### (?P<title>.+?)\n(?:(?!^###).)*?```sql\n(?P<sql>.*?)```", re.M | re.S)


def documented_queries() -> list[tuple[str, str]]:
    return [(m["title"].strip(), m["sql"].strip()) for m in QUERY.finditer(DOC.read_text())]


QUERIES = documented_queries()
# What some answers must be on the sample runs (the newest is the 7B run, OUTCOMES in full).
EXPECTED: dict[str, list[tuple[object, ...]]] = {
    "Which questions did MDP get right and fixed top-3 get wrong?": [
        ("q1", "easy"),
        ("q2", "medium"),
        ("q5", "unknown"),
    ],
    "What is the paired 2x2 table behind McNemar's test (MDP against fixed top-3)?": [(1, 3, 1, 1)],
    "Which questions did no strategy answer correctly?": [("q4", "hard")],
}


def test_the_docs_hold_at_least_ten_queries() -> None:
    assert len(QUERIES) >= 10
    assert len(QUERIES) == DOC.read_text().count("```sql"), "a sql block without a ### heading"


@pytest.mark.parametrize(("title", "sql"), QUERIES, ids=[t for t, _ in QUERIES])
def test_documented_query_answers(db_url: str, title: str, sql: str) -> None:
    assert re.match(r"(SELECT|WITH)\b", sql), "documented queries only read"
    engine = open_store(db_url).engine
    try:
        with Session(engine) as session, session.begin():
            add_runs(session)
        with engine.connect() as conn:
            result = conn.execute(text(sql))
            columns, rows = list(result.keys()), result.all()
    finally:
        engine.dispose()
    assert columns
    assert rows, f"{title!r} returned no rows on the sample runs"
    if title in EXPECTED:
        width = len(EXPECTED[title][0])
        assert [tuple(row[:width]) for row in rows] == EXPECTED[title]
