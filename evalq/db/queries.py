"""Every read and write the rest of evalq makes; nothing else touches SQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from evalq.db.models import Episode, Run, Shard, Step, utcnow
from evalq.errors import UserError
from evalq.rag.episode import EpisodeResult

EpisodeKey = tuple[str, str, int]


def get_run(session: Session, run_id: int) -> Run:
    """The run, or a UserError naming the missing id."""
    run = session.get(Run, run_id)
    if run is None:
        raise UserError(f"no run {run_id} in the database")
    return run


def latest_runs(session: Session, limit: int = 10) -> list[Run]:
    """The newest runs first."""
    return list(session.scalars(select(Run).order_by(Run.id.desc()).limit(limit)))


def create_run(session: Session, run: Run, shard_questions: Sequence[Sequence[str]]) -> Run:
    """Insert a run and its shards (the caller's transaction makes it all-or-nothing)."""
    run.shards = [
        Shard(index=i, question_ids=list(ids), status="queued")
        for i, ids in enumerate(shard_questions)
    ]
    session.add(run)
    session.flush()
    return run


def delete_run(session: Session, run_id: int) -> None:
    """Remove a run and everything under it."""
    session.execute(delete(Run).where(Run.id == run_id))


def claim_shard(session: Session, shard_id: int, worker: str) -> tuple[Run, Shard] | None:
    """Mark a shard running for ``worker``; None when there is nothing left to do."""
    shard = session.get(Shard, shard_id)
    if shard is None or shard.status == "done":
        return None
    run = session.get(Run, shard.run_id)
    if run is None or run.status == "cancelled":
        return None
    shard.status = "running"
    shard.attempts += 1
    shard.worker = worker
    shard.started_at = utcnow()
    if run.status == "queued":
        run.status = "running"
    return run, shard


def stored_keys(session: Session, run_id: int, question_ids: Iterable[str]) -> set[EpisodeKey]:
    """(question, strategy, repeat) of the episodes already stored for these questions."""
    rows = session.execute(
        select(Episode.question_id, Episode.strategy, Episode.repeat).where(
            Episode.run_id == run_id, Episode.question_id.in_(list(question_ids))
        )
    )
    return {(q, s, r) for q, s, r in rows}


def write_episode(
    session: Session, run_id: int, shard_id: int, result: EpisodeResult, worker: str
) -> bool:
    """Store an episode and its steps once; a second write of the same key is a no-op.

    Returns:
        True when this call stored it, False when it was already there.
    """
    row: dict[str, Any] = {
        "run_id": run_id,
        "shard_id": shard_id,
        "question_id": result.question_id,
        "strategy": result.strategy,
        "repeat": result.repeat,
        "status": result.status,
        "difficulty": result.difficulty,
        "question": result.question,
        "answer": result.answer,
        "raw_output": result.raw_output,
        "gold": result.gold,
        "correct": result.correct,
        "parsed": result.parsed,
        "exact_match": result.exact_match,
        "f1": result.f1,
        "retrieval_recall": result.retrieval_recall,
        "cost": result.cost,
        "steps": len(result.steps),
        "retrievals": result.retrievals,
        "passage_ids": result.passage_ids,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "latency_s": result.latency_s,
        "error": result.error,
        "worker": worker,
        "finished_at": utcnow(),
    }
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = (
        insert(Episode)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["run_id", "question_id", "strategy", "repeat"])
        .returning(Episode.id)
    )
    episode_id = session.execute(stmt).scalar_one_or_none()
    if episode_id is None:
        return False
    session.add_all(
        Step(episode_id=episode_id, index=i, **step.__dict__) for i, step in enumerate(result.steps)
    )
    return True


def finish_shard(session: Session, shard_id: int) -> None:
    """Mark a shard done, and its run done when it was the last one."""
    shard = session.get(Shard, shard_id)
    if shard is None:
        return
    shard.status = "done"
    shard.finished_at = utcnow()
    shard.error = None
    session.flush()
    left = session.scalar(
        select(func.count())
        .select_from(Shard)
        .where(Shard.run_id == shard.run_id, Shard.status != "done")
    )
    if left == 0:
        session.execute(
            update(Run)
            .where(Run.id == shard.run_id, Run.status != "cancelled")
            .values(status="done", finished_at=utcnow())
        )


def fail_shard(session: Session, shard_id: int, error: str) -> None:
    """Record why a shard's attempt failed; it stays resumable."""
    session.execute(
        update(Shard).where(Shard.id == shard_id).values(status="failed", error=error[:4000])
    )


def unfinished_shards(session: Session, run_id: int) -> list[Shard]:
    """Shards the database says are not done: what ``resume`` re-enqueues."""
    return list(
        session.scalars(
            select(Shard)
            .where(Shard.run_id == run_id, Shard.status != "done")
            .order_by(Shard.index)
        )
    )


