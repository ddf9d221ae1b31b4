"""``evalq submit --until-decided`` refuses a rule that does not fit the run, before any run."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from evalq.cli.main import cli

BASE = ["submit", "--dataset", "hotpotqa", "--n", "4", "--model", "m"]
BASE += ["--strategy", "fixed:k=0", "--strategy", "fixed:k=1"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--until-decided"], "--until-decided needs --a and --b"),
        (["--a", "fixed:k=0", "--b", "fixed:k=1"], "go with --until-decided"),
        (["--until-decided", "--a", "mdp", "--b", "fixed:k=1"], "two of the run's strategies"),
        (["--until-decided", "--a", "fixed:k=0", "--b", "fixed:k=0"], "two of the run's"),
        (
            ["--until-decided", "--a", "fixed:k=0", "--b", "fixed:k=1", "--alpha", "1.5"],
            "--alpha must be in (0, 1)",
        ),
    ],
)
def test_bad_rule_is_one_clear_error(tmp_path: Path, extra: list[str], message: str) -> None:
    """A bad rule exits non-zero with one message and no traceback."""
    db_url = f"sqlite:///{tmp_path / 'evalq.db'}"
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "--broker-url", "redis://127.0.0.1:1/0", *BASE, *extra]
    )
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
