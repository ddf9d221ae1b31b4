"""`evalq worker` refuses bad feeding and scheduling flags with one line, before any engine."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from evalq.cli.main import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--episodes-in-flight", "0"), "--episodes-in-flight must be at least 1, got 0"),
        (("--episodes-in-flight", "many"), "'many' is not a valid integer"),
        (("--concurrency", "0"), "--concurrency must be at least 1, got 0"),
        (("--shards-in-flight", "0"), "--shards-in-flight"),
        (("--scheduling-policy", "lifo"), "'lifo' is not one of 'fcfs', 'priority'"),
    ],
)
def test_bad_worker_flag_is_one_clear_error(
    sqlite_url: str, redis_url: str, args: tuple[str, ...], message: str
) -> None:
    argv = ["--database-url", sqlite_url, "--broker-url", redis_url, "worker", "--model", "m"]
    result = CliRunner().invoke(cli, [*argv, *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
