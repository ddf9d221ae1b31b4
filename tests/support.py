"""Test support: real services and real worker processes (imported by tests and conftest)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from evalq.db import queries
from evalq.db.models import Episode, Run, Shard, Step
from evalq.db.session import open_store
from evalq.rag.episode import EpisodeResult
from evalq.rag.mdp_solver import PRESETS, solve

REPO = Path(__file__).resolve().parents[1]
TINY = "evalq/tiny-random"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A real redis-server process on its own port, which a test may stop and restart."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

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
                *(["--requirepass", self.password] if self.password else []),
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


# A real model on a 2-core CPU: eager mode, since torch.compile's warm-up takes minutes there
# and changes nothing in what the model answers.
REAL_WORKER_ARGS = ("--max-model-len", "4096", "--enforce-eager")


def console(env: dict[str, str], *argv: str) -> str:
    """Run the ``evalq`` console script a user types; its output, or a failure with what it said."""
    script = Path(sys.executable).parent / "evalq"
    done = subprocess.run(
        [str(script), *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"evalq {' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def console_env(db_url: str, broker_url: str) -> dict[str, str]:
    """The environment a user's shell gives ``evalq``: no test modules on the path."""
    env = {**os.environ, "EVALQ_DATABASE_URL": db_url, "EVALQ_BROKER_URL": broker_url}
    env.pop("PYTHONPATH", None)
    return env


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


def wait_for_run(
    db_url: str,
    run_id: int,
    workers: list[Worker],
    timeout: float = 300,
    until: tuple[str, ...] = ("done",),
) -> None:
    """Until the run's status is one of ``until``; fails early if every worker has died."""
    store = open_store(db_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.session() as s:
            run = s.get(Run, run_id)
            if run is not None and run.status in until:
                return
        if workers and all(w.proc.poll() is not None for w in workers):
            raise RuntimeError("all workers died:\n" + workers[-1].log()[-3000:])
        time.sleep(0.5)
    raise TimeoutError(f"run {run_id} not done after {timeout} s")


@dataclass(frozen=True)
class RunCheck:
    """A run's stored episodes against the episodes it should have."""

    expected: int
    stored: int
    lost: int
    duplicated: int
    steps_mismatched: int


def check_run(db_url: str, run_id: int) -> RunCheck:
    """Count the expected episodes missing, those stored twice, and partial step sets."""
    with open_store(db_url).session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        expected = {
            (str(q), strategy, rep)
            for shard in s.scalars(select(Shard).where(Shard.run_id == run_id))
            for q in shard.question_ids
            for strategy in run.strategies
            for rep in range(run.repeats)
        }
        keys = [
            (q, st, r)
            for q, st, r in s.execute(
                select(Episode.question_id, Episode.strategy, Episode.repeat).where(
                    Episode.run_id == run_id
                )
            )
        ]
        step_counts = (
            select(Step.episode_id, func.count().label("n")).group_by(Step.episode_id).subquery()
        )
        mismatched = s.scalar(
            select(func.count())
            .select_from(Episode)
            .outerjoin(step_counts, step_counts.c.episode_id == Episode.id)
            .where(Episode.run_id == run_id, func.coalesce(step_counts.c.n, 0) != Episode.steps)
        )
    return RunCheck(
        expected=len(expected),
        stored=len(keys),
        lost=len(expected - set(keys)),
        duplicated=len(keys) - len(set(keys)),
        steps_mismatched=int(mismatched or 0),
    )


class PrivatePostgres:
    """A throwaway Postgres cluster on a free port, which a test may restart at will.

    ``initdb`` refuses to run as root, so as root the cluster runs as the ``postgres`` user,
    in a folder of its own under the system's temporary folder (pytest's are private).
    """

    def __init__(self) -> None:
        bindir = _postgres_bindir()
        if bindir is None:
            raise RuntimeError("no Postgres server binaries (initdb, pg_ctl) on this machine")
        self.bindir = bindir
        self.workdir = Path(tempfile.mkdtemp(prefix="evalq-pg-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            self.prefix = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.workdir, "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        if not self.data.exists():
            subprocess.run(
                [
                    *self.prefix,
                    str(self.bindir / "initdb"),
                    *("-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", options, "-l", str(self.workdir / "postgres.log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def remove(self) -> None:
        """Stop the cluster if it runs, and delete its files."""
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop (fast: every connection is cut), stay down a while, start again."""
        self.stop()
        time.sleep(down_for)
        self.start()


def _postgres_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


def store_mdp_run(
    db_url: str,
    episodes: list[EpisodeResult],
    *,
    strategies: tuple[str, ...] = ("mdp",),
    dataset: str = "hotpotqa",
    mdp_extra: dict[str, Any] | None = None,
) -> int:
    """A done run of ``episodes`` in one shard, its MDP config the solved ``early`` preset."""
    params = PRESETS["early"]
    solution = solve(params)
    mdp = {"preset": "early", **params.to_json(), **(mdp_extra or {})}
    mdp |= {"theta_cont": solution.theta_cont, "theta_star": solution.theta_star}
    with open_store(db_url).session() as s:
        run = queries.create_run(
            s,
            Run(
                dataset=dataset,
                difficulty="all",
                n=len({e.question_id for e in episodes}),
                seed=0,
                model="test/m",
                strategies=list(strategies),
                config={"mdp": mdp},
                code_version="test",
                status="done",
            ),
            [[e.question_id for e in episodes]],
        )
        for result in episodes:
            queries.write_episode(s, run.id, run.shards[0].id, result, "test")
        return run.id


def one_shard_run(db_url: str, strategies: list[str], question_ids: list[str]) -> tuple[int, int]:
    """A queued run of ``question_ids`` in one shard, with no episodes: (run id, shard id)."""
    with open_store(db_url).session() as s:
        run = queries.create_run(
            s,
            Run(
                dataset="d",
                difficulty="m",
                n=len(question_ids),
                seed=0,
                model="m",
                strategies=strategies,
                config={},
                code_version="test",
            ),
            [question_ids],
        )
        return run.id, run.shards[0].id
