"""Cancel stops a run at the next episode; resume finishes it without redoing anything."""

from __future__ import annotations

import ast
import time
from pathlib import Path

from sqlalchemy import func, select
from support import Worker, wait_for_run

from evalq.db.models import Episode, Run, Shard
from evalq.db.session import open_store
from faults.faultkit import Figure, checked, evalq, start_worker, submit

ENV = {"EVALQ_TEST_DELAY": "0.08"}


def _until(condition: object, worker: Worker, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert worker.proc.poll() is None, worker.log()[-3000:]
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.1)


def test_cancel_then_resume(tmp_path: Path, redis_url: str, db_url: str, figure: Figure) -> None:
    """`evalq cancel` mid-run, then `evalq resume`: stored episodes are kept, not redone."""
    store = open_store(db_url)
    worker = start_worker(db_url, redis_url, tmp_path / "w.log", env=ENV)
    try:
        worker.wait_ready()
        run_id = submit(db_url, redis_url, n=40, shard_size=4)

        def shards(status: str) -> int:
            with store.session() as s:
                q = select(func.count()).where(Shard.run_id == run_id, Shard.status == status)
                return int(s.scalar(q) or 0)

        _until(lambda: shards("done") >= 2, worker)
        evalq(db_url, redis_url, "cancel", str(run_id))
        # The shard in progress stops at its next check; the queued ones are skipped.
        _until(lambda: shards("running") == 0 and shards("queued") == 0, worker)
        with store.session() as s:
            assert s.get(Run, run_id).status == "cancelled"  # type: ignore[union-attr]
            before = {
                (e.question_id, e.strategy, e.repeat): (e.id, e.finished_at)
                for e in s.scalars(select(Episode).where(Episode.run_id == run_id))
            }
        assert shards("cancelled") > 0, "the cancel took effect before the run was done"
        assert 0 < len(before) < 80
        status = evalq(db_url, redis_url, "status", str(run_id))
        assert "cancelled" in status

        out = evalq(db_url, redis_url, "resume", str(run_id))
        assert f"run {run_id}: " in out
        wait_for_run(db_url, run_id, [worker], timeout=120)
    finally:
        worker.stop()
    checked(db_url, run_id, figure)
    with store.session() as s:
        after = {
            (e.question_id, e.strategy, e.repeat): (e.id, e.finished_at)
            for e in s.scalars(select(Episode).where(Episode.run_id == run_id))
        }
    assert {k: after[k] for k in before} == before, "episodes stored before are untouched"
    # Each delivery logs what it stored and skipped: every episode was stored exactly once.
    outcomes = [
        ast.literal_eval(line.split("s: ", 1)[1])
        for line in worker.log().splitlines()
        if "succeeded in" in line
    ]
    assert sum(o["stored"] for o in outcomes) == 80
    figure.notes.append(
        f"{len(before)} of 80 episodes stored before the cancel; none redone after resume"
    )
