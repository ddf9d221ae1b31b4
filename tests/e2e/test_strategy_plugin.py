"""A strategy from another package runs in a real evalq run, without editing evalq.

The example plugin (examples/strategy-plugin) is built as a wheel and installed into a
folder of its own, which only the CLI and worker processes see (PYTHONPATH): the shared
venv is left as it was, and evalq finds the kind through the wheel's entry point alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from support import REPO, RedisServer, Worker, wait_for_run

from evalq.db.models import Episode, Step
from evalq.db.session import open_store

PLUGIN = REPO / "examples" / "strategy-plugin"
MODEL = "test/echo"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the installed example plugin (package and dist-info), nothing else."""
    tmp = tmp_path_factory.mktemp("plugin")
    # Built from a copy: a build writes build/ and *.egg-info next to its sources.
    source = tmp / "src"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels, site = tmp / "dist", tmp / "site"
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, source],
        check=True,
    )
    (wheel,) = wheels.glob("evalq_strategy_rewrite-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", site, wheel], check=True
    )
    assert list(site.glob("evalq_strategy_rewrite-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, plugin_path: Path
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(database URL, broker URL, environment with the plugin) and one echo worker."""
    redis_server.flush()
    tmp = tmp_path_factory.mktemp("plugin-run")
    db_url = f"sqlite:///{tmp / 'evalq.db'}"
    env = {"PYTHONPATH": os.pathsep.join([str(plugin_path), str(REPO / "tests"), str(REPO)])}
    worker = Worker(
        db_url, redis_server.url, tmp / "w.log", model=MODEL, engine="engines:echo_engine", env=env
    )
    try:
        worker.wait_ready(timeout=120)
        yield db_url, redis_server.url, env
    finally:
        worker.stop()


def run_evalq(
    service: tuple[str, str, dict[str, str]], *args: str
) -> subprocess.CompletedProcess[str]:
    """``evalq ARGS`` as a user runs it, in a process that sees the plugin."""
    db_url, broker_url, env = service
    cli = [sys.executable, "-m", "evalq", "--database-url", db_url, "--broker-url", broker_url]
    return subprocess.run(
        [*cli, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def evalq(service: tuple[str, str, dict[str, str]], *args: str) -> str:
    """As ``run_evalq``, which must succeed; its output."""
    done = run_evalq(service, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rewrite_plugin_episodes_are_stored_ok_under_its_name(
    service: tuple[str, str, dict[str, str]],
) -> None:
    out = evalq(
        service,
        *("submit", "--dataset", "hotpotqa", "--n", "6", "--model", MODEL, "--shard-size", "3"),
        *("--strategy", "rewrite:k=3", "--strategy", "fixed:k=3"),
    )
    match = re.match(r"run (\d+):", out)
    assert match, out
    run_id = int(match.group(1))
    wait_for_run(service[0], run_id, [], timeout=180)

    with open_store(service[0]).session() as s:
        episodes = list(s.scalars(select(Episode).where(Episode.run_id == run_id)))
        steps = {
            e.id: list(s.scalars(select(Step).where(Step.episode_id == e.id).order_by(Step.index)))
            for e in episodes
        }
    rewrite = [e for e in episodes if e.strategy == "rewrite:k=3"]
    assert len(rewrite) == 6 and len(episodes) == 12
    assert {e.status for e in episodes} == {"ok"}, [e.error for e in episodes]
    for e in rewrite:
        rewritten, retrieve, answer = steps[e.id]
        assert [rewritten.action, retrieve.action, answer.action] == [
            "rewrite",
            "retrieve",
            "answer",
        ]
        # The echo engine replies "echo: <prompt>": the model's reply became the query.
        assert rewritten.query == retrieve.query == f"echo: Question: {e.question}"
        assert len(e.passage_ids) == 3 and retrieve.passage_ids == e.passage_ids
        assert e.correct is not None and e.retrieval_recall is not None

    data = json.loads(evalq(service, "results", str(run_id), "--format", "json"))
    by = {row["strategy"]: row for row in data["strategies"]}
    assert by["rewrite:k=3"]["episodes"] == 6


def test_a_bad_option_of_the_plugin_is_one_error_line(
    service: tuple[str, str, dict[str, str]],
) -> None:
    done = run_evalq(
        service,
        *("submit", "--dataset", "hotpotqa", "--n", "2", "--model", MODEL),
        *("--strategy", "rewrite:k=0"),
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: strategy 'rewrite:k=0': use rewrite:k=N with N >= 1"
    )
