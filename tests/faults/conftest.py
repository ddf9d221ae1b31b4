"""Fault injection: real workers, Redis, SQLite and Postgres, and the figures they produce.

Every test here records what it injected and what it checked; the figures are printed at
the end of the session (docs/reliability.md quotes them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import PrivatePostgres

from faults.faultkit import FIGURES, Figure


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Iterator[Figure]:
    """A figure for this test; the injection is described by the test's docstring line."""
    doc = (request.function.__doc__ or "").strip().splitlines()
    fig = Figure(test=request.node.name, injected=doc[0] if doc else "")
    yield fig
    FIGURES.append(fig)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reliability figures, one line per test, and the totals."""
    if not FIGURES:
        return
    tr = terminalreporter
    tr.section("fault injection figures")
    tr.write_line(f"{'test':58} {'trials':>6} {'episodes':>8} {'lost':>5} {'dup':>5}")
    for f in FIGURES:
        tr.write_line(f"{f.test:58} {f.trials:6} {f.episodes:8} {f.lost:5} {f.duplicated:5}")
        for note in f.notes:
            tr.write_line(f"    {note}")
    total = Figure("total", "")
    for f in FIGURES:
        total.trials += f.trials
        total.episodes += f.episodes
        total.lost += f.lost
        total.duplicated += f.duplicated
    tr.write_line(
        f"{'total':58} {total.trials:6} {total.episodes:8} {total.lost:5} {total.duplicated:5}"
    )


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A Postgres cluster of this module's own, free to restart."""
    try:
        server = PrivatePostgres()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def fault_dir(tmp_path: Path) -> Path:
    """Where a test arms the fault engine's write hook."""
    path = tmp_path / "faults"
    path.mkdir()
    return path
