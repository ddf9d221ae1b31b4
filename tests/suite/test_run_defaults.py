"""A suite that names no setting runs exactly what `evalq submit` with no flags runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from evalq.cli.main import cli
from evalq.db import queries
from evalq.db.session import open_store
from evalq.scheduler.defaults import RUN_DEFAULTS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "suites"


def _invoke(db_url: str, broker_url: str, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--database-url", db_url, "--broker-url", broker_url, *args])
    assert result.exit_code == 0, result.output
    return result.output


def _stored(db_url: str) -> list[dict[str, Any]]:
    """What each run stored that a default decides, oldest first."""
    with open_store(db_url).session() as s:
        runs = sorted(queries.latest_runs(s, 10), key=lambda r: r.id)
        return [
            {
                "dataset": r.dataset,
                "difficulty": r.difficulty,
                "seed": r.seed,
                "strategies": list(r.strategies),
                "repeats": r.repeats,
                "shards": len(r.shards),
                "config": dict(r.config),
            }
            for r in runs
        ]


def test_a_suite_naming_nothing_gets_the_defaults_of_submit(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    suite = tmp_path / "bare.yaml"
    suite.write_text("runs:\n  - {n: 60, model: test/m}\n")
    _invoke(sqlite_url, redis_url, "suite", "run", str(suite), "--no-wait")
    _invoke(sqlite_url, redis_url, "submit", "--n", "60", "--model", "test/m")

    from_suite, from_submit = _stored(sqlite_url)
    assert from_suite == from_submit
    mdp = from_submit["config"]["mdp"]
    assert mdp["preset"] == RUN_DEFAULTS.mdp_preset == "multi_gpu"
    assert mdp["theta_cont"] > 0  # an MDP that can retrieve (base's never does)
    assert (mdp["k_step"], mdp["max_steps"]) == (RUN_DEFAULTS.k_step, RUN_DEFAULTS.max_steps)
    assert from_submit["config"]["generation"]["answer_tokens"] == RUN_DEFAULTS.max_tokens
    assert from_submit["config"]["retriever"] == RUN_DEFAULTS.retriever
    assert from_submit["shards"] == 2  # 60 questions in shards of 50
    assert from_submit["strategies"] == list(RUN_DEFAULTS.strategies)


def test_the_shipped_mdp_suites_run_an_mdp_that_retrieves(
    sqlite_url: str, redis_url: str, oran_specs: str
) -> None:
    _invoke(
        sqlite_url,
        redis_url,
        "suite",
        "run",
        str(EXAMPLES / "mdp-vs-fixed.yaml"),
        "--model",
        "test/m",
        "--set",
        "n=2",
        "--no-wait",
    )
    for run in _stored(sqlite_url):
        assert run["config"]["mdp"]["preset"] == "multi_gpu"
        assert run["config"]["mdp"]["theta_cont"] > 0
