"""Suite files: checked before anything is submitted; runs submitted with their GPU requests."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from evalq.cli.main import cli
from evalq.db import queries
from evalq.db.session import open_store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "suites"


def _suite(db_url: str, broker_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "--broker-url", broker_url, "suite", "run", *args]
    )
    return result.exit_code, result.output


def test_a_suite_is_submitted_with_overrides_and_gpu_requests(
    sqlite_url: str, redis_url: str, oran_specs: str
) -> None:
    suite = str(EXAMPLES / "mdp-vs-fixed.yaml")
    code, output = _suite(
        sqlite_url, redis_url, suite, "--model", "test/m", "--set", "n=2", "--no-wait"
    )
    assert code == 0, output
    assert "serve it with: evalq fleet --model test/m --gpus 0,1,2,3 --mode data_parallel" in output
    with open_store(sqlite_url).session() as s:
        runs = sorted(queries.latest_runs(s, 10), key=lambda r: r.id)
        assert [(r.name, r.difficulty, r.n, r.seed) for r in runs] == [
            ("easy", "easy", 2, 42),
            ("medium", "medium", 2, 42),
            ("hard", "hard", 2, 42),
        ]
        assert all(r.strategies == ["mdp", "fixed:k=3"] for r in runs)
        assert all(r.config["requested_gpus"]["gpu_ids"] == [0, 1, 2, 3] for r in runs)


def test_a_bad_suite_is_one_line_exit_2_and_submits_nothing(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs:\n  - {n: 5, model: m}\n  - {n: 5, model: m, strategy: mdp}\n")
    code, output = _suite(sqlite_url, redis_url, str(bad))
    assert code == 2
    assert output.startswith(f"Error: {bad}: run 2: unknown key 'strategy'; known: name, ")
    bad.write_text("runs: [")
    code, output = _suite(sqlite_url, redis_url, str(bad))
    assert code == 2 and output.startswith(f"Error: suite {bad} is not valid YAML"), output
    code, output = _suite(sqlite_url, redis_url, str(EXAMPLES / "quick.yaml"), "--set", "n")
    assert (code, output.strip()) == (2, "Error: --set expects KEY=VALUE, got 'n'")
    with open_store(sqlite_url).session() as s:
        assert queries.latest_runs(s, 5) == []
