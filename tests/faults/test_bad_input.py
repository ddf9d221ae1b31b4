"""Generated bad input: flags, dataset rows, corpus files, broker and database URLs.

Every case ends in one clear line (``Error: ...``, exit 2) or, for a dataset row, in an
invalid-row record; never a traceback, and the results already stored never change.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from engines import InstantEngine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from support import free_port

from evalq.cli.main import cli
from evalq.data.corpus import corpus_from_path
from evalq.data.registry import load_questions
from evalq.db.models import Episode, Run, Shard
from evalq.db.session import open_store
from evalq.errors import UserError
from evalq.rag.mdp_solver import MDPParams
from evalq.worker.shard import ShardExecutor
from faults.faultkit import Figure, evalq, submit

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "x" * 300_000,
        "\u202eevil\u202c",
        "👩\u200d👩\u200d👧",
        "e\u0301",
        "\ufeffbom",
        "\U0001d518\U0001d52b\U0001d526",  # Fraktur letters
        "line\nbreak",
        "'; DROP TABLE episodes; --",
        "%s %(x)s {0} \\",
    ]
)
JSONL_RUN = ("--model", "test/fuzz", "--strategy", "fixed:k=0")
# Text a database can store (NUL and lone surrogates are test_unstorable_characters' job).
TEXT = st.one_of(st.text(max_size=40), ODD_TEXT)


def _one_clear_line(result: Result) -> None:
    """Exit 0, or exit 2 with exactly one ``Error:`` line; never a traceback."""
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.output


def _run_shards_here(db_url: str, run_id: int) -> None:
    """Run every shard of a run in this process, on the instant engine, as a worker would."""
    store = open_store(db_url)
    with store.session() as s:
        ids = list(s.scalars(select(Shard.id).where(Shard.run_id == run_id)))
    executor = ShardExecutor(store, InstantEngine(), worker="fuzz@test", concurrency=8)
    for shard_id in ids:
        executor.run(shard_id)


def _snapshot(db_url: str) -> list[tuple[Any, ...]]:
    with open_store(db_url).session() as s:
        return [
            tuple(row)
            for row in s.execute(
                select(Episode.id, Episode.run_id, Episode.question_id, Episode.status).order_by(
                    Episode.id
                )
            )
        ]


@pytest.fixture
def stored(sqlite_url: str, redis_url: str) -> list[tuple[Any, ...]]:
    """A finished run already in the database: what bad input must never touch."""
    run_id = submit(sqlite_url, redis_url, n=6, shard_size=3)
    _run_shards_here(sqlite_url, run_id)
    return _snapshot(sqlite_url)


FLAGS = [
    "--n",
    "--seed",
    "--repeats",
    "--shard-size",
    "--strategy",
    "--dataset",
    "--difficulty",
    "--mdp-preset",
    "--mdp-set",
    "--max-tokens",
    "--temperature",
    "--k-step",
    "--max-steps",
    "--name",
    "--model",
    "--no-such-flag",
]
FLAG_VALUE = st.one_of(
    TEXT,
    st.integers(-(10**12), 10**12).map(str),
    st.sampled_from(["0", "-1", "nan", "inf", "1e309", "١٢", "fixed:k=-1", "fixed:k=", "mdp"]),
    st.sampled_from([f.name for f in MDPParams.__dataclass_fields__.values()]).flatmap(
        lambda key: st.sampled_from(["-1", "0", "nan", "1e12", "x", "0.5"]).map(
            lambda v: f"{key}={v}"
        )
    ),
    st.sampled_from(["hotpotqa", "oran-bench", "jsonl:", "jsonl:/nonexistent.jsonl"]),
)


def test_submit_flags(
    sqlite_url: str, redis_url: str, stored: list[tuple[Any, ...]], figure: Figure
) -> None:
    """Generated `evalq submit` flag sets: known and unknown flags, odd and extreme values."""
    cases = itertools.count()

    @FUZZ
    @given(st.lists(st.tuples(st.sampled_from(FLAGS), FLAG_VALUE), max_size=6), st.booleans())
    def case(flags: list[tuple[str, str]], with_required: bool) -> None:
        next(cases)
        argv = ["--database-url", sqlite_url, "--broker-url", redis_url, "submit"]
        if with_required:
            argv += ["--n", "2", "--model", "test/fuzz", "--strategy", "fixed:k=0"]
        argv += [part for pair in flags for part in pair]
        _one_clear_line(CliRunner().invoke(cli, argv))

    case()
    assert _snapshot(sqlite_url) == stored
    figure.trials += next(cases)
    figure.episodes += len(stored)


ROW = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(TEXT, st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
            "question": st.one_of(TEXT, st.integers(), st.none()),
            "answer": st.one_of(TEXT, st.integers(-3, 9), st.booleans(), st.none()),
            "options": st.one_of(st.lists(TEXT, max_size=5), st.lists(st.integers(), max_size=2)),
            "gold_passages": st.one_of(st.lists(TEXT, max_size=2), TEXT),
            "aliases": st.one_of(st.lists(TEXT, max_size=2), st.integers()),
            "difficulty": st.one_of(TEXT, st.integers()),
            "unexpected": TEXT,
        },
    ).map(lambda row: json.dumps(row)),
    TEXT.filter(lambda t: "\n" not in t and "\r" not in t),
    st.sampled_from(["[]", "null", "{", '"x"', "{}", "\x1e"]),
)


def test_dataset_rows(
    tmp_path: Path, sqlite_url: str, redis_url: str, stored: list[tuple[Any, ...]], figure: Figure
) -> None:
    """Generated JSON Lines rows: empty, missing fields, extra options, huge, odd Unicode."""
    files = itertools.count()
    checked_rows = [0]

    @FUZZ
    @given(st.lists(ROW, max_size=8))
    def case(rows: list[str]) -> None:
        path = tmp_path / f"rows{next(files)}.jsonl"
        path.write_text("\n".join(rows), encoding="utf-8")
        runner = CliRunner()
        base = ["--database-url", sqlite_url, "--broker-url", redis_url]
        try:
            questions = load_questions(f"jsonl:{path}", "all")
        except UserError:
            return
        result = runner.invoke(
            cli,
            [*base, "submit", "--dataset", f"jsonl:{path}", "--n", str(len(questions)), *JSONL_RUN],
        )
        _one_clear_line(result)
        if result.exit_code != 0:
            return
        run_id = int(result.output.split()[1].rstrip(":"))
        _run_shards_here(sqlite_url, run_id)
        with open_store(sqlite_url).session() as s:
            assert s.get(Run, run_id).status == "done"  # type: ignore[union-attr]
            episodes = list(s.scalars(select(Episode).where(Episode.run_id == run_id)))
        assert sorted(e.question_id for e in episodes) == sorted(q.id for q in questions)
        for e in episodes:
            assert e.status in ("ok", "invalid"), (e.status, e.error)
            if e.status == "invalid":
                assert e.error, "an invalid row says why"
        checked_rows[0] += len(episodes)

    case()
    assert _snapshot(sqlite_url)[: len(stored)] == stored
    figure.trials += next(files)
    figure.episodes += checked_rows[0]


@pytest.mark.parametrize("value", ["a\u0000b", "lone \ud800", "\udfff"])
def test_unstorable_characters(
    tmp_path: Path, db_url: str, redis_url: str, value: str, figure: Figure
) -> None:
    """A row whose id or text holds NUL or a lone surrogate is an invalid row, not a crash."""
    path = tmp_path / "rows.jsonl"
    rows = [
        {"id": "fine", "question": "What is one?", "answer": "1"},
        {"id": "q2", "question": value, "answer": "1"},
        {"id": value, "question": "Which id?", "answer": "1"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    base = ["--database-url", db_url, "--broker-url", redis_url]
    result = CliRunner().invoke(
        cli,
        [*base, "submit", "--dataset", f"jsonl:{path}", "--n", "3", *JSONL_RUN],
    )
    _one_clear_line(result)
    run_id = int(result.output.split()[1].rstrip(":"))
    _run_shards_here(db_url, run_id)
    with open_store(db_url).session() as s:
        statuses = sorted(e.status for e in s.scalars(select(Episode)))
    assert statuses == ["invalid", "invalid", "ok"]
    figure.trials += 1
    figure.episodes += 3


CORPUS_BYTES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(max_size=200).map(lambda t: t.encode("utf-16")),
    st.sampled_from([b"", b"\n\n  \n", b"\x00", b"\xff\xfe", b"word " * 200_000, b"\xef\xbb\xbf"]),
    st.lists(ROW, max_size=4).map(lambda rows: "\n".join(rows).encode("utf-8", "surrogatepass")),
)


def test_corpus_files(tmp_path: Path, figure: Figure) -> None:
    """Generated corpus files: binary, empty, huge, any encoding, malformed JSON Lines."""
    files = itertools.count()

    @FUZZ
    @given(CORPUS_BYTES, st.sampled_from([".txt", ".md", ".jsonl"]))
    def case(data: bytes, suffix: str) -> None:
        path = tmp_path / f"doc{next(files)}{suffix}"
        path.write_bytes(data)
        try:
            corpus = corpus_from_path("fuzz", path)
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        assert len(corpus) > 0
        assert all(p.text.strip() for p in corpus)

    case()
    figure.trials += next(files)


SECRET = "Pw7-zq9-secret"
HOSTS = st.sampled_from(["127.0.0.1", "localhost", "[::1]"])
# Never a port something listens on: an empty or zero port means the default (6379, 5432).
PORTS = st.sampled_from([70000, -1, "x", "1e3"])


def _url(scheme: str, host: str, port: int | str | None, path: str, user: str) -> str:
    at = f"{user}:{SECRET}@" if user else ""
    colon = "" if port is None else f":{port}"
    return f"{scheme}{at}{host}{colon}{path}"


def test_broker_and_database_urls(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_url: str,
    redis_url: str,
    stored: list[tuple[Any, ...]],
    figure: Figure,
) -> None:
    """Generated broker and database URLs, with a password: a clear line, never the password."""
    monkeypatch.chdir(tmp_path)  # relative SQLite paths land here
    closed = free_port()
    cases = itertools.count()
    broker_urls = st.builds(
        _url,
        st.sampled_from(["redis://", "rediss://", "amqp://", "http://", "", "redis:/", "::"]),
        HOSTS,
        st.one_of(PORTS, st.just(closed)),
        st.sampled_from(["/0", "/99", "/x", "", "/0?ssl_cert_reqs=none"]),
        st.sampled_from(["", "user", "u%20"]),
    )
    db_urls = st.builds(
        _url,
        st.sampled_from(["postgresql://", "mysql://", "sqlite://", "sqlite:///", "", "x://"]),
        HOSTS,
        st.one_of(PORTS, st.just(closed)),
        st.sampled_from(["/db", "", "/", "/a b"]),
        st.sampled_from(["", "postgres", "u@x"]),
    )

    @settings(FUZZ, max_examples=25)
    @given(broker_urls, db_urls, st.booleans())
    def case(broker: str, database: str, bad_database: bool) -> None:
        next(cases)
        argv = [
            "--database-url",
            database if bad_database else sqlite_url,
            "--broker-url",
            redis_url if bad_database else broker,
        ]
        # In a SQLite URL everything after sqlite:/// is a file path, never a password.
        path_only = bad_database and database.startswith("sqlite")
        for command in (["status"], ["resume", "1"], ["submit", "--n", "1", "--model", "t/x"]):
            result = CliRunner().invoke(cli, argv + command)
            _one_clear_line(result)
            assert path_only or SECRET not in result.output

    case()
    assert _snapshot(sqlite_url) == stored
    figure.trials += next(cases)
    evalq(sqlite_url, redis_url, "status")
