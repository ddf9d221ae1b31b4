"""Episodes are written once each, with their steps, on SQLite and Postgres alike."""

from __future__ import annotations

from sqlalchemy import func, select
from support import one_shard_run

from evalq.db import queries
from evalq.db.models import Episode, Step
from evalq.db.session import open_store
from evalq.rag.episode import EpisodeResult, StepRecord


def result(qid: str, steps: int = 2) -> EpisodeResult:
    """A finished episode of ``fixed:k=0`` with ``steps`` steps."""
    r = EpisodeResult(qid, "fixed:k=0", 0, status="ok", question=f"q {qid}", gold="1")
    r.answer, r.correct, r.parsed, r.f1 = "1", True, True, 1.0
    r.passage_ids = [f"p-{qid}"]
    r.steps = [
        StepRecord("reason", u_before=0.1 * i, text=f"{qid}/{i}", scores=[0.5])
        for i in range(steps)
    ]
    return r


def test_each_episode_and_its_steps_are_stored_once(db_url: str) -> None:
    store = open_store(db_url)
    run_id, shard_id = one_shard_run(db_url, ["fixed:k=0"], [f"q{i}" for i in range(6)])

    first = [result(f"q{i}") for i in range(4)]
    with store.session() as s:
        assert queries.write_episodes(s, run_id, shard_id, first, "w1") == 4
    # A redelivery overlaps what is stored: only the new keys are written, steps included.
    again = [result(f"q{i}", steps=5) for i in range(2, 6)]
    with store.session() as s:
        assert queries.write_episodes(s, run_id, shard_id, again, "w2") == 2
        assert queries.write_episodes(s, run_id, shard_id, again[:1], "w2") == 0
        assert queries.write_episodes(s, run_id, shard_id, [], "w2") == 0

    with store.session() as s:
        assert queries.stored_keys(s, run_id, [f"q{i}" for i in range(6)]) == {
            (f"q{i}", "fixed:k=0", 0) for i in range(6)
        }
        workers = dict(s.execute(select(Episode.question_id, Episode.worker)).all())
        assert workers == {"q0": "w1", "q1": "w1", "q2": "w1", "q3": "w1", "q4": "w2", "q5": "w2"}
        steps = dict(
            s.execute(
                select(Episode.question_id, func.count(Step.id))
                .join(Step, Step.episode_id == Episode.id)
                .group_by(Episode.question_id)
            ).all()
        )
        assert steps == {"q0": 2, "q1": 2, "q2": 2, "q3": 2, "q4": 5, "q5": 5}
        q4 = s.scalars(select(Episode).where(Episode.question_id == "q4")).one()
        assert (q4.steps, q4.passage_ids, q4.f1, q4.finished_at is not None) == (
            5,
            ["p-q4"],
            1.0,
            True,
        )
        texts = s.scalars(
            select(Step.text).where(Step.episode_id == q4.id).order_by(Step.index)
        ).all()
        assert texts == [f"q4/{i}" for i in range(5)]


def test_a_flush_mixing_int_and_float_costs_and_null_columns_is_stored(db_url: str) -> None:
    # One flush of episodes as strategies produce them: a cost of 0 (int) beside 0.5, no
    # error anywhere, an episode with no F1 and one whose step has no scores.
    store = open_store(db_url)
    run_id, shard_id = one_shard_run(db_url, ["fixed:k=0"], ["a", "b"])
    a, b = result("a"), result("b", steps=1)
    a.cost, b.cost, b.f1 = 0, 0.5, None
    b.steps[0].scores = []
    with store.session() as s:
        assert queries.write_episodes(s, run_id, shard_id, [a, b], "w") == 2
    with store.session() as s:
        rows = s.execute(
            select(Episode.question_id, Episode.cost, Episode.f1, Episode.error).order_by(
                Episode.question_id
            )
        ).all()
        assert [tuple(r) for r in rows] == [("a", 0.0, 1.0, None), ("b", 0.5, None, None)]
        scores = s.scalars(select(Step.scores).order_by(Step.episode_id, Step.index)).all()
        assert scores == [[0.5], [0.5], []]
