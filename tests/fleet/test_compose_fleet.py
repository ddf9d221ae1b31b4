"""The CPU fleet for real: images built here, compose up, a worker killed, nothing lost.

scripts/fleet_images.py builds the images (or finds them by the content hash of their
inputs: a rerun on the same machine builds nothing). ``evalq fleet compose --cpu 2
--internal`` describes the fleet: Redis, Postgres, Flower and two CPU workers serving
SmolLM2-135M, on a compose network with no way out, so no container traffic leaves the
machine; the test reaches it through ``exec`` (``evalq submit`` in a worker, ``psql`` in
Postgres). It submits 24 questions x 2 strategies in shards of 4, ``docker kill``s a worker
inside a shard once a shard's worth of episodes is stored, lets the other worker
finish (the killed shard comes back after the visibility timeout; Docker restarts no
container it was told to kill), checks that every episode is stored exactly once, and takes
the fleet down with its volumes.

It skips only where no Docker daemon can run: not root and none answering. Run it alone
with ``-s`` to see the timings it prints.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import REPO

from evalq.fleet.compose import ComposeSpec, render

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
QUESTIONS, STRATEGIES = 24, ("fixed:k=0", "fixed:k=3")
EPISODES = QUESTIONS * len(STRATEGIES)
# One shard and one episode at a time per worker, and outputs of a fixed length: a shard's
# 8 episodes are stored a few at a time (2 s flushes) over several seconds, so the kill,
# which waits for a shard with most of its episodes still to come, lands inside it.
WORKER_ARGS: tuple[str, ...] = ("--max-model-len", "4096", "--enforce-eager")
WORKER_ARGS += ("--shards-in-flight", "1", "--concurrency", "1")
SUBMIT_ARGS = ("--shard-size", "4", "--max-tokens", "32", "--ignore-eos")
PER_SHARD = 4 * len(STRATEGIES)
# Short, so the killed worker's unacknowledged shard comes back within the test; longer
# than any shard here takes (about 10 s; production keeps hours).
VISIBILITY_S = 30
NO_DOCKER = 3  # scripts/fleet_images.py: no daemon can run here


def timed(what: str, start: float) -> float:
    """Print how long a step took (shown with -s); returns now."""
    now = time.monotonic()
    print(f"[fleet] {what}: {now - start:.1f} s", flush=True)
    return now


def build_images() -> dict[str, Any]:
    """The images' tags (built now or found by hash); skips where Docker cannot run."""
    # The model from the home scripts/install.sh prepares it in, not the session's
    # temporary one: the same files every session, so the same image tag.
    env = {k: v for k, v in os.environ.items() if k not in ("EVALQ_HOME", "EVALQ_MODELS")}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fleet_images.py"), "--json", "--model", MODEL],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode == NO_DOCKER:
        pytest.skip(
            "NO DOCKER DAEMON CAN RUN HERE, THE COMPOSE FLEET IS NOT TESTED: "
            + done.stderr.strip().splitlines()[-1]
        )
    assert done.returncode == 0, done.stderr[-6000:]
    for line in done.stderr.splitlines():  # its steps and their timings (-s shows them)
        if line.startswith("fleet_images: "):
            print(f"[fleet] {line}", flush=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def compose_command() -> list[str]:
    """``docker compose`` (the v2 plugin) where it exists, else Debian's ``docker-compose``."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    assert found, "neither `docker compose` nor docker-compose (fleet_images.py installs it)"
    return [found]


class Fleet:
    """One compose project in a folder: ``up``, ``exec``, ``kill``, ``down``."""

    def __init__(self, folder: Path, text: str) -> None:
        self.folder = folder
        self.project = f"evalqtest{os.getpid()}"
        (folder / "docker-compose.yml").write_text(text)
        self.env = {
            **os.environ,
            "EVALQ_REDIS_PASSWORD": secrets.token_hex(16),
            "EVALQ_DB_PASSWORD": secrets.token_hex(16),
            "EVALQ_VISIBILITY_TIMEOUT": str(VISIBILITY_S),
        }
        self.base = [
            *compose_command(),
            "-p",
            self.project,
            "-f",
            str(folder / "docker-compose.yml"),
        ]
        self.ids: dict[str, str] = {}

    def compose(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, env=self.env, cwd=self.folder
        )
        if check:
            assert done.returncode == 0, (
                f"compose {args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        return done.stdout

    def query(self, query: str) -> str:
        """Rows from Postgres (``|`` between values), through psql in its container.

        ``docker exec`` rather than ``compose exec``: docker-compose 1.x takes a second to
        start, too slow for the polling that times the kill.
        """
        argv = ["psql", "-U", "evalq", "-d", "evalq", "-tAc", query]
        done = subprocess.run(
            ["docker", "exec", self.container("postgres"), *argv], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def container(self, service: str) -> str:
        if service not in self.ids:
            self.ids[service] = self.compose("ps", "-q", service).strip()
        return self.ids[service]

    def running(self, service: str) -> bool:
        cid = self.container(service)
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", cid], capture_output=True, text=True
        )
        return state.stdout.strip() == "true"

    def logs(self, service: str, lines: int = 40) -> str:
        return self.compose("logs", "--no-color", "--tail", str(lines), service, check=False)

    def wait_ready(self, services: list[str], timeout: float) -> None:
        """Until every worker's Celery says it consumes (its engine is built by then)."""
        deadline = time.monotonic() + timeout
        waiting = list(services)
        while waiting:
            waiting = [s for s in waiting if " ready." not in self.logs(s, 400)]
            for service in waiting:
                assert self.running(service), f"{service} exited:\n{self.logs(service)}"
            assert time.monotonic() < deadline, f"not ready: {waiting}\n{self.logs(waiting[0])}"
            time.sleep(2)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    start = time.monotonic()
    images = build_images()
    start = timed(f"images {images['tags']} (built now: {images['built'] or 'none'})", start)
    spec = ComposeSpec(
        model=MODEL,
        gpus="",
        host="fleet",
        cpu_workers=2,
        cores_per_worker=max(1, (os.cpu_count() or 2) // 2),
        image=images["tags"]["worker"],
        redis_image=images["tags"]["redis"],
        postgres_image=images["tags"]["postgres"],
        internal=True,
        worker_args=WORKER_ARGS,
    )
    fleet = Fleet(tmp_path, render(spec))
    try:
        fleet.compose("up", "-d")
        start = timed("compose up -d", start)
        fleet.wait_ready(["worker-cpu0", "worker-cpu1"], timeout=600)
        timed("both workers ready", start)
        yield fleet
    finally:
        start = time.monotonic()
        fleet.compose("down", "-v", "--remove-orphans", "-t", "60", check=False)
        timed("compose down -v", start)
        label = f"label=com.docker.compose.project={fleet.project}"
        for kind in ("container", "volume", "network"):
            left = subprocess.run(
                ["docker", kind, "ls", "-q", "--filter", label]
                + (["-a"] if kind == "container" else []),
                capture_output=True,
                text=True,
            ).stdout.split()
            assert not left, f"down left {kind}s behind: {left}"


def test_killed_worker_loses_nothing_and_duplicates_nothing(fleet: Fleet) -> None:
    f = fleet
    start = time.monotonic()
    strategies = [a for s in STRATEGIES for a in ("--strategy", s)]
    out = f.compose(
        "exec",
        "-T",
        "worker-cpu0",
        *("evalq", "submit", "--dataset", "hotpotqa", "--n", str(QUESTIONS)),
        *("--model", MODEL, *strategies, *SUBMIT_ARGS),
    )
    run_id = int(out.split()[1].rstrip(":"))
    start = timed(f"submit: run {run_id}", start)

    # The kill: once a shard is done, the worker of a shard with most of its episodes still
    # to come goes (a shard is about 10 s of work; the poll takes a fraction of a second).
    deadline = time.monotonic() + 300
    while True:
        busy = f.query(
            "SELECT s.worker FROM shards s LEFT JOIN episodes e ON e.shard_id = s.id "
            f"WHERE s.run_id = {run_id} AND s.status = 'running' "
            f"GROUP BY s.id HAVING count(e.id) <= {PER_SHARD // 2} ORDER BY s.id LIMIT 1"
        )
        stored = int(f.query(f"SELECT count(*) FROM episodes WHERE run_id = {run_id}"))
        if busy and stored >= PER_SHARD:
            break
        assert time.monotonic() < deadline, f.logs("worker-cpu0") + f.logs("worker-cpu1")
        time.sleep(0.2)
    node = busy
    victim = "worker-" + node.split("@")[0]  # cpu0@fleet -> worker-cpu0
    survivor = "worker-cpu1" if victim == "worker-cpu0" else "worker-cpu0"
    subprocess.run(["docker", "kill", f.container(victim)], check=True, capture_output=True)
    stored_at_kill = int(f.query(f"SELECT count(*) FROM episodes WHERE run_id = {run_id}"))
    # What the victim left: its shards still "running" now that it is dead.
    lost = f.query(
        f"SELECT id FROM shards WHERE run_id = {run_id} AND status = 'running' "
        f"AND worker = '{node}'"
    ).split()
    start = timed(f"killed {victim} in shard(s) {lost} with {stored_at_kill} stored", start)
    assert 0 < stored_at_kill < EPISODES, "the kill must land in the middle of the run"
    assert lost, "the kill must land inside a shard"

    deadline = time.monotonic() + 600
    while f.query(f"SELECT status FROM runs WHERE id = {run_id}") != "done":
        assert f.running(survivor), f"{survivor} died:\n{f.logs(survivor)}"
        assert time.monotonic() < deadline, f.logs(survivor)
        time.sleep(1)
    timed("run done after the kill", start)

    assert not f.running(victim), "docker kill is a manual stop: no restart"
    total, distinct = f.query(
        "SELECT count(*), count(DISTINCT (question_id, strategy, repeat)) "
        f"FROM episodes WHERE run_id = {run_id}"
    ).split("|")
    assert int(total) == EPISODES, "every expected episode is there"
    assert int(distinct) == EPISODES, "and none twice"
    survivor_node = survivor.removeprefix("worker-") + "@fleet"
    for shard_id in lost:
        status, attempts, worker = f.query(
            f"SELECT status, attempts, worker FROM shards WHERE id = {shard_id}"
        ).split("|")
        assert status == "done"
        assert int(attempts) >= 2, "the killed shard was delivered again"
        assert worker == survivor_node, "and finished by the other worker"
    print(
        f"[fleet] {total} episodes stored once each; {stored_at_kill} stored at the kill; "
        f"shard(s) {lost} finished by {survivor_node}",
        flush=True,
    )
