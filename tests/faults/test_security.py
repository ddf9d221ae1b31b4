"""JSON-only tasks, masked passwords, password-protected Redis, SQL through bound parameters."""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.engine import make_url
from support import RedisServer, free_port, wait_for_run

from evalq.broker import RUN_SHARD, make_app, queue_for
from evalq.cli.main import cli
from evalq.config import Settings
from evalq.db.models import Run, Shard
from evalq.db.session import open_store
from faults.faultkit import MODEL, Figure, checked, evalq, start_worker, submit

REDIS_SECRET = "redis-Secret-4x9"
# Characters a URL must percent-encode: the store still opens (migrations included).
PG_SECRET = "pg-Secret@7k2%/"
EVALQ = Path(__file__).resolve().parents[2] / "evalq"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis that answers only with its password."""
    server = RedisServer(tmp_path, password=REDIS_SECRET)
    server.start()
    yield server
    server.stop()


def test_password_protected_redis_and_masked_passwords(
    tmp_path: Path, locked_redis: RedisServer, postgres_url: str, figure: Figure
) -> None:
    """Redis with requirepass, Postgres URL with a password: a run; no output shows either."""
    db_url = make_url(postgres_url).set(password=PG_SECRET).render_as_string(hide_password=False)
    broker = locked_redis.url
    worker = start_worker(db_url, broker, tmp_path / "w.log")
    outputs: list[str] = []
    try:
        worker.wait_ready()
        run_id = submit(db_url, broker, n=8, shard_size=4)
        wait_for_run(db_url, run_id, [worker], timeout=120)
        for command in (["status", str(run_id)], ["results", str(run_id)], ["resume", "999"]):
            result = CliRunner().invoke(
                cli, ["-v", "--database-url", db_url, "--broker-url", broker, *command]
            )
            outputs.append(result.output)
    finally:
        worker.stop()
    checked(db_url, run_id, figure)
    # Wrong password, unreachable broker, unreachable database: the messages name no secret.
    wrong = broker.replace(REDIS_SECRET, REDIS_SECRET + "-wrong")
    closed_pg = make_url(db_url).set(port=free_port()).render_as_string(hide_password=False)
    for database, broker_url in ((db_url, wrong), (closed_pg, broker)):
        result = CliRunner().invoke(
            cli, ["--database-url", database, "--broker-url", broker_url, "resume", "1"]
        )
        assert result.exit_code == 2 and result.output.startswith("Error: "), result.output
        outputs.append(result.output)
    log = worker.log()
    assert "redis://:**@127.0.0.1" in log, "the worker does name its broker, masked"
    encoded = make_url(db_url).render_as_string(hide_password=False).split(":")[2].split("@")[0]
    assert encoded != PG_SECRET
    for text in [*outputs, log]:
        assert REDIS_SECRET not in text
        assert PG_SECRET not in text and encoded not in text


def test_pickled_task_is_refused(
    tmp_path: Path, redis_url: str, sqlite_url: str, figure: Figure
) -> None:
    """A task message serialised with pickle is refused unread; the same task as JSON runs."""
    worker = start_worker(sqlite_url, redis_url, tmp_path / "w.log")
    try:
        worker.wait_ready()
        run_id = submit(sqlite_url, redis_url, n=4, shard_size=4)
        wait_for_run(sqlite_url, run_id, [worker], timeout=60)
        store = open_store(sqlite_url)
        with store.session() as s:
            shard = s.scalars(select(Shard).where(Shard.run_id == run_id)).one()
            shard.status = "queued"  # as if it had never run: a pickle must not run it
            s.get(Run, run_id).status = "running"  # type: ignore[union-attr]
            shard_id, attempts = shard.id, shard.attempts
        app = make_app(Settings(database_url=sqlite_url, broker_url=redis_url))
        app.send_task(RUN_SHARD, args=[shard_id], queue=queue_for(MODEL), serializer="pickle")
        deadline = time.monotonic() + 60
        while "untrusted content" not in worker.log():
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)
        with store.session() as s:
            assert s.get(Shard, shard_id).attempts == attempts  # type: ignore[union-attr]
        app.send_task(RUN_SHARD, args=[shard_id], queue=queue_for(MODEL))
        wait_for_run(sqlite_url, run_id, [worker], timeout=60)
    finally:
        worker.stop()
    checked(sqlite_url, run_id, figure)
    assert "pickle" in worker.log()


HOSTILE = ["x'; DROP TABLE episodes; --", 'a"b', "%(run_id)s", "1 OR 1=1", "\\'; --"]


def test_hostile_strings_stored_verbatim(
    tmp_path: Path, redis_url: str, db_url: str, figure: Figure
) -> None:
    """SQL-looking run names and question ids go in and come back as data, tables intact."""
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "\n".join(json.dumps({"id": text, "question": text, "answer": "1"}) for text in HOSTILE),
        encoding="utf-8",
    )
    run_ids = []
    for name in HOSTILE:
        out = evalq(
            db_url,
            redis_url,
            "submit",
            "--dataset",
            f"jsonl:{path}",
            "--n",
            str(len(HOSTILE)),
            "--name",
            name,
            "--model",
            MODEL,
            "--strategy",
            "fixed:k=0",
        )
        run_ids.append(int(out.split()[1].rstrip(":")))
    with open_store(db_url).session() as s:
        names = [s.get(Run, r).name for r in run_ids]  # type: ignore[union-attr]
        shard = s.scalars(select(Shard).where(Shard.run_id == run_ids[0])).one()
        ids = sorted(str(q) for q in shard.question_ids)
    assert names == HOSTILE
    assert ids == sorted(HOSTILE)
    figure.trials += len(HOSTILE)


def test_sql_only_through_bound_parameters() -> None:
    """No SQL text is built from values anywhere in evalq (migrations' fixed DDL aside)."""
    offenders = []
    for path in sorted(EVALQ.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("text", "exec_driver_sql", "execute", "executescript"):
                first = node.args[0]
                if isinstance(first, ast.JoinedStr | ast.BinOp) or (
                    isinstance(first, ast.Call)
                    and isinstance(first.func, ast.Attribute)
                    and first.func.attr == "format"
                ):
                    offenders.append(f"{path.relative_to(EVALQ.parent)}:{node.lineno}")
    assert offenders == []
