"""``evalq generate``: JSON Lines in, outputs in input order out, ``--resume`` from the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner
from support import Worker

from evalq.cli.generate import generate
from evalq.cli.main import cli
from evalq.db.session import open_store

cli.add_command(generate)  # registered in evalq.cli.main by the lead; harmless twice


def _invoke(db_url: str, broker_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "--broker-url", broker_url, "generate", *args]
    )
    return result.exit_code, result.output


def test_generate_writes_outputs_in_order_and_resume_rebuilds_a_lost_queue(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    rows: list[dict[str, Any]] = [{"id": f"q{i}", "prompt": f"say {i}"} for i in range(40)]
    rows[3] = {"id": "chat", "messages": [{"role": "user", "content": "hello there"}]}
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps("bare prompt") + "\n")
    out = tmp_path / "out.jsonl"
    # Queued with no worker, then the broker loses every message: only the database knows.
    code, output = _invoke(
        sqlite_url, redis_url, str(src), "--model", "test/echo", "--chunk-size", "8", "--no-wait"
    )
    assert code == 0, output
    job_id = int(output.split()[2].rstrip(":"))
    redis.Redis.from_url(redis_url).flushall()

    open_store(sqlite_url)
    worker = Worker(
        sqlite_url, redis_url, tmp_path / "w.log", model="test/echo", engine="engines:echo_engine"
    )
    try:
        worker.wait_ready()
        code, output = _invoke(sqlite_url, redis_url, "--resume", str(job_id), "--out", str(out))
        assert code == 0, output
    finally:
        worker.stop()
    assert "6 unfinished chunk(s) re-enqueued" in output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["index"] for g in got] == list(range(41))
    assert [g.get("id") for g in got] == [r["id"] for r in rows] + [None]
    assert got[3]["output"] == "echo: hello there"
    assert got[7]["output"] == "echo: say 7"
    assert got[40]["output"] == "echo: bare prompt"


def test_bad_input_is_one_line_and_exit_2(sqlite_url: str, redis_url: str, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    code, output = _invoke(sqlite_url, redis_url, str(src), "--model", "m", "--out", "o.jsonl")
    assert (code, output.strip()) == (
        2,
        f"Error: {src}:2: expected a 'prompt' string or a 'messages' list",
    )
    src.write_text("not json\n")
    code, output = _invoke(sqlite_url, redis_url, str(src), "--model", "m", "--out", "o.jsonl")
    assert code == 2 and output.startswith(f"Error: {src}:1: not JSON"), output
    code, output = _invoke(sqlite_url, redis_url, "--resume", "99", "--out", "o.jsonl")
    assert (code, output.strip()) == (2, "Error: no generation job 99")
    code, output = _invoke(sqlite_url, redis_url, str(src), "--model", "m")
    assert code == 2 and "--out" in output
