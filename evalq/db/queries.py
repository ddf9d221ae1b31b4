"""Every read and write the rest of evalq makes; nothing else touches SQL."""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    Result,
    Table,
    TextClause,
    case,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from evalq.db.base import Base, utcnow
from evalq.db.models import EPISODE_IDENTITY, Episode, MDPParamSet, Run, Shard, Step
from evalq.errors import UserError
from evalq.rag.calibrate import CLOSED_BOOK_STRATEGY, MDP_STRATEGY, EpisodeTrace, RunTraces
from evalq.rag.episode import EpisodeResult

EpisodeKey = tuple[str, str, int]
# The Core tables the bulk episode writes use: no ORM bookkeeping per row.
EPISODES = Base.metadata.tables[Episode.__tablename__]
STEPS = Base.metadata.tables[Step.__tablename__]


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


# Run statuses: queued -> running -> done | done_with_failures; cancelled at any time.
# Shard statuses: queued -> running -> done | failed; cancelled when its run was.
# "failed" is final until `evalq resume`: the shard's message is gone from the broker.
RUN_FINISHED = ("done", "done_with_failures")
SHARD_SETTLED = ("done", "failed")
# A shard claimed again while the database still says "running" was left by a worker that
# died mid-shard. After this many such deliveries it is a poison shard and is given up.
DEFAULT_MAX_DELIVERIES = 3


def claim_shard(
    session: Session, shard_id: int, worker: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES
) -> tuple[Run, Shard] | None:
    """Mark a shard running for ``worker``; None when there is nothing to do.

    Nothing to do: the shard is done or failed, its run is cancelled (the shard is then
    marked cancelled), or it has been delivered ``max_deliveries`` times and every delivery
    ended without it finishing: it is then marked failed with the reason, and the run
    settles if that was its last open shard.
    """
    shard = session.get(Shard, shard_id, with_for_update=True)
    if shard is None or shard.status in SHARD_SETTLED:
        return None
    run = session.get(Run, shard.run_id)
    if run is None:
        return None
    if run.status == "cancelled":
        shard.status = "cancelled"
        return None
    if shard.status == "running" and shard.attempts >= max_deliveries:
        shard.status = "failed"
        shard.finished_at = utcnow()
        shard.error = (
            f"given up after {shard.attempts} deliveries: each ended without the shard "
            f"finishing, its worker gone (last {shard.worker}); `evalq resume {run.id}` retries"
        )
        session.flush()
        settle_run(session, run.id)
        return None
    shard.status = "running"
    shard.attempts += 1
    shard.worker = worker
    shard.started_at = utcnow()
    shard.error = None
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


def _episode_row(run_id: int, shard_id: int, result: EpisodeResult, worker: str) -> dict[str, Any]:
    return {
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


def write_episodes(
    session: Session, run_id: int, shard_id: int, results: Sequence[EpisodeResult], worker: str
) -> int:
    """Store episodes and their steps once each; keys already stored are left alone.

    One insert for the episodes (``ON CONFLICT DO NOTHING RETURNING``) and one for the steps
    of those this call inserted (``_insert_rows``).

    Returns:
        How many episodes this call stored (the others were already there).
    """
    if not results:
        return 0
    rows = [_episode_row(run_id, shard_id, r, worker) for r in results]
    inserted = _insert_rows(session, EPISODES, rows, conflict=EPISODE_IDENTITY)
    stored = {(q, st, rep): eid for eid, _run, q, st, rep in inserted}
    steps = [
        {"episode_id": stored[key], "index": i, **step.__dict__}
        for r in results
        if (key := (r.question_id, r.strategy, r.repeat)) in stored
        for i, step in enumerate(r.steps)
    ]
    if steps:
        _insert_rows(session, STEPS, steps)
    return len(stored)


def _insert_rows(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], conflict: tuple[str, ...] = ()
) -> Result[*tuple[Any, ...]]:
    """Many rows into ``table`` in one statement, on the Core table (no ORM per row).

    ``conflict`` names a unique key: rows whose key is stored are skipped, and the result
    holds the id and key of each row stored. On SQLite an executemany: SQLAlchemy compiles the
    single-row statement once (cached) and sends the rows as one multi-row VALUES
    ("insertmanyvalues"); a ``.values([...])`` statement built per flush was compiled afresh
    every time, which was most of a worker's CPU. On Postgres one statement over arrays
    (``_pg_unnest_insert``).
    """
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        stmt = _pg_unnest_insert(dialect, table, tuple(rows[0]), conflict)
        return session.execute(stmt, _pg_columns(table, rows))
    if not conflict:
        return session.execute(sa_insert(table), rows)
    returning = (table.c.id, *(table.c[c] for c in conflict))
    skip = sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict)
    return session.execute(skip.returning(*returning), rows)


