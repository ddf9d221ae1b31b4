"""Poison work: an episode that raises, and a shard that kills its worker every time."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select
from support import Worker, check_run, wait_for_run

from evalq.data.registry import load_questions
from evalq.db.models import Episode, Run, Shard
from evalq.db.queries import DEFAULT_MAX_DELIVERIES
from evalq.db.session import open_store
from evalq.scheduler.submit import sample_questions
from faults.faultkit import Figure, checked, evalq, start_worker, submit

N, SEED = 24, 3


def _poison_text() -> tuple[str, str]:
    """(id, text) of a question the run below samples."""
    q = sample_questions(load_questions("hotpotqa", "all"), N, SEED)[N // 2]
    return q.id, q.text


def test_episode_that_raises_is_an_error_row(
    tmp_path: Path, redis_url: str, db_url: str, figure: Figure
) -> None:
    """The engine hands one question's episodes a malformed generation, so they raise."""
    qid, text = _poison_text()
    env = {"EVALQ_TEST_GARBAGE_ON": text}
    worker = start_worker(db_url, redis_url, tmp_path / "w.log", env=env)
    try:
        worker.wait_ready()
        run_id = submit(db_url, redis_url, n=N, shard_size=6, seed=SEED)
        wait_for_run(db_url, run_id, [worker], timeout=120)
    finally:
        worker.stop()
    checked(db_url, run_id, figure)
    with open_store(db_url).session() as s:
        rows = list(s.execute(select(Episode.question_id, Episode.status, Episode.error)))
    errors = [(q, e) for q, status, e in rows if status == "error"]
    assert [q for q, _ in errors] == [qid, qid], "both repeats of that question, only them"
    assert all(e and "Error" in e for _, e in errors), errors
    assert sum(status == "ok" for _, status, _ in rows) == len(rows) - 2
    out = evalq(db_url, redis_url, "status", str(run_id))
    assert f"2 episodes failed: {errors[0][1]}" in out
    assert "done" in out


def test_shard_that_kills_its_worker_fails_after_n_deliveries(
    tmp_path: Path, redis_url: str, sqlite_url: str, figure: Figure
) -> None:
    """The engine os._exit()s on one question: its shard kills every worker that runs it."""
    _, text = _poison_text()
    env = {"EVALQ_TEST_EXIT_ON": text}
    db_url = sqlite_url
    store = open_store(db_url)
    workers: list[Worker] = []

    def settled() -> bool:
        with store.session() as s:
            return s.scalars(select(Run.status)).one() == "done_with_failures"

    run_id = submit(db_url, redis_url, n=N, shard_size=6, seed=SEED)
    deadline = time.monotonic() + 240
    try:
        # A supervisor's job: whenever the worker is gone, start another under the same name.
        while not settled():
            assert time.monotonic() < deadline, workers[-1].log()[-3000:]
            if not workers or workers[-1].proc.poll() is not None:
                log = tmp_path / f"w{len(workers)}.log"
                workers.append(start_worker(db_url, redis_url, log, env=env))
            time.sleep(0.2)
    finally:
        for w in workers:
            w.stop()
    deaths = sum(w.proc.returncode == 3 for w in workers)
    with store.session() as s:
        shards = list(s.scalars(select(Shard).where(Shard.run_id == run_id).order_by(Shard.index)))
    failed = [sh for sh in shards if sh.status == "failed"]
    assert len(failed) == 1, [(sh.index, sh.status) for sh in shards]
    assert all(sh.status == "done" for sh in shards if sh is not failed[0])
    assert failed[0].attempts == DEFAULT_MAX_DELIVERIES
    assert deaths == DEFAULT_MAX_DELIVERIES
    assert failed[0].error and "given up after 3 deliveries" in failed[0].error
    # Every episode of every other shard is there once; the failed shard's are not run.
    check = check_run(db_url, run_id)
    with store.session() as s:
        in_failed = len(s.scalars(select(Episode.id).where(Episode.shard_id == failed[0].id)).all())
    unrun = len(failed[0].question_ids) * 2 - in_failed
    assert check.duplicated == 0 and check.steps_mismatched == 0
    assert check.lost == unrun, "nothing is missing but the failed shard's episodes"
    figure.trials += 1
    figure.episodes += check.expected - unrun
    figure.duplicated += check.duplicated
    figure.notes.append(f"workers killed by the poison shard: {deaths}; rest of run complete")
    out = evalq(db_url, redis_url, "status", str(run_id))
    assert "done_with_failures" in out
    assert f"shard {failed[0].index} failed after 3 deliveries: given up" in out
