"""Heartbeats: the ``workers`` table, stale detection, and two workers standing for two hosts."""

from __future__ import annotations

import io
import sys
import time
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import update
from support import Worker, wait_for_run

from evalq.cli.main import cli
from evalq.cli.watch import StatusView, watch_status
from evalq.config import Settings
from evalq.db.session import Store, open_store
from evalq.db.workers import Worker as WorkerRow
from evalq.db.workers import database_now, list_workers, mark_stale
from evalq.worker.heartbeat import GpuProbe, Heartbeat, start_heartbeat


def rows(store: Store) -> dict[str, Any]:
    with store.session() as s:
        return {w.worker.node: w for w in list_workers(s)}


def age_heartbeat(store: Store, node: str, seconds: float) -> None:
    """Move a worker's last heartbeat into the past, as if it had been silent that long."""
    with store.session() as s:
        then = database_now(s) - timedelta(seconds=seconds)
        s.execute(update(WorkerRow).where(WorkerRow.node == node).values(heartbeat_at=then))


def test_heartbeat_reports_state_shards_and_episodes(db_url: str) -> None:
    store = open_store(db_url)
    beat = start_heartbeat(
        store, node="gpu0@a", host="a", gpus="0", model="m", queue="evalq.m", interval_s=3600
    )
    first = rows(store)["gpu0@a"]
    assert first.state == "starting" and not first.stale
    assert first.worker.episodes == 0 and first.worker.shards is None
    assert first.worker.gpu_memory_used_mib is None  # no NVML, or no GPU, on this machine
    beat.set_state("idle")
    beat.set_shard(7)
    beat.set_shard(8)
    beat.add_episodes(5)
    beat.beat()
    busy = rows(store)["gpu0@a"].worker
    assert (busy.state, busy.shards, busy.episodes) == ("busy", "7,8", 5)
    assert busy.episodes_per_s is not None and busy.episodes_per_s > 0
    assert busy.started_at == first.worker.started_at
    beat.clear_shard(7)
    beat.clear_shard(8)
    beat.beat()
    assert rows(store)["gpu0@a"].state == "idle"
    beat.stop()
    assert rows(store)["gpu0@a"].state == "stopped"


def test_silent_worker_is_stale_after_three_intervals_and_recovers(db_url: str) -> None:
    store = open_store(db_url)
    live = Heartbeat(store, node="gpu0@a", host="a", gpus="0", model="m", queue="q", interval_s=10)
    gone = Heartbeat(store, node="gpu1@b", host="b", gpus="1", model="m", queue="q", interval_s=10)
    for beat in (live, gone):
        beat.set_state("idle")
        beat.beat()
    age_heartbeat(store, "gpu0@a", 25)  # 2.5 intervals: late, not stale
    age_heartbeat(store, "gpu1@b", 31)  # past 3 intervals
    found = rows(store)
    assert not found["gpu0@a"].stale and found["gpu0@a"].state == "idle"
    assert found["gpu1@b"].stale and found["gpu1@b"].state == "stale"
    with store.session() as s:
        assert mark_stale(s) == ["gpu1@b"]
        assert mark_stale(s) == []  # marked once
    with store.session() as s:
        assert s.get(WorkerRow, "gpu1@b").state == "stale"  # type: ignore[union-attr]
    gone.beat()  # it comes back
    assert rows(store)["gpu1@b"].state == "idle"
    # A worker that stopped cleanly is never stale, however old its last beat.
    live.stop()
    age_heartbeat(store, "gpu0@a", 600)
    assert rows(store)["gpu0@a"].state == "stopped"


def test_status_view_shows_each_worker_and_flags_the_stale(db_url: str) -> None:
    store = open_store(db_url)
    for node, host in (("gpu0@a", "host-a"), ("gpu1@b", "host-b")):
        beat = Heartbeat(store, node=node, host=host, gpus=node[3], model="m", queue="q")
        beat.set_state("idle")
        beat.beat()
    age_heartbeat(store, "gpu1@b", 45)
    text = render(StatusView(store).refresh())
    assert "no runs yet" in text
    line = {node: next(x for x in text.splitlines() if node in x) for node in ("gpu0@a", "gpu1@b")}
    assert "host-a" in line["gpu0@a"] and "idle" in line["gpu0@a"]
    assert "host-b" in line["gpu1@b"] and "stale" in line["gpu1@b"]


