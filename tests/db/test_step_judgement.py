"""A retrieve's judged P(yes) is stored per step (``steps.judgement``, migration 0006)."""

from __future__ import annotations

from sqlalchemy import select
from support import one_shard_run

from evalq.db import queries
from evalq.db.models import Step
from evalq.db.session import open_store
from evalq.rag.episode import EpisodeResult, StepRecord


def test_judgement_round_trips_and_is_null_when_not_judged(db_url: str) -> None:
    store = open_store(db_url)
    run_id, shard_id = one_shard_run(db_url, ["mdp"], ["q0"])
    r = EpisodeResult("q0", "mdp", 0, status="ok", question="q", gold="a")
    r.steps = [
        StepRecord("retrieve", u_before=0.0, u_after=0.15, success=True, judgement=0.8125),
        StepRecord("retrieve", u_before=0.15, u_after=0.15, success=False, judgement=0.25),
        StepRecord("terminate", u_before=0.15, u_after=0.15, text="a"),
    ]
    with store.session() as s:
        assert queries.write_episodes(s, run_id, shard_id, [r], "w") == 1
    with store.session() as s:
        rows = s.execute(select(Step.action, Step.success, Step.judgement).order_by(Step.index))
        assert [tuple(row) for row in rows] == [
            ("retrieve", True, 0.8125),
            ("retrieve", False, 0.25),
            ("terminate", None, None),
        ]
