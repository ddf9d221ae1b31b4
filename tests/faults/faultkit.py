"""Helpers for the fault-injection tests: workers on the fault engine, runs, figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from click.testing import CliRunner
from support import RunCheck, Worker, check_run

from evalq.cli.main import cli

# The deterministic, slightly slow engine the workers here run (tests/engines.py).
FAULT_ENGINE = "engines:fault_engine"
MODEL = "test/faults"
# Redelivery of an unacknowledged shard after this many seconds: the safety net for a kill
# that lands between a message's delivery and the shard's claim (production keeps hours).
VISIBILITY_S = "10"


@dataclass
class Figure:
    """What one test injected, and how many episodes it checked, lost and duplicated."""

    test: str
    injected: str
    trials: int = 0
    episodes: int = 0
    lost: int = 0
    duplicated: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, check: RunCheck) -> None:
        """Count one finished run's check as one trial."""
        self.trials += 1
        self.episodes += check.expected
        self.lost += check.lost
        self.duplicated += check.duplicated


FIGURES: list[Figure] = []


def start_worker(
    db_url: str,
    broker_url: str,
    log: Path,
    *,
    name: str = "faults@test",
    env: dict[str, str] | None = None,
    concurrency: int = 2,
    model: str = MODEL,
) -> Worker:
    """A real worker on the fault engine, under a fixed node name (so restarts reconcile)."""
    return Worker(
        db_url,
        broker_url,
        log,
        model=model,
        engine=FAULT_ENGINE,
        args=("--name", name, "--concurrency", str(concurrency)),
        env={"EVALQ_VISIBILITY_TIMEOUT": VISIBILITY_S, **(env or {})},
    )


def evalq(db_url: str, broker_url: str, *args: str) -> str:
    """Run an evalq command in-process as a user types it; its output, exit code 0 asserted."""
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "--broker-url", broker_url, *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def submit(
    db_url: str,
    broker_url: str,
    *,
    n: int,
    shard_size: int,
    repeats: int = 2,
    seed: int = 0,
    model: str = MODEL,
) -> int:
    """Submit a closed-book HotpotQA run (no retrieval index to build); returns its id."""
    out = evalq(
        db_url,
        broker_url,
        "submit",
        "--dataset",
        "hotpotqa",
        "--n",
        str(n),
        "--seed",
        str(seed),
        "--model",
        model,
        "--strategy",
        "fixed:k=0",
        "--repeats",
        str(repeats),
        "--shard-size",
        str(shard_size),
    )
    return int(out.split()[1].rstrip(":"))


def checked(db_url: str, run_id: int, fig: Figure) -> RunCheck:
    """Check a finished run and add it to the figure: nothing lost, nothing twice."""
    check = check_run(db_url, run_id)
    fig.add(check)
    assert check.lost == 0, check
    assert check.duplicated == 0, check
    assert check.steps_mismatched == 0, check
    assert check.stored == check.expected, check
    return check