def test_gpu_figures_come_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    mib = 1024 * 1024
    fake = types.ModuleType("pynvml")
    opened: list[object] = []

    class Memory:
        def __init__(self, used: int, total: int) -> None:
            self.used, self.total = used * mib, total * mib

    class Rates:
        def __init__(self, gpu: int) -> None:
            self.gpu = gpu

    devices = {2: (Memory(1000, 80000), Rates(50)), 3: (Memory(3000, 80000), Rates(100))}
    fake.nvmlInit = lambda: opened.append("init")  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: opened.append("shutdown")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = lambda h: devices[h][0]  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUtilizationRates = lambda h: devices[h][1]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe = GpuProbe("2,3")
    reading = probe.read()
    assert reading is not None
    assert (reading.memory_used_mib, reading.memory_total_mib) == (4000, 160000)
    assert reading.utilization == 75.0
    probe.close()
    assert opened == ["init", "shutdown"]
    assert GpuProbe("").read() is None  # no GPUs given: nothing to read


def render(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=240, color_system=None)
    console.print(renderable)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


def status(db_url: str) -> str:
    """``evalq status`` as a user runs it, on a terminal wide enough for one row per worker."""
    result = CliRunner().invoke(cli, ["--database-url", db_url, "status"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def submit(db_url: str, broker_url: str, model: str, n: int) -> int:
    result = CliRunner().invoke(
        cli,
        [
            *("--database-url", db_url, "--broker-url", broker_url, "submit"),
            *("--dataset", "hotpotqa", "--n", str(n), "--model", model),
            *("--strategy", "fixed:k=0", "--strategy", "fixed:k=2", "--shard-size", "5"),
        ],
    )
    assert result.exit_code == 0, result.output
    return int(result.output.split()[1].rstrip(":"))


def test_two_hosts_share_redis_and_the_database_and_a_killed_one_turns_stale(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    """Two worker processes stand for two hosts: own node name, model queue and GPU id.

    Needs the worker's --heartbeat-interval and `evalq status` listing the workers.
    """
    hosts = {"gpu0@host-a": ("test/model-a", "0"), "gpu1@host-b": ("test/model-b", "1")}
    workers = {
        node: Worker(
            postgres_url,
            redis_url,
            tmp_path / f"{node}.log",
            model=model,
            engine="engines:instant_engine",
            args=("--name", node, "--gpus", gpus, "--heartbeat-interval", "1"),
        )
        for node, (model, gpus) in hosts.items()
    }
    try:
        for w in workers.values():
            w.wait_ready(timeout=120)
        runs = {node: submit(postgres_url, redis_url, m, 10) for node, (m, _) in hosts.items()}
        for node, run_id in runs.items():
            wait_for_run(postgres_url, run_id, [workers[node]], timeout=120)
        store = open_store(postgres_url)
        settings = Settings(database_url=postgres_url, broker_url=redis_url)
        out = io.StringIO()
        watch_status(settings, runs["gpu1@host-b"], 0.1, Console(file=out, width=240))
        assert "fixed:k=2" in out.getvalue()  # the finished run's bars, then it returns
        deadline = time.monotonic() + 30
        while True:  # the heartbeat after the last shard reports idle and every episode
            found = rows(store)
            if all(found[n].state == "idle" and found[n].worker.episodes == 20 for n in hosts):
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.5)
        for node, (model, gpus) in hosts.items():
            row = found[node].worker
            assert (row.model, row.gpus, row.queue) == (model, gpus, f"evalq.{model}")
        text = status(postgres_url)  # what `evalq status` prints, with both "hosts"
        assert "gpu0@host-a" in text and "gpu1@host-b" in text and "stale" not in text

        workers["gpu1@host-b"].kill()
        deadline = time.monotonic() + 60
        while True:
            text = status(postgres_url)
            line = next(x for x in text.splitlines() if "gpu1@host-b" in x)
            if "stale" in line:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
        survivor = next(x for x in text.splitlines() if "gpu0@host-a" in x)
        assert "idle" in survivor and "stale" not in survivor
        with store.session() as s:
            assert s.get(WorkerRow, "gpu1@host-b").state == "stale"  # type: ignore[union-attr]
        workers["gpu0@host-a"].stop()
        assert rows(store)["gpu0@host-a"].state == "stopped"
    finally:
        for w in workers.values():
            w.kill()
