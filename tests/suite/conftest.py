"""A user corpus named like the examples' (``oran-specs``), and the suite commands wired."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from evalq.cli.corpus import corpus
from evalq.cli.main import cli
from evalq.cli.run import submit_cmd
from evalq.cli.seed_flags import SeedFlagsCommand, with_seed_flags
from evalq.cli.suite import suite

# Registered in evalq.cli.main by the lead; until then the tests wire them here.
if "suite" not in cli.commands:
    cli.add_command(suite)
if not isinstance(cli.commands.get("submit"), SeedFlagsCommand):
    cli.add_command(with_seed_flags(submit_cmd))

SPECS = [
    "The O-RAN fronthaul connects the O-DU and the O-RU over the open fronthaul interface.",
    "The near-RT RIC hosts xApps that control RAN functions through the E2 interface.",
    "The non-RT RIC runs rApps and guides the near-RT RIC through the A1 interface.",
    "The O1 interface carries management of O-RAN network functions by the SMO.",
]


@pytest.fixture(scope="session")
def oran_specs(tmp_path_factory: pytest.TempPathFactory, evalq_home: Path) -> str:
    """A small stand-in for the O-RAN specifications (not redistributable) as ``oran-specs``."""
    folder = tmp_path_factory.mktemp("oran-specs")
    for i, text in enumerate(SPECS):
        (folder / f"spec{i}.txt").write_text(text * 3)
    result = CliRunner().invoke(corpus, ["add", "oran-specs", str(folder), "--replace"])
    assert result.exit_code == 0, result.output
    return "oran-specs"
