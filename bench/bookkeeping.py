#!/usr/bin/env python3
"""CPU benchmark of everything around the model: queue, worker, episode driver, database.

A real ``evalq worker`` with an engine that answers at once (``tests/engines.py``
``instant_engine``) serves a closed-book run (no retrieval), so what is measured is the
bookkeeping: planning and enqueueing shards, Celery delivery, claiming, building episodes,
driving them, and upserting every episode with its steps. Episodes per second, submit to
done, for SQLite and (with ``--postgres-url``) Postgres.

Usage: ``python bench/bookkeeping.py [--n 5000] [--postgres-url URL] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import Broker, Process, evalq_env, run_totals, wait_ready, wait_run, write_json

from evalq.config import Settings
from evalq.scheduler.submit import RunRequest, submit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000, help="questions (one episode each)")
    p.add_argument("--shard-size", type=int, default=250)
    p.add_argument("--driver", default="async", choices=["async", "batch"])
    p.add_argument(
        "--workers", type=int, default=1, help="worker processes (as --workers-per-gpu starts)"
    )
    p.add_argument("--postgres-url", default=os.environ.get("EVALQ_TEST_POSTGRES_URL"))
    p.add_argument("--out", type=Path, default=None, help="write bookkeeping.json here")
    return p.parse_args(argv)


def postgres_database(base_url: str) -> str:
    """A new empty database on the server of ``base_url``; returns its SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    name = f"evalq_bench_{uuid.uuid4().hex[:10]}"
    libpq = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )


def drop_database(base_url: str, url: str) -> None:
    """Drop a database made by ``postgres_database``."""
    import psycopg
    from sqlalchemy.engine import make_url

    libpq = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def measure(db_url: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One backend: start a broker and a worker, run, time submit to done."""
    broker = Broker(work)
    env = evalq_env(db_url, broker.url, work / "home")
    argv = ["worker", "--model", "test/instant", "--engine", "engines:instant_engine"]
    argv += ["--driver", args.driver, "--concurrency", "512"]
    logs = [work / f"worker{i}.log" for i in range(args.workers)]
    workers = [Process([*argv, "--name", f"w{i}@bench"], env, log) for i, log in enumerate(logs)]
    try:
        wait_ready(logs, workers, timeout=120)
        os.environ["EVALQ_HOME"] = str(work / "home")
        req = RunRequest(
            dataset="oran-bench",
            difficulty="medium",
            model="test/instant",
            strategies=("fixed:k=0",),
            n=args.n,
            shard_size=args.shard_size,
        )
        t0 = time.time()
        run_id = submit(Settings(database_url=db_url, broker_url=broker.url), req)
        wall = wait_run(db_url, run_id, workers, timeout=600) - t0
    finally:
        for worker in workers:
            worker.stop()
        broker.stop()
    totals = run_totals(db_url, run_id)
    return {
        "episodes": totals.episodes,
        "wall_s": round(wall, 2),
        "episodes_per_s": round(totals.episodes / wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure each backend in turn and print (and optionally write) the results."""
    args = parse_args(argv)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join([sys.executable, *sys.argv]),
        "n": args.n,
        "shard_size": args.shard_size,
        "driver": args.driver,
        "workers": args.workers,
    }
    with tempfile.TemporaryDirectory(prefix="evalq-bookkeeping-") as tmp:
        root = Path(tmp)
        (root / "sqlite").mkdir()
        result["sqlite"] = measure(
            f"sqlite:///{root / 'sqlite' / 'evalq.db'}", args, root / "sqlite"
        )
        print(json.dumps({"sqlite": result["sqlite"]}), flush=True)
        if args.postgres_url:
            (root / "postgres").mkdir()
            url = postgres_database(args.postgres_url)
            try:
                result["postgres"] = measure(url, args, root / "postgres")
            finally:
                drop_database(args.postgres_url, url)
            print(json.dumps({"postgres": result["postgres"]}), flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "bookkeeping.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
