"""``evalq submit --until-decided``: a large effect stops the run early, resume extends it.

A real worker on the passage engine (it answers only from gold passages in its prompt), so
fixed:k=3 beats closed book (fixed:k=0) by a wide margin on HotpotQA.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select
from support import RedisServer, Worker, check_run, wait_for_run

from evalq.cli.main import cli
from evalq.db.models import Episode, Run, Shard
from evalq.db.session import open_store

MODEL = "test/decide"
N, SHARD_SIZE = 120, 3


def _evalq(db_url: str, broker_url: str, *args: str) -> str:
    result = CliRunner().invoke(
        cli,
        ["--database-url", db_url, "--broker-url", broker_url, *args],
        env={"COLUMNS": "250"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_until_decided_stops_early_then_resume_extends(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Stopped with shards cancelled and the reason stored; nothing lost; resume finishes it."""
    redis_server.flush()
    db_url, broker_url = f"sqlite:///{tmp_path / 'evalq.db'}", redis_server.url
    worker = Worker(
        db_url,
        broker_url,
        tmp_path / "worker.log",
        model=MODEL,
        engine="engines:passage_engine",
        args=("--shards-in-flight", "1"),
    )
    store = open_store(db_url)
    try:
        worker.wait_ready(timeout=180)
        out = _evalq(
            db_url,
            broker_url,
            "submit",
            "--dataset",
            "hotpotqa",
            "--n",
            str(N),
            "--model",
            MODEL,
            "--strategy",
            "fixed:k=3",
            "--strategy",
            "fixed:k=0",
            "--shard-size",
            str(SHARD_SIZE),
            "--until-decided",
            "--a",
            "fixed:k=3",
            "--b",
            "fixed:k=0",
        )
        match = re.match(r"run (\d+):", out)
        assert match, out
        run_id = int(match.group(1))
        wait_for_run(db_url, run_id, [worker], timeout=240, until=("cancelled", "done"))
        # The shard in hand finishes or stops; then no shard is running.
        wait_for_run(db_url, run_id, [worker], timeout=60, until=("cancelled",))
        with store.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            decision = run.config["decision"]
            counts = dict(
                s.execute(
                    select(Shard.status, func.count())
                    .where(Shard.run_id == run_id)
                    .group_by(Shard.status)
                ).all()
            )
            stored = s.scalar(select(func.count()).where(Episode.run_id == run_id))
        assert decision["reason"] == "a_better", decision
        assert decision["low"] > 0
        assert decision["questions"] < N / 2, decision
        assert counts.get("cancelled", 0) > 0, counts
        assert stored is not None and stored < 2 * N
        status = _evalq(db_url, broker_url, "status", str(run_id))
        assert "stopped: a_better at" in status, status
        compared = json.loads(
            _evalq(
                db_url,
                broker_url,
                "compare",
                str(run_id),
                "--a",
                "fixed:k=3",
                "--b",
                "fixed:k=0",
                "--format",
                "json",
                "--method",
                "percentile",
                "--resamples",
                "200",
            )
        )
        assert compared["until_decided"]["stopped"]["reason"] == "a_better"

        _evalq(db_url, broker_url, "resume", str(run_id))
        wait_for_run(db_url, run_id, [worker], timeout=240)
    finally:
        worker.stop()
    check = check_run(db_url, run_id)
    assert (check.lost, check.duplicated, check.steps_mismatched) == (0, 0, 0), check
    assert check.stored == check.expected == 2 * N
    with store.session() as s:
        run = s.get(Run, run_id)
        assert run is not None and run.status == "done"
        assert run.config["decision"] == decision, "resume keeps the decision on record"
