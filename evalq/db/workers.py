"""The ``workers`` table: each worker's latest heartbeat, and the queries the fleet view needs.

Every worker upserts its row every ``interval_s`` seconds. Timestamps come from the
database's clock (``now()``), never the worker's, so workers on hosts with skewed clocks are
judged alike. A worker whose last heartbeat is older than ``STALE_BEATS`` of its own
intervals is stale: killed, hung, or cut off from the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Float, Integer, String, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from evalq.db.base import Base

# Missed heartbeats before a worker counts as stale: one late beat is noise, three are not.
STALE_BEATS = 3
# States a worker reports; "stale" is only ever set by ``mark_stale``.
STATES = ("starting", "idle", "busy", "stopping", "stopped", "stale")


class Worker(Base):
    """One worker process (by node name) as its latest heartbeat left it."""

    __tablename__ = "workers"

    node: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(500))
    queue: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(20))
    # Ids of the shards it runs now, comma separated (several with --shards-in-flight).
    shards: Mapped[str | None] = mapped_column(String(200))
    # Episodes it has finished since its process started, and the recent rate.
    episodes: Mapped[int] = mapped_column(Integer, default=0)
    episodes_per_s: Mapped[float | None] = mapped_column(Float)
    gpu_memory_used_mib: Mapped[int | None] = mapped_column(Integer)
    gpu_memory_total_mib: Mapped[int | None] = mapped_column(Integer)
    gpu_utilization: Mapped[float | None] = mapped_column(Float)  # percent, mean over its GPUs
    interval_s: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Beat:
    """What one heartbeat reports."""

    node: str
    host: str
    pid: int
    gpus: str
    model: str
    queue: str
    state: str
    shards: str | None
    episodes: int
    episodes_per_s: float | None
    gpu_memory_used_mib: int | None
    gpu_memory_total_mib: int | None
    gpu_utilization: float | None
    interval_s: float


@dataclass(frozen=True)
class WorkerStatus:
    """A worker row as the fleet view shows it: its age and whether it is stale."""

    worker: Worker
    age_s: float
    stale: bool

    @property
    def state(self) -> str:
        """The reported state, or ``stale`` once its heartbeats stopped."""
        return "stale" if self.stale else self.worker.state


def record_heartbeat(session: Session, beat: Beat, *, first: bool = False) -> None:
    """Upsert the worker's row; ``first`` (its process just started) also resets started_at."""
    now = func.now()
    values: dict[str, Any] = {**beat.__dict__, "heartbeat_at": now}
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(Worker).values(**values, started_at=now)
    changes = {**values, **({"started_at": now} if first else {})}
    session.execute(stmt.on_conflict_do_update(index_elements=["node"], set_=changes))


def is_serving(session: Session, node: str, pid: int) -> bool:
    """Whether process ``pid`` runs as worker ``node`` and has reported ready (idle or busy)."""
    worker = session.get(Worker, node, populate_existing=True)
    return worker is not None and worker.pid == pid and worker.state in ("idle", "busy")


def database_now(session: Session) -> datetime:
    """The database's clock, timezone-aware (SQLite reports naive UTC)."""
    value = session.scalar(select(func.now()))
    if isinstance(value, str):  # SQLite's CURRENT_TIMESTAMP, when the type is not applied
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return _aware(value)


def is_stale(worker: Worker, now: datetime) -> bool:
    """No heartbeat for more than ``STALE_BEATS`` of the worker's intervals (stopped: never)."""
    if worker.state == "stopped":
        return False
    return now - _aware(worker.heartbeat_at) > timedelta(seconds=STALE_BEATS * worker.interval_s)


def list_workers(session: Session, *, within_s: float | None = 3600.0) -> list[WorkerStatus]:
    """Workers heard from within ``within_s`` seconds (None: all), by host then node."""
    now = database_now(session)
    query = select(Worker).order_by(Worker.host, Worker.node)
    if within_s is not None:
        query = query.where(Worker.heartbeat_at >= now - timedelta(seconds=within_s))
    return [
        WorkerStatus(
            worker=w,
            age_s=max(0.0, (now - _aware(w.heartbeat_at)).total_seconds()),
            stale=is_stale(w, now),
        )
        for w in session.scalars(query)
    ]


def mark_stale(session: Session) -> list[str]:
    """Set ``state = 'stale'`` on every worker whose heartbeats stopped; return their nodes.

    A stale worker that beats again overwrites the mark with its own state.
    """
    now = database_now(session)
    live = session.scalars(select(Worker).where(Worker.state.not_in(("stopped", "stale"))))
    nodes = [w.node for w in live if is_stale(w, now)]
    if nodes:
        session.execute(update(Worker).where(Worker.node.in_(nodes)).values(state="stale"))
    return nodes


def _aware(t: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are UTC."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)
