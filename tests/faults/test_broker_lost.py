"""Redis restarted empty in the middle of a run: the database rebuilds the lost queue.

The broker only carries work. When it loses its queues, ``evalq resume RUN`` re-enqueues
every shard the database says is unfinished; a worker that starts against a broker that
lost its queues does the same by itself (reconcile on start).
"""

from __future__ import annotations

import time
from pathlib import Path

import redis
from sqlalchemy import func, select
from support import RedisServer, Worker, wait_for_run

from evalq.broker import queue_for
from evalq.db.models import Shard
from evalq.db.session import open_store
from faults.faultkit import MODEL, Figure, checked, evalq, start_worker, submit

ENV = {"EVALQ_TEST_DELAY": "0.08"}


def _wait_shards_done(db_url: str, run_id: int, n: int, worker: Worker) -> None:
    store = open_store(db_url)
    deadline = time.monotonic() + 120
    while True:
        with store.session() as s:
            done = s.scalar(
                select(func.count()).where(Shard.run_id == run_id, Shard.status == "done")
            )
        if (done or 0) >= n:
            return
        assert worker.proc.poll() is None, worker.log()[-3000:]
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.1)


def _restart_empty(server: RedisServer) -> None:
    server.stop()
    server.start()
    client = redis.Redis.from_url(server.url)
    assert client.dbsize() == 0, "the restarted broker holds nothing"


def test_resume_after_broker_lost(
    tmp_path: Path, redis_server: RedisServer, sqlite_url: str, figure: Figure
) -> None:
    """Stop Redis mid-run, start it empty, `evalq resume RUN` (SQLite)."""
    redis_server.flush()
    url = redis_server.url
    worker = start_worker(sqlite_url, url, tmp_path / "w.log", env=ENV)
    try:
        worker.wait_ready()
        run_id = submit(sqlite_url, url, n=40, shard_size=4)
        _wait_shards_done(sqlite_url, run_id, 2, worker)
        _restart_empty(redis_server)
        # Nothing left to serve: the run cannot finish until the queue is rebuilt.
        out = evalq(sqlite_url, url, "resume", str(run_id))
        assert "unfinished shards re-enqueued" in out
        assert int(out.split()[2]) > 0
        wait_for_run(sqlite_url, run_id, [worker], timeout=120)
    finally:
        worker.stop()
    checked(sqlite_url, run_id, figure)


def test_worker_start_reconciles_lost_broker(
    tmp_path: Path, redis_server: RedisServer, postgres_url: str, figure: Figure
) -> None:
    """Stop Redis and the worker mid-run, start both: the new worker re-enqueues (Postgres)."""
    redis_server.flush()
    url = redis_server.url
    first = start_worker(postgres_url, url, tmp_path / "w1.log", env=ENV)
    try:
        first.wait_ready()
        run_id = submit(postgres_url, url, n=40, shard_size=4)
        _wait_shards_done(postgres_url, run_id, 2, first)
    finally:
        first.kill()
    _restart_empty(redis_server)
    # A different node: it has no shard of its own left running, only the lost broker.
    second = start_worker(postgres_url, url, tmp_path / "w2.log", env=ENV, name="other@test")
    try:
        second.wait_ready()
        wait_for_run(postgres_url, run_id, [second], timeout=120)
    finally:
        second.stop()
    assert "the broker lost its queues" in second.log()
    checked(postgres_url, run_id, figure)
    assert redis.Redis.from_url(url).exists("evalq:broker-mark:" + queue_for(MODEL))