@functools.cache
def _pg_unnest_insert(
    dialect: Dialect, table: Table, columns: tuple[str, ...], conflict: tuple[str, ...] = ()
) -> TextClause:
    """``INSERT ... SELECT FROM unnest(arrays)``: many rows as one array per column.

    On Postgres a multi-row VALUES of 1,000 rows is a new 25,000-parameter statement each
    flush, which psycopg splits in Python and the server parses and plans afresh; this one is
    the same short statement every time (prepared once per connection), its arrays sent in
    psycopg's binary format. ``conflict`` names the unique key: rows whose key is stored are
    skipped, and the statement returns the id and key of the rows it stored.
    """
    names = ", ".join(dialect.identifier_preparer.quote(c) for c in columns)
    arrays = ", ".join(
        f"CAST(:{c} AS {table.c[c].type.compile(dialect=dialect)}[])" for c in columns
    )
    sql = f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({arrays})"
    if conflict:
        key = ", ".join(dialect.identifier_preparer.quote(c) for c in conflict)
        sql += f" ON CONFLICT ({key}) DO NOTHING RETURNING id, {key}"
    return text(sql)


def _pg_columns(table: Table, rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows as one list per column, for psycopg's arrays.

    JSON columns are serialized as SQLAlchemy's JSON type does; float columns made all
    floats (psycopg cannot dump a list that mixes ``0`` and ``0.5``).
    """
    columns: dict[str, list[Any]] = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        kind = table.c[name].type
        if isinstance(kind, JSON):
            values = [json.dumps(v) for v in values]
        elif isinstance(kind, Float):
            values = [None if v is None else float(v) for v in values]
        columns[name] = values
    return columns


def write_episode(
    session: Session, run_id: int, shard_id: int, result: EpisodeResult, worker: str
) -> bool:
    """Store one episode and its steps once; True when this call stored it."""
    return write_episodes(session, run_id, shard_id, [result], worker) == 1


def _locked_shard(session: Session, shard_id: int) -> Shard | None:
    """The shard, after locking its run's row.

    Two workers finishing a run's last two shards at once would each, under Postgres's
    READ COMMITTED, count the other's shard as open and neither would settle the run.
    Locking the run first serialises them (SQLite serialises every writer anyway).
    """
    run_id = session.scalar(select(Shard.run_id).where(Shard.id == shard_id))
    if run_id is None:
        return None
    session.execute(select(Run.id).where(Run.id == run_id).with_for_update())
    return session.get(Shard, shard_id, populate_existing=True)


def finish_shard(session: Session, shard_id: int) -> None:
    """Mark a shard done, and settle its run when it was the last open shard."""
    shard = _locked_shard(session, shard_id)
    if shard is None:
        return
    shard.status = "done"
    shard.finished_at = utcnow()
    shard.error = None
    session.flush()
    settle_run(session, shard.run_id)


def fail_shard(session: Session, shard_id: int, error: str) -> None:
    """Record why a shard failed; it stays failed until ``evalq resume``."""
    shard = _locked_shard(session, shard_id)
    if shard is None:
        return
    shard.status = "failed"
    shard.finished_at = utcnow()
    shard.error = error[:4000]
    session.flush()
    settle_run(session, shard.run_id)


def stop_shard(session: Session, shard_id: int) -> None:
    """A running shard stopped because its run was cancelled."""
    session.execute(
        update(Shard)
        .where(Shard.id == shard_id, Shard.status == "running")
        .values(status="cancelled")
    )


def settle_run(session: Session, run_id: int) -> None:
    """Finish a run whose shards are all settled: done, or done_with_failures."""
    counts = shard_counts(session, run_id)
    if any(status not in SHARD_SETTLED for status in counts):
        return
    status = "done_with_failures" if counts.get("failed") else "done"
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status != "cancelled")
        .values(status=status, finished_at=utcnow())
    )


def reopen_shards(session: Session, run: Run) -> list[Shard]:
    """Every shard of ``run`` that is not done, set back to queued with a fresh count.

    Returns:
        The reopened shards, in shard order; the run is running again if there are any.
    """
    shards = unfinished_shards(session, run.id)
    for shard in shards:
        shard.status = "queued"
        shard.attempts = 0
        shard.error = None
    if shards:
        run.status = "running"
        run.finished_at = None
    else:
        settle_run(session, run.id)
    return shards


def orphaned_shards(
    session: Session, queue_of: Callable[[str], str], queue: str, node: str | None
) -> list[Shard]:
    """Open shards of active runs on ``queue``: those of ``node`` if given, else all.

    A shard "running" for the worker node that is starting now was left by that node's
    previous life. With ``node`` None (the broker lost its queues), every queued or
    running shard of a queued or running run is an orphan.
    """
    query = (
        select(Shard, Run.model)
        .join(Run, Run.id == Shard.run_id)
        .where(Run.status.in_(("queued", "running")))
        .order_by(Shard.run_id, Shard.index)
    )
    if node is None:
        query = query.where(Shard.status.in_(("queued", "running")))
    else:
        query = query.where(Shard.status == "running", Shard.worker == node)
    return [shard for shard, model in session.execute(query) if queue_of(model) == queue]


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


def failed_shards(session: Session, run_id: int) -> list[Shard]:
    """The run's failed shards with their reasons, in shard order."""
    return list(
        session.scalars(
            select(Shard)
            .where(Shard.run_id == run_id, Shard.status == "failed")
            .order_by(Shard.index)
        )
    )


def episode_errors(session: Session, run_id: int, limit: int = 5) -> list[tuple[str, int]]:
    """The commonest reasons of the run's error episodes, with how many each."""
    n = func.count().label("n")
    rows = session.execute(
        select(Episode.error, n)
        .where(Episode.run_id == run_id, Episode.status == "error")
        .group_by(Episode.error)
        .order_by(n.desc(), Episode.error)
        .limit(limit)
    )
    return [(str(reason), int(count)) for reason, count in rows]


@dataclass(frozen=True)
class StrategyResult:
    """Aggregate results of one strategy of a run.

    ``episodes`` counts the ok episodes, over which ``accuracy``, ``exact_match``, ``f1``
    and the means are taken. ``attempted`` counts ok plus error episodes (invalid ones, the
    questions that could not be run, are left out); ``accuracy_attempted`` and
    ``f1_attempted`` are over those, an error scoring 0, as the official scripts score a
    missing prediction. ``f1`` and ``f1_attempted`` are None on multiple choice.
    """

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
    attempted: int = 0
    accuracy_attempted: float | None = None
    f1_attempted: float | None = None


def _share(total: Any, n: int) -> float | None:
    """``total / n`` as a float; None without a total (no scores) or without episodes."""
    return None if total is None or not n else float(total) / n


def run_results(session: Session, run: Run) -> list[StrategyResult]:
    """Per strategy: accuracy, EM/F1, recall, cost, steps, retrievals and tokens.

    Accuracy and F1 are given twice: over ok episodes, and over attempted ones (ok or
    error; an error scores 0).
    """
    ok = Episode.status == "ok"
    attempted = Episode.status.in_(("ok", "error"))

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
            func.sum(case((attempted, 1), else_=0)).label("attempted"),
            func.sum(case((ok & Episode.correct.is_(True), 1), else_=0)).label("correct"),
            func.sum(case((ok, Episode.f1), else_=None)).label("f1_sum"),
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

        n_attempted = int(r.attempted or 0)

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
                attempted=n_attempted,
                accuracy_attempted=_share(r.correct, n_attempted),
                f1_attempted=_share(r.f1_sum, n_attempted),
            )
        )
    return out


