"""Plain batch generation in the store: jobs, their chunks and items, and the SQL on them.

A job is a list of prompts in input order. Its items are cut into chunks, and a chunk is
the unit one Celery task carries. The database is the truth, as for runs: an output is
stored with its item, a chunk is done only once every one of its items is, and whatever
the broker loses is rebuilt from here (``evalq generate --resume JOB``).

A worker keeps a claimed chunk alive with a heartbeat; a chunk still ``running`` whose
heartbeat is older than the job's lease was left by a dead worker and may be handed on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from evalq.db.base import Base, utcnow
from evalq.errors import UserError


class GenJob(Base):
    """One ``batch_generate`` call: a model, its prompts' count, how they are cut."""

    __tablename__ = "gen_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    name: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(500))
    n: Mapped[int] = mapped_column(Integer)
    chunk_size: Mapped[int] = mapped_column(Integer)
    # Seconds without a heartbeat after which a running chunk counts as abandoned.
    lease_s: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class GenChunk(Base):
    """Items ``[start, stop)`` of a job: what one ``evalq.generate_chunk`` task generates."""

    __tablename__ = "gen_chunks"
    __table_args__ = (UniqueConstraint("job_id", "index", name="uq_gen_chunk_job_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("gen_jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)
    stop: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


class GenItem(Base):
    """One prompt (as chat messages), its sampling, and once generated its output."""

    __tablename__ = "gen_items"

    job_id: Mapped[int] = mapped_column(
        ForeignKey("gen_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The caller's own id for the prompt (the ``id`` of an input row), carried to the output.
    key: Mapped[str | None] = mapped_column(String(500))
    messages: Mapped[list[Any]] = mapped_column(JSON)
    sampling: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    output: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(200))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class NewItem:
    """A prompt to store: chat messages, sampling, and the caller's optional key."""

    messages: list[dict[str, str]]
    sampling: dict[str, Any]
    key: str | None = None


@dataclass(frozen=True)
class ItemOutput:
    """What a worker stores for one item."""

    index: int
    output: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class JobProgress:
    """A job's state as the client polls it."""

    status: str
    n: int
    done: int
    failed_chunks: int
    error: str | None


def create_job(
    s: Session,
    *,
    model: str,
    items: Sequence[NewItem],
    chunk_size: int,
    lease_s: float,
    name: str | None = None,
) -> tuple[int, list[int]]:
    """Write a job, its items and its chunks; returns the job id and the chunk ids."""
    job = GenJob(
        name=name,
        model=model,
        n=len(items),
        chunk_size=chunk_size,
        lease_s=lease_s,
        status="queued",
    )
    s.add(job)
    s.flush()
    s.add_all(
        GenItem(job_id=job.id, index=i, key=it.key, messages=it.messages, sampling=it.sampling)
        for i, it in enumerate(items)
    )
    chunks = [
        GenChunk(job_id=job.id, index=c, start=start, stop=min(start + chunk_size, len(items)))
        for c, start in enumerate(range(0, len(items), chunk_size))
    ]
    s.add_all(chunks)
    s.flush()
    return job.id, [c.id for c in chunks]


def get_job(s: Session, job_id: int) -> GenJob:
    """The job, or a user error naming it."""
    job = s.get(GenJob, job_id)
    if job is None:
        raise UserError(f"no generation job {job_id}")
    return job


def delete_job(s: Session, job_id: int) -> None:
    """Remove a job with its chunks and items (a submit that could not enqueue)."""
    s.execute(delete(GenItem).where(GenItem.job_id == job_id))
    s.execute(delete(GenChunk).where(GenChunk.job_id == job_id))
    s.execute(delete(GenJob).where(GenJob.id == job_id))


def claim_chunk(s: Session, chunk_id: int, worker: str) -> GenChunk | None:
    """Take a chunk for ``worker``; None when it is done or alive in another worker's hands.

    A compare-and-set on status and heartbeat, so two workers handed the same chunk (a
    redelivery, a re-enqueue) never both run it while its first owner lives.
    """
    chunk = s.get(GenChunk, chunk_id)
    if chunk is None or chunk.status == "done":
        return None
    job = s.get(GenJob, chunk.job_id)
    if job is None or job.status == "cancelled":
        return None
    now = utcnow()
    stale = now - timedelta(seconds=job.lease_s)
    result = s.execute(
        update(GenChunk)
        .where(
            GenChunk.id == chunk_id,
            GenChunk.status != "done",
            or_(
                GenChunk.status != "running",
                GenChunk.worker == worker,
                GenChunk.heartbeat_at.is_(None),
                GenChunk.heartbeat_at < stale,
            ),
        )
        .values(
            status="running",
            worker=worker,
            heartbeat_at=now,
            attempts=GenChunk.attempts + 1,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    if job.status == "queued":
        job.status = "running"
    s.refresh(chunk)
    return chunk


def beat(s: Session, chunk_id: int, worker: str) -> None:
    """Refresh the heartbeat of a chunk this worker holds."""
    s.execute(
        update(GenChunk)
        .where(GenChunk.id == chunk_id, GenChunk.worker == worker, GenChunk.status == "running")
        .values(heartbeat_at=utcnow())
    )


def pending_items(s: Session, chunk: GenChunk) -> list[GenItem]:
    """The chunk's items without an output yet, in input order."""
    return list(
        s.scalars(
            select(GenItem)
            .where(
                GenItem.job_id == chunk.job_id,
                GenItem.index >= chunk.start,
                GenItem.index < chunk.stop,
                GenItem.status != "done",
            )
            .order_by(GenItem.index)
        )
    )


def store_outputs(s: Session, job_id: int, outputs: Sequence[ItemOutput], worker: str) -> None:
    """Write outputs; an item already done keeps its first output (a rerun is harmless)."""
    now = utcnow()
    for out in outputs:
        s.execute(
            update(GenItem)
            .where(GenItem.job_id == job_id, GenItem.index == out.index, GenItem.status != "done")
            .values(
                status="done",
                output=out.output,
                prompt_tokens=out.prompt_tokens,
                completion_tokens=out.completion_tokens,
                worker=worker,
                finished_at=now,
            )
        )


def finish_chunk(s: Session, chunk_id: int) -> None:
    """Mark a chunk done; the last chunk marks its job done."""
    chunk = s.get(GenChunk, chunk_id)
    if chunk is None:
        return
    chunk.status = "done"
    chunk.finished_at = utcnow()
    s.flush()
    left = s.scalar(
        select(func.count())
        .select_from(GenChunk)
        .where(GenChunk.job_id == chunk.job_id, GenChunk.status != "done")
    )
    if not left:
        job = s.get(GenJob, chunk.job_id)
        if job is not None:
            job.status = "done"
            job.finished_at = utcnow()


def fail_chunk(s: Session, chunk_id: int, error: str) -> None:
    """Record why a chunk failed; the client reports it, ``--resume`` retries it."""
    chunk = s.get(GenChunk, chunk_id)
    if chunk is not None and chunk.status != "done":
        chunk.status = "failed"
        chunk.error = error
        chunk.finished_at = utcnow()


def job_progress(s: Session, job_id: int) -> JobProgress:
    """Done items and failed chunks of a job."""
    job = get_job(s, job_id)
    done = s.scalar(
        select(func.count())
        .select_from(GenItem)
        .where(GenItem.job_id == job_id, GenItem.status == "done")
    )
    failed = list(
        s.scalars(
            select(GenChunk.error)
            .where(GenChunk.job_id == job_id, GenChunk.status == "failed")
            .order_by(GenChunk.index)
        )
    )
    return JobProgress(
        status=job.status,
        n=job.n,
        done=int(done or 0),
        failed_chunks=len(failed),
        error=failed[0] if failed else None,
    )


def abandoned_chunks(s: Session, job_id: int) -> list[int]:
    """Running chunks whose worker stopped beating for longer than the lease: reset to queued."""
    job = get_job(s, job_id)
    stale = utcnow() - timedelta(seconds=job.lease_s)
    chunks = list(
        s.scalars(
            select(GenChunk).where(
                GenChunk.job_id == job_id,
                GenChunk.status == "running",
                or_(GenChunk.heartbeat_at.is_(None), GenChunk.heartbeat_at < stale),
            )
        )
    )
    for chunk in chunks:
        chunk.status = "queued"
    return [c.id for c in chunks]


def reopen_chunks(s: Session, job_id: int) -> list[int]:
    """Every chunk not done and not alive in a worker's hands, back to queued (``--resume``)."""
    job = get_job(s, job_id)
    ids = abandoned_chunks(s, job_id)
    for chunk in s.scalars(
        select(GenChunk).where(GenChunk.job_id == job_id, GenChunk.status.in_(("queued", "failed")))
    ):
        chunk.status = "queued"
        chunk.error = None
        if chunk.id not in ids:
            ids.append(chunk.id)
    if job.status in ("failed", "cancelled"):
        job.status = "queued"
    return sorted(ids)


@dataclass(frozen=True)
class StoredItem:
    """A finished item as the client hands it back."""

    index: int
    key: str | None
    output: str
    prompt_tokens: int
    completion_tokens: int


def job_outputs(s: Session, job_id: int) -> list[StoredItem]:
    """Every finished item of a job, in input order."""
    rows = s.execute(
        select(
            GenItem.index,
            GenItem.key,
            GenItem.output,
            GenItem.prompt_tokens,
            GenItem.completion_tokens,
        )
        .where(GenItem.job_id == job_id, GenItem.status == "done")
        .order_by(GenItem.index)
    )
    return [StoredItem(i, k, o or "", pt or 0, ct or 0) for i, k, o, pt, ct in rows]
