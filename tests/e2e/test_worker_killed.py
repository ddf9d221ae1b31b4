"""SIGKILL a vLLM worker in the middle of a shard; a new worker finishes the run exactly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from support import TINY, RedisServer, Worker, episode_count, wait_for_run

from evalq.cli.main import cli
from evalq.db.models import Episode, Shard
from evalq.db.session import open_store

pytestmark = pytest.mark.slow

# Short enough that the killed worker's unacknowledged shard comes back within the test,
# longer than any shard here takes (production keeps hours).
VISIBILITY = {"EVALQ_VISIBILITY_TIMEOUT": "20"}


def test_killed_worker_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    db_url = f"sqlite:///{tmp_path / 'evalq.db'}"
    # One shard at a time, one episode at a time and long fixed outputs, so a shard outlasts
    # the 2 s episode flush and the kill, which follows the first flush, lands inside a shard.
    # With several shards or episodes at once a fast machine stored all 60 episodes, or a
    # whole shard, before the test saw the first four.
    args = ("--shards-in-flight", "1", "--concurrency", "1")
    first = Worker(db_url, redis_server.url, tmp_path / "w1.log", args=args, env=VISIBILITY)
    first.wait_ready()
    result = CliRunner().invoke(
        cli,
        [
            "--database-url",
            db_url,
            "--broker-url",
            redis_server.url,
            "submit",
            "--dataset",
            "hotpotqa",
            "--n",
            "30",
            "--model",
            TINY,
            "--strategy",
            "fixed:k=0",
            "--strategy",
            "fixed:k=2",
            "--shard-size",
            "15",
            "--max-tokens",
            "96",
            "--ignore-eos",
        ],
    )
    assert result.exit_code == 0, result.output
    run_id = int(result.output.split()[1].rstrip(":"))

    deadline = time.monotonic() + 300
    while episode_count(db_url, run_id) < 4:
        assert time.monotonic() < deadline, first.log()[-2000:]
        time.sleep(0.2)
    first.kill()
    stored_at_kill = episode_count(db_url, run_id)
    assert 0 < stored_at_kill < 60, "the kill must land in the middle of the run"

    second = Worker(db_url, redis_server.url, tmp_path / "w2.log", args=args, env=VISIBILITY)
    try:
        second.wait_ready()
        wait_for_run(db_url, run_id, [second], timeout=400)
    finally:
        second.stop()

    with open_store(db_url).session() as s:
        keys = list(
            s.execute(
                select(Episode.question_id, Episode.strategy, Episode.repeat).where(
                    Episode.run_id == run_id
                )
            )
        )
        attempts = list(s.scalars(select(func.max(Shard.attempts)).where(Shard.run_id == run_id)))
    assert len(keys) == 60, "every expected episode is there"
    assert len(set(keys)) == 60, "and none twice"
    assert attempts[0] >= 2, "the killed shard was delivered again"
