"""SIGKILL workers at random moments; every run still ends with exactly its episodes.

A chain of real workers under one node name serves one run per trial. Each trial kills
the worker that is running it at a random moment of a random kind, then starts a new one:

- mid-shard: a random time after a shard was claimed;
- database write: inside the transaction that stores a flush of episodes, after a random
  number of its inserts (the fault engine blocks there until the kill);
- engine start: as ``mid-shard``, and the replacement worker is killed too while it is
  still starting, before it consumes anything.

The new worker re-enqueues the shard its node left running (reconcile on start); the
visibility timeout covers a kill between a message's delivery and the claim.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from support import Worker, episode_count, wait_for_run

from evalq.db.models import Run, Shard
from evalq.db.session import Store, open_store
from faults.faultkit import Figure, checked, start_worker, submit

KINDS = ("mid-shard", "database write", "engine start")


def _kill_trials(
    db_url: str, broker_url: str, tmp_path: Path, fault_dir: Path, fig: Figure, trials: int
) -> None:
    rng = random.Random(7)
    env = {"EVALQ_TEST_FAULT_DIR": str(fault_dir), "EVALQ_TEST_DELAY": "0.08"}
    logs = iter(tmp_path / f"w{i}.log" for i in range(1000))
    store = open_store(db_url)
    worker = start_worker(db_url, broker_url, next(logs), env=env)
    landed: dict[str, int] = dict.fromkeys(KINDS, 0)
    try:
        worker.wait_ready()
        for trial in range(trials):
            kind = KINDS[trial % len(KINDS)] if trial < len(KINDS) else rng.choice(KINDS)
            if kind == "database write":
                (fault_dir / "arm-write").write_text(str(rng.randint(2, 12)))
            # 4 shards of 6 questions x 2 repeats: 48 episodes, a few seconds of work.
            run_id = submit(db_url, broker_url, n=24, shard_size=6, seed=trial)
            if kind == "database write":
                _wait(lambda: (fault_dir / "in-write").exists(), worker)
                (fault_dir / "in-write").unlink()
            else:
                _wait(functools.partial(_claimed, store, run_id), worker)
                time.sleep(rng.uniform(0.0, 2.5))
            worker.kill()
            if _status(store, run_id) != "done":
                landed["database write" if kind == "database write" else "mid-shard"] += 1
            worker = start_worker(db_url, broker_url, next(logs), env=env)
            if kind == "engine start":
                time.sleep(rng.uniform(0.2, 3.0))
                if " ready." not in worker.log():
                    landed["engine start"] += 1  # a second kill, during start
                worker.kill()
                worker = start_worker(db_url, broker_url, next(logs), env=env)
            worker.wait_ready()
            wait_for_run(db_url, run_id, [worker], timeout=120)
            check = checked(db_url, run_id, fig)
            assert episode_count(db_url, run_id) == check.expected
    finally:
        worker.stop()
    fig.notes.append(
        "kills that landed before the run was done: "
        + ", ".join(f"{kind} {n}" for kind, n in landed.items())
    )
    assert landed["database write"] >= 1, "a kill must land inside a database write"
    assert landed["mid-shard"] >= 1, "a kill must land in the middle of a shard"


def _claimed(store: Store, run_id: int) -> bool:
    with store.session() as s:
        first = s.scalar(select(Shard.id).where(Shard.run_id == run_id, Shard.attempts > 0))
        return first is not None


def _status(store: Store, run_id: int) -> str:
    with store.session() as s:
        return s.scalars(select(Run.status).where(Run.id == run_id)).one()


def _wait(condition: Callable[[], bool], worker: Worker, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.proc.poll() is None, worker.log()[-3000:]
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.05)


def test_sigkill_sqlite(tmp_path: Path, redis_url: str, fault_dir: Path, figure: Figure) -> None:
    """SIGKILL the worker mid-shard, inside a write, during engine start (SQLite)."""
    _kill_trials(f"sqlite:///{tmp_path / 'evalq.db'}", redis_url, tmp_path, fault_dir, figure, 12)


def test_sigkill_postgres(
    tmp_path: Path, redis_url: str, postgres_url: str, fault_dir: Path, figure: Figure
) -> None:
    """SIGKILL the worker mid-shard, inside a write, during engine start (Postgres)."""
    _kill_trials(postgres_url, redis_url, tmp_path, fault_dir, figure, 8)