def param_sets(session: Session) -> list[MDPParamSet]:
    """Every saved MDP parameter set, by name."""
    return list(session.scalars(select(MDPParamSet).order_by(MDPParamSet.name)))


def save_param_set(
    session: Session,
    name: str,
    params: dict[str, Any],
    base_preset: str,
    source_run_id: int | None,
    *,
    replace: bool = False,
) -> MDPParamSet:
    """Store a named MDP parameter set.

    Raises:
        UserError: If a set has the name and ``replace`` is false.
    """
    existing = session.scalar(select(MDPParamSet).where(MDPParamSet.name == name))
    if existing is not None and not replace:
        raise UserError(
            f"an MDP parameter set named {name!r} exists (from run {existing.source_run_id}); "
            "add --replace to overwrite it"
        )
    row = existing or MDPParamSet(name=name)
    row.params = dict(params)
    row.base_preset = base_preset
    row.source_run_id = source_run_id
    row.created_at = utcnow()
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class RetrieveStepRow:
    """One ok episode with one of its retrieve steps (step fields None when it has none)."""

    episode_id: int
    strategy: str
    question_id: str
    correct: bool | None
    f1: float | None
    retrievals: int
    step_index: int | None
    success: bool | None
    judgement: float | None
    passage_ids: list[Any] | None


