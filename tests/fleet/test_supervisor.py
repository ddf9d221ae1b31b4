"""``evalq fleet``: GPU groups, auto sizing, and real workers started, restarted and stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from support import REPO, wait_for_run

from evalq.cli.fleet import tensor_parallel_for
from evalq.cli.main import cli
from evalq.db.models import Shard
from evalq.db.session import open_store
from evalq.errors import UserError
from evalq.fleet.gpus import gpu_groups, parse_gpus
from evalq.fleet.supervisor import Fleet, WorkerSpec
from evalq.models.sizing import ModelSize, choose_tensor_parallel, count_parameters, model_size

GIB = 1024**3
# Qwen2.5-7B-Instruct's shapes (bench/gpu/mkmodel.py writes the same config).
QWEN7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def test_gpus_split_into_whole_groups() -> None:
    assert gpu_groups(parse_gpus("0,1,2,3"), 2) == [["0", "1"], ["2", "3"]]
    assert gpu_groups(parse_gpus("4"), 1) == [["4"]]
    assert parse_gpus("0-3,6") == ["0", "1", "2", "3", "6"]
    for bad in ("", "0,x", "1,1", "0-2,2", "3-1"):
        with pytest.raises(UserError):
            parse_gpus(bad)
    with pytest.raises(UserError, match="do not split"):
        gpu_groups(["0", "1", "2"], 2)


def test_modes_pick_gpus_per_worker() -> None:
    four = ["0", "1", "2", "3"]
    assert tensor_parallel_for("data_parallel", four, "m", {}, None) == 1
    assert tensor_parallel_for("tensor_parallel", four, "m", {}, None) == 4
    assert tensor_parallel_for("data_parallel", four, "m", {}, 2) == 2
    assert tensor_parallel_for("single", ["3"], "m", {}, None) == 1
    with pytest.raises(UserError, match="one GPU"):
        tensor_parallel_for("single", four, "m", {}, None)


def test_qwen_7b_is_counted_at_its_published_size() -> None:
    assert count_parameters(QWEN7B) == pytest.approx(7.62e9, rel=0.01)


def test_auto_gives_the_fewest_gpus_that_leave_room_for_the_cache(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(QWEN7B))
    size = model_size(tmp_path)
    assert size.weight_bytes == pytest.approx(15.2e9, rel=0.01)
    h100 = [80 * GIB] * 8
    assert choose_tensor_parallel(size, h100, 0.9) == 1
    assert choose_tensor_parallel(size, [24 * GIB] * 4, 0.9) == 2  # 24 GiB cards: a pair
    big = ModelSize(parameters=70_000_000_000, weight_bytes=140 * GIB, attention_heads=64)
    assert choose_tensor_parallel(big, h100, 0.9) == 4
    with pytest.raises(UserError, match="do not fit"):
        choose_tensor_parallel(big, [80 * GIB] * 2, 0.9)
    fp8 = model_size(tmp_path, quantization="fp8")
    assert fp8.weight_bytes < size.weight_bytes * 0.6


def _fleet_command(*args: str) -> list[str]:
    # `fleet` is added here in case the command group does not register it (yet).
    boot = (
        "import sys; from evalq.cli.main import cli; from evalq.cli.fleet import fleet; "
        "cli.add_command(fleet); sys.exit(cli.main(prog_name='evalq'))"
    )
    return [sys.executable, "-c", boot, "fleet", *args]


def _serve_a_run(sqlite_url: str, redis_url: str, questions: int) -> set[str]:
    """Submit a run of ``questions`` to the fleet, wait for it; the workers that served it."""
    submit = ["--database-url", sqlite_url, "--broker-url", redis_url, "submit"]
    submit += ["--dataset", "hotpotqa", "--n", str(questions), "--model", "test/instant"]
    result = CliRunner().invoke(cli, [*submit, "--strategy", "fixed:k=3", "--shard-size", "2"])
    assert result.exit_code == 0, result.output
    run_id = int(result.output.split()[1].rstrip(":"))
    wait_for_run(sqlite_url, run_id, [], timeout=120)
    with open_store(sqlite_url).session() as s:
        return set(s.scalars(select(Shard.worker).where(Shard.run_id == run_id)))


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.3)
    raise TimeoutError(what)


def test_fleet_serves_restarts_a_killed_worker_and_stops_cleanly(
    tmp_path: Path, redis_url: str, sqlite_url: str
) -> None:
    logs = tmp_path / "logs"
    stderr_path = tmp_path / "fleet.err"
    env = {
        **os.environ,
        "EVALQ_DATABASE_URL": sqlite_url,
        "EVALQ_BROKER_URL": redis_url,
        "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}",
    }
    args = ["--model", "test/instant", "--gpus", "0,1", "--mode", "data_parallel"]
    args += ["--engine", "engines:instant_engine", "--log-dir", str(logs)]
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            _fleet_command(*args), env=env, stderr=err, stdout=err, start_new_session=True
        )

    def report() -> str:
        return stderr_path.read_text(errors="replace")

    def ready(name: str, times: int = 1) -> bool:
        path = logs / f"worker-{name}.log"
        return path.exists() and path.read_text(errors="replace").count(" ready.") >= times

    try:
        _wait_for(lambda: ready("gpu0") and ready("gpu1"), 120, "workers not ready")
        served = _serve_a_run(sqlite_url, redis_url, questions=20)
        assert served and served <= {f"gpu0@{socket.gethostname()}", f"gpu1@{socket.gethostname()}"}

        pids = {
            m.group(1): int(m.group(2))
            for m in re.finditer(r"worker (\S+): started \(pid (\d+)\)", report())
        }
        os.kill(pids["gpu1"], signal.SIGKILL)
        _wait_for(lambda: "gpu1: exited with code -9; restarting" in report(), 30, report())
        _wait_for(lambda: ready("gpu1", times=2), 120, "killed worker not restarted")
        assert report().count("worker gpu1: started") == 2
        assert report().count("worker gpu0: started") == 1
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=90)
    assert code == 0, report()
    started = [int(p) for p in re.findall(r"started \(pid (\d+)\)", report())]
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert report().count(": stopped") == 2


def test_a_wave_starts_once_the_one_before_serves() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    specs = [WorkerSpec(f"gpu0.{i}", sleeper, dict(os.environ), wave=i) for i in range(3)]
    asked: list[str] = []
    serving_after = {"gpu0.0": 2, "gpu0.1": 1}  # polls until each reports serving

    def serving(name: str, pid: int) -> bool:
        asked.append(name)
        started = [m.spec.name for m in fleet.members if m.proc is not None]
        # Nothing of a later wave may run while this one is still loading.
        assert started == [f"gpu0.{i}" for i in range(int(name[-1]) + 1)]
        serving_after[name] -= 1
        return serving_after[name] < 0

    fleet = Fleet(specs, serving=serving, report=lambda line: None)
    try:
        fleet.start(poll_s=0.01)
        assert all(m.proc is not None and m.proc.poll() is None for m in fleet.members)
        assert asked == ["gpu0.0"] * 3 + ["gpu0.1"] * 2
    finally:
        fleet.stop_timeout_s = 5
        fleet.stop()


def test_workers_per_gpu_share_its_memory_and_all_serve(
    tmp_path: Path, redis_url: str, sqlite_url: str
) -> None:
    env = {
        **os.environ,
        "EVALQ_DATABASE_URL": sqlite_url,
        "EVALQ_BROKER_URL": redis_url,
        "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}",
    }
    logs = tmp_path / "logs"
    args = ["--model", "test/instant", "--gpus", "0", "--mode", "single", "--workers-per-gpu", "2"]
    args += ["--gpu-memory-utilization", "0.8", "--engine", "engines:instant_engine"]
    args += ["--log-dir", str(logs)]
    err_path = tmp_path / "fleet.err"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            _fleet_command(*args), env=env, stderr=err, stdout=err, start_new_session=True
        )

    def ready(name: str) -> bool:
        path = logs / f"worker-{name}.log"
        return path.exists() and " ready." in path.read_text(errors="replace")

    host = socket.gethostname()
    try:
        _wait_for(lambda: ready("gpu0.0") and ready("gpu0.1"), 120, "workers not ready")
        report = err_path.read_text()
        assert "2 per GPU group, each with --gpu-memory-utilization 0.4" in report
        # The second engine started once the first served: never two loading at once.
        assert report.index("worker gpu0.1: started") > report.index("worker gpu0.0: started")
        served = _serve_a_run(sqlite_url, redis_url, questions=40)
        assert served and served <= {f"gpu0.0@{host}", f"gpu0.1@{host}"}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=90)
    assert code == 0, err_path.read_text()


def test_workers_per_gpu_must_be_positive(sqlite_url: str, redis_url: str) -> None:
    base = ["--database-url", sqlite_url, "--broker-url", redis_url, "fleet", "--model", "m"]
    result = CliRunner().invoke(cli, [*base, "--gpus", "0", "--workers-per-gpu", "0"])
    assert result.exit_code != 0
    assert "--workers-per-gpu must be at least 1, got 0" in result.output
