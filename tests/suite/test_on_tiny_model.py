"""On one real vLLM CPU worker (random weights): the example suites, and DSPy via FleetLM."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import TINY, RedisServer, Worker

from evalq.cli.main import cli
from evalq.client import Client
from evalq.db.session import open_store

pytestmark = pytest.mark.slow

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "suites").glob("*.yaml"))


@dataclass
class TinyFleet:
    db_url: str
    broker_url: str
    batch_log: Path


@pytest.fixture(scope="module")
def tiny(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, oran_specs: str
) -> Iterator[TinyFleet]:
    redis_server.flush()
    tmp = tmp_path_factory.mktemp("tiny")
    fleet = TinyFleet(f"sqlite:///{tmp / 'evalq.db'}", redis_server.url, tmp / "batches.txt")
    open_store(fleet.db_url)
    worker = Worker(
        fleet.db_url,
        fleet.broker_url,
        tmp / "worker.log",
        engine="engines:recording_vllm_engine",
        env={"EVALQ_TEST_BATCH_LOG": str(fleet.batch_log)},
    )
    try:
        worker.wait_ready()
        yield fleet
    finally:
        worker.stop()


@pytest.mark.parametrize("suite", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_suite_runs_and_prints_its_summary(tiny: TinyFleet, suite: Path) -> None:
    urls = ["--database-url", tiny.db_url, "--broker-url", tiny.broker_url]
    args = ["suite", "run", str(suite), "--model", TINY, "--set", "n=2", "--timeout", "240"]
    result = CliRunner(env={"COLUMNS": "120"}).invoke(cli, [*urls, *args])
    assert result.exit_code == 0, result.output
    summary = result.output[result.output.index("suite seed-") :]
    rows = [line.split() for line in summary.splitlines() if " oran-bench/" in line]
    runs = 3 if suite.stem == "mdp-vs-fixed" else 1
    # run, id, dataset, n, strategy, episodes, failed, accuracy, cost
    assert sorted(r[4] for r in rows) == sorted(["fixed:k=3", "mdp"] * runs), summary
    assert all(r[3] == r[5] == "2" and r[6] == "0" for r in rows), "2 episodes each, none failed"


def test_dspy_evaluate_through_fleet_lm_is_batched(tiny: TinyFleet) -> None:
    dspy = pytest.importorskip("dspy")
    from evalq.integrations.dspy import FleetLM

    seen = len(tiny.batch_log.read_text().split()) if tiny.batch_log.exists() else 0
    client = Client(TINY, database_url=tiny.db_url, broker_url=tiny.broker_url, poll_s=0.05)
    lm = FleetLM(TINY, client=client, cache=False, max_tokens=8)
    devset = [
        dspy.Example(question=f"What does interface E{i} connect?", answer="x").with_inputs(
            "question"
        )
        for i in range(32)
    ]
    with dspy.context(lm=lm):
        result = dspy.Evaluate(
            devset=devset,
            metric=lambda example, prediction, trace=None: 0.0,
            num_threads=16,
            max_errors=1000,
            display_progress=False,
        )(dspy.Predict("question -> answer"))
    assert len(result.results) == 32, "every example was evaluated (random weights: noise)"
    sizes = [int(x) for x in tiny.batch_log.read_text().split()[seen:]]
    assert sizes and max(sizes) > 1, f"the engine saw batches, not single calls: {sizes}"
