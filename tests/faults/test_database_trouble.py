"""The database goes away or is locked mid-run: workers wait and retry, and lose nothing."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from support import PrivatePostgres, wait_for_run

from evalq.db.models import Episode, Run
from evalq.db.session import open_store
from faults.faultkit import Figure, checked, start_worker, submit

ENV = {"EVALQ_TEST_DELAY": "0.08"}


def _wait_stored(db_url: str, run_id: int, n: int) -> None:
    store = open_store(db_url)
    deadline = time.monotonic() + 120
    while True:
        with store.session() as s:
            stored = s.scalar(select(func.count()).where(Episode.run_id == run_id)) or 0
        if stored >= n:
            return
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_postgres_restart_mid_run(
    tmp_path: Path, redis_url: str, private_postgres: PrivatePostgres, figure: Figure
) -> None:
    """Restart Postgres (fast shutdown, 3 s down) while a worker writes episodes."""
    db_url = private_postgres.url
    worker = start_worker(db_url, redis_url, tmp_path / "w.log", env=ENV)
    try:
        worker.wait_ready()
        run_id = submit(db_url, redis_url, n=40, shard_size=4)
        _wait_stored(db_url, run_id, 16)
        private_postgres.restart(down_for=3.0)
        wait_for_run(db_url, run_id, [worker], timeout=180)
    finally:
        worker.stop()
    assert "database unavailable" in worker.log(), "the worker met the restart and retried"
    with open_store(db_url).session() as s:
        assert s.get(Run, run_id).status == "done"  # type: ignore[union-attr]
    checked(db_url, run_id, figure)


def test_sqlite_busy_second_writer(
    tmp_path: Path, redis_url: str, sqlite_url: str, figure: Figure
) -> None:
    """Another process holds SQLite's write lock for 3 s, three times, mid-run."""
    worker = start_worker(sqlite_url, redis_url, tmp_path / "w.log", env=ENV)
    held = 0
    try:
        worker.wait_ready()
        run_id = submit(sqlite_url, redis_url, n=40, shard_size=4)
        _wait_stored(sqlite_url, run_id, 8)
        path = make_url(sqlite_url).database
        assert path is not None
        for _ in range(3):
            with open_store(sqlite_url).session() as s:
                if s.get(Run, run_id).status == "done":  # type: ignore[union-attr]
                    break
            _hold_write_lock(path, 3.0)
            held += 1
        wait_for_run(sqlite_url, run_id, [worker], timeout=120)
    finally:
        worker.stop()
    assert held >= 1, "the lock was held while the run still had work to store"
    figure.notes.append(f"write lock held {held} times for 3 s while the run was going")
    checked(sqlite_url, run_id, figure)


def _hold_write_lock(path: str, seconds: float) -> None:
    """BEGIN IMMEDIATE from this (second) process: the write lock, held as another app would."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE runs SET name = name WHERE id = -1")
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()
