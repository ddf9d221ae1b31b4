"""``evalq status --watch``: a run's progress per strategy and the fleet's workers, live.

Everything shown is read from the database every ``interval`` seconds: episodes stored per
strategy (bars, episodes/s, ETA) and each worker's latest heartbeat. A worker silent for
more than ``STALE_BEATS`` of its heartbeat intervals is marked stale, in the view and in
the ``workers`` table.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import Session

from evalq.config import Settings
from evalq.db import queries
from evalq.db.models import Run
from evalq.db.queries import StrategyProgress
from evalq.db.session import Store, open_store
from evalq.db.workers import WorkerStatus, list_workers, mark_stale

FINISHED = ("done", "failed", "cancelled")
# Seconds between redraws of ``evalq status --watch`` (each one a few small queries).
WATCH_INTERVAL_S = 2.0
STATE_STYLES = {
    "busy": "green",
    "idle": "yellow",
    "starting": "cyan",
    "stopping": "magenta",
    "stopped": "dim",
    "stale": "bold red",
}


def workers_table(workers: list[WorkerStatus]) -> Table:
    """One row per worker: where, which GPUs and how loaded, what it runs, how fast, state."""
    table = Table(title="workers", box=box.SIMPLE_HEAD)
    for col in ("node", "host", "GPU", "GPU memory", "util", "model", "shard"):
        table.add_column(col)
    for col in ("episodes", "episodes/s", "heartbeat", "state"):
        table.add_column(col, justify="right")
    if not workers:
        table.caption = "no worker has reported yet: start one with `evalq worker`"
    for status in workers:
        w = status.worker
        memory = "-"
        if w.gpu_memory_used_mib is not None and w.gpu_memory_total_mib:
            memory = f"{w.gpu_memory_used_mib / 1024:.1f}/{w.gpu_memory_total_mib / 1024:.1f} GiB"
        state = status.state
        table.add_row(
            w.node,
            w.host,
            w.gpus or "-",
            memory,
            "-" if w.gpu_utilization is None else f"{w.gpu_utilization:.0f}%",
            w.model,
            w.shards or "-",
            str(w.episodes),
            "-" if w.episodes_per_s is None else f"{w.episodes_per_s:.2f}",
            f"{status.age_s:.0f} s ago",
            Text(state, style=STATE_STYLES.get(state, "")),
        )
    return table


def workers_view(session: Session) -> Table:
    """Mark the silent workers stale, then the table of every worker heard from lately."""
    mark_stale(session)
    return workers_table(list_workers(session))


def strategy_rate(p: StrategyProgress, now: datetime) -> float | None:
    """Episodes per second since the run's first shard started (until its last episode)."""
    if p.first_at is None or not p.done:
        return None
    end = p.last_at if p.done >= p.total and p.last_at else now
    span = (_aware(end) - _aware(p.first_at)).total_seconds()
    return p.done / span if span > 0 else None


def _eta(left: int, rate: float | None) -> str:
    if left <= 0:
        return "done"
    return f"{left / rate:.0f} s" if rate else "-"


class StatusView:
    """The live view of one run (or of the latest run, whichever that is at each refresh)."""

    def __init__(self, store: Store, run_id: int | None = None) -> None:
        """Follow ``run_id``, or the newest run when None."""
        self.store = store
        self.run_id = run_id
        self.run_status: str | None = None
        self._shown: int | None = None
        self.progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8} ep/s"),
            TextColumn("ETA {task.fields[eta]}"),
            auto_refresh=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def refresh(self) -> RenderableType:
        """Read the database once and return the whole view."""
        with self.store.session() as s:
            run = self._run(s)
            parts: list[RenderableType] = []
            if run is None:
                parts.append(Text("no runs yet: start one with `evalq submit`"))
                self.run_status = None
            else:
                self.run_status = run.status
                parts += self._run_parts(s, run)
            parts.append(workers_view(s))
        return Group(*parts)

    @property
    def finished(self) -> bool:
        """The followed run has ended (done, failed or cancelled)."""
        return self.run_status in FINISHED

    def _run(self, s: Session) -> Run | None:
        if self.run_id is not None:
            return queries.get_run(s, self.run_id)
        latest = queries.latest_runs(s, 1)
        return latest[0] if latest else None

    def _run_parts(self, s: Session, run: Run) -> list[RenderableType]:
        if run.id != self._shown:  # a new run to follow: new bars
            for task in self._tasks.values():
                self.progress.remove_task(task)
            self._tasks = {}
            self._shown = run.id
        now = datetime.now(UTC)
        progress = queries.run_progress(s, run)
        left = total_rate = 0.0
        for p in progress:
            rate = strategy_rate(p, now)
            shown = f"{rate:.2f}" if rate else "-"
            eta = _eta(p.total - p.done, rate)
            bar = self._tasks.get(p.strategy)
            if bar is None:
                bar = self.progress.add_task(p.strategy, total=p.total, rate=shown, eta=eta)
                self._tasks[p.strategy] = bar
            self.progress.update(bar, completed=p.done, rate=shown, eta=eta)
            left += max(0, p.total - p.done)
            total_rate += rate or 0.0
        shards = queries.shard_counts(s, run.id)
        run_eta = _eta(int(left), total_rate or None)
        title = f"run {run.id} · {run.dataset}/{run.difficulty} · {run.model} · {run.status}"
        counts = ", ".join(f"{k} {v}" for k, v in sorted(shards.items()))
        footer = f"run ETA {run_eta} · shards: {counts}"
        return [Text(title, style="bold"), self.progress, Text(footer)]


def watch_status(
    settings: Settings,
    run_id: int | None,
    interval: float = WATCH_INTERVAL_S,
    console: Console | None = None,
) -> None:
    """Redraw the run's progress and the workers every ``interval`` s until the run ends.

    Following the latest run (``run_id`` None), it watches until Ctrl-C.
    """
    view = StatusView(open_store(settings.database_url), run_id)
    with Live(view.refresh(), console=console, auto_refresh=False) as live:
        try:
            while not (run_id is not None and view.finished):
                time.sleep(interval)
                live.update(view.refresh(), refresh=True)
        except KeyboardInterrupt:
            pass


def _aware(t: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)