def retrieve_step_rows(session: Session, run_id: int) -> list[RetrieveStepRow]:
    """A run's ok episodes, each joined with its retrieve steps in order (the adaptivity report).

    An episode without a retrieve step comes back once, its step fields None.
    """
    query = (
        select(
            Episode.id,
            Episode.strategy,
            Episode.question_id,
            Episode.correct,
            Episode.f1,
            Episode.retrievals,
            Step.index,
            Step.success,
            Step.judgement,
            Step.passage_ids,
        )
        .outerjoin(Step, (Step.episode_id == Episode.id) & (Step.action == "retrieve"))
        .where(Episode.run_id == run_id, Episode.status == "ok")
        .order_by(Episode.strategy, Episode.id, Step.index)
    )
    return [
        RetrieveStepRow(
            episode_id=int(r[0]),
            strategy=str(r[1]),
            question_id=str(r[2]),
            correct=r[3],
            f1=None if r[4] is None else float(r[4]),
            retrievals=int(r[5] or 0),
            step_index=r[6],
            success=r[7],
            judgement=None if r[8] is None else float(r[8]),
            passage_ids=r[9],
        )
        for r in session.execute(query)
    ]


def load_traces(session: Session, run_id: int, strategy: str) -> list[EpisodeTrace]:
    """The finished (status ok) episodes of one strategy of a run, with their steps."""
    episodes = session.execute(
        select(Episode.id, Episode.question_id, Episode.correct).where(
            Episode.run_id == run_id, Episode.strategy == strategy, Episode.status == "ok"
        )
    ).all()
    steps: defaultdict[int, list[tuple[str, bool | None, float | None]]] = defaultdict(list)
    ids = [row.id for row in episodes]
    # Chunked: SQLite caps the number of bound parameters in one IN list.
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for episode_id, action, success, judgement in session.execute(
            select(Step.episode_id, Step.action, Step.success, Step.judgement)
            .where(Step.episode_id.in_(chunk))
            .order_by(Step.episode_id, Step.index)
        ):
            steps[episode_id].append((action, success, judgement))
    return [
        EpisodeTrace(
            question_id=row.question_id,
            correct=bool(row.correct),
            retrieves=tuple(bool(s) for a, s, _ in steps[row.id] if a == "retrieve"),
            reasons=sum(1 for a, _, _ in steps[row.id] if a == "reason"),
            judgements=tuple(
                float(j) for a, _, j in steps[row.id] if a == "retrieve" and j is not None
            ),
            retrieve_judgements=tuple(
                None if j is None else float(j) for a, _, j in steps[row.id] if a == "retrieve"
            ),
        )
        for row in episodes
    ]


def run_traces(session: Session, run: Run) -> RunTraces:
    """What calibration reads of a run: its config and its MDP and closed-book traces."""
    strategies = tuple(run.strategies)
    return RunTraces(
        run_id=run.id,
        strategies=strategies,
        config=dict(run.config),
        mdp=load_traces(session, run.id, MDP_STRATEGY) if MDP_STRATEGY in strategies else [],
        closed_book=(
            load_traces(session, run.id, CLOSED_BOOK_STRATEGY)
            if CLOSED_BOOK_STRATEGY in strategies
            else []
        ),
    )
