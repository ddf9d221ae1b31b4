"""Test support: real services and real worker processes (imported by tests and conftest)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from evalq.db.models import Episode, Run
from evalq.db.session import open_store

REPO = Path(__file__).resolve().parents[1]
TINY = "evalq/tiny-random"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A real redis-server process on its own port, which a test may stop and restart."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def flush(self) -> None:
        redis.Redis.from_url(self.url).flushall()


def create_postgres_db(base_url: str) -> str:
    """A new empty database on the server of ``base_url``; returns its SQLAlchemy URL."""
    base = make_url(base_url)
    name = f"evalq_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_libpq(base_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def drop_postgres_db(base_url: str, url: str) -> None:
    """Drop a database made by ``create_postgres_db``."""
    name = make_url(url).database
    with psycopg.connect(_libpq(base_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Worker:
    """A real ``evalq worker`` process in its own process group (so a kill takes it all)."""

    def __init__(
        self,
        db_url: str,
        broker_url: str,
        log_path: Path,
        *,
        model: str = TINY,
        engine: str | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        cmd = [sys.executable, "-m", "evalq", "worker", "--model", model, *args]
        if engine:
            cmd += ["--engine", engine]
        self.log_path = log_path
        full_env = {
            **os.environ,
            "EVALQ_DATABASE_URL": db_url,
            "EVALQ_BROKER_URL": broker_url,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}",
            **(env or {}),
        }
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 300) -> None:
        """Until Celery says the worker consumes (the engine is built before that)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            if " ready." in self.log():
                return
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (its engine processes too)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Warm shutdown, then a kill if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def episode_count(db_url: str, run_id: int) -> int:
    """Stored episodes of a run."""
    with open_store(db_url).session() as s:
        return int(s.scalar(select(func.count()).where(Episode.run_id == run_id)) or 0)


def wait_for_run(db_url: str, run_id: int, workers: list[Worker], timeout: float = 300) -> None:
    """Until the run is done; fails early if every worker has died."""
    store = open_store(db_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.session() as s:
            run = s.get(Run, run_id)
            if run is not None and run.status == "done":
                return
        if workers and all(w.proc.poll() is not None for w in workers):
            raise RuntimeError("all workers died:\n" + workers[-1].log()[-3000:])
        time.sleep(0.5)
    raise TimeoutError(f"run {run_id} not done after {timeout} s")