@dataclass(frozen=True)
class StrategyProgress:
    """Progress of one strategy in one run."""

    strategy: str
    total: int
    done: int
    ok: int
    invalid: int
    failed: int
    first_at: datetime | None
    last_at: datetime | None


def run_progress(session: Session, run: Run) -> list[StrategyProgress]:
    """Per strategy: stored episodes by status and the time span they were stored in."""
    rows = {
        r.strategy: r
        for r in session.execute(
            select(
                Episode.strategy,
                func.count().label("done"),
                func.sum(case((Episode.status == "ok", 1), else_=0)).label("ok"),
                func.sum(case((Episode.status == "invalid", 1), else_=0)).label("invalid"),
                func.sum(case((Episode.status == "error", 1), else_=0)).label("failed"),
                func.min(Episode.finished_at).label("first_at"),
                func.max(Episode.finished_at).label("last_at"),
            )
            .where(Episode.run_id == run.id)
            .group_by(Episode.strategy)
        )
    }
    started = session.scalar(select(func.min(Shard.started_at)).where(Shard.run_id == run.id))
    out = []
    for strategy in run.strategies:
        r = rows.get(strategy)
        out.append(
            StrategyProgress(
                strategy=strategy,
                total=run.n * run.repeats,
                done=int(r.done) if r else 0,
                ok=int(r.ok or 0) if r else 0,
                invalid=int(r.invalid or 0) if r else 0,
                failed=int(r.failed or 0) if r else 0,
                first_at=started,
                last_at=r.last_at if r else None,
            )
        )
    return out


def shard_counts(session: Session, run_id: int) -> dict[str, int]:
    """Number of shards per status."""
    rows = session.execute(
        select(Shard.status, func.count()).where(Shard.run_id == run_id).group_by(Shard.status)
    )
    return {status: int(n) for status, n in rows}


@dataclass(frozen=True)
class StrategyResult:
    """Aggregate results of one strategy over the valid episodes of a run."""

    strategy: str
    episodes: int
    invalid: int
    errors: int
    accuracy: float | None
    unparsed: int
    exact_match: float | None
    f1: float | None
    retrieval_recall: float | None
    mean_cost: float | None
    mean_steps: float | None
    mean_retrievals: float | None
    prompt_tokens: int
    completion_tokens: int
    mean_latency_s: float | None


def run_results(session: Session, run: Run) -> list[StrategyResult]:
    """Per strategy: accuracy, EM/F1, recall, cost, steps, retrievals and tokens."""
    ok = Episode.status == "ok"

    def avg_ok(col: Any) -> Any:
        return func.avg(case((ok, col), else_=None))

    query = (
        select(
            Episode.strategy,
            func.sum(case((ok, 1), else_=0)).label("episodes"),
            func.sum(case((Episode.status == "invalid", 1), else_=0)).label("invalid"),
            func.sum(case((Episode.status == "error", 1), else_=0)).label("errors"),
            avg_ok(case((Episode.correct.is_(True), 1.0), else_=0.0)).label("accuracy"),
            func.sum(case((ok & Episode.parsed.is_(False), 1), else_=0)).label("unparsed"),
            avg_ok(Episode.exact_match).label("exact_match"),
            avg_ok(Episode.f1).label("f1"),
            avg_ok(Episode.retrieval_recall).label("retrieval_recall"),
            avg_ok(Episode.cost).label("mean_cost"),
            avg_ok(Episode.steps).label("mean_steps"),
            avg_ok(Episode.retrievals).label("mean_retrievals"),
            func.sum(Episode.prompt_tokens).label("prompt_tokens"),
            func.sum(Episode.completion_tokens).label("completion_tokens"),
            avg_ok(Episode.latency_s).label("mean_latency_s"),
        )
        .where(Episode.run_id == run.id)
        .group_by(Episode.strategy)
    )
    rows = {r.strategy: r for r in session.execute(query)}
    out = []
    for strategy in run.strategies:
        r = rows.get(strategy)
        if r is None:
            continue

        def f(v: Any) -> float | None:
            return None if v is None else float(v)

        out.append(
            StrategyResult(
                strategy=strategy,
                episodes=int(r.episodes or 0),
                invalid=int(r.invalid or 0),
                errors=int(r.errors or 0),
                accuracy=f(r.accuracy),
                unparsed=int(r.unparsed or 0),
                exact_match=f(r.exact_match),
                f1=f(r.f1),
                retrieval_recall=f(r.retrieval_recall),
                mean_cost=f(r.mean_cost),
                mean_steps=f(r.mean_steps),
                mean_retrievals=f(r.mean_retrievals),
                prompt_tokens=int(r.prompt_tokens or 0),
                completion_tokens=int(r.completion_tokens or 0),
                mean_latency_s=f(r.mean_latency_s),
            )
        )
    return out
