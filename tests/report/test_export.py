"""Export: a run's episodes and steps land in files with every column and only its rows."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from evalq.cli.main import cli
from evalq.db.models import Episode, Run, Step
from evalq.db.session import open_store

EPISODE_COLUMNS = [c.name for c in Episode.__table__.columns]
STEP_COLUMNS = [c.name for c in Step.__table__.columns]


def add_run(session: Session, questions: int, steps_per_episode: int) -> int:
    """A run of two strategies over ``questions`` questions, each episode with its steps."""
    run = Run(
        dataset="oran",
        difficulty="easy",
        n=questions,
        seed=0,
        model="tiny",
        strategies=["mdp", "fixed:k=3"],
        config={"mdp": {"preset": "base"}},
        code_version="test",
    )
    session.add(run)
    session.flush()
    for i in range(questions):
        for strategy in ("mdp", "fixed:k=3"):
            episode = Episode(
                run_id=run.id,
                question_id=f"q{i}",
                strategy=strategy,
                status="ok" if i else "invalid",
                difficulty="easy",
                question='What, exactly?\nA line break and a "quote".',
                correct=i % 2 == 0 if i else None,
                passage_ids=["doc-1", "doc-2"],
                cost=0.5,
            )
            session.add(episode)
            session.flush()
            for index in range(steps_per_episode):
                session.add(
                    Step(
                        episode_id=episode.id,
                        index=index,
                        action="retrieve",
                        passage_ids=["doc-1"],
                        scores=[0.5],
                    )
                )
    return run.id


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'evalq.db'}"


@pytest.fixture
def engine(db_url: str) -> Engine:
    engine = open_store(db_url).engine  # the schema users get: migrations
    return engine


@pytest.fixture
def run_id(engine: Engine) -> int:
    with Session(engine) as session:
        other = add_run(session, questions=2, steps_per_episode=1)  # must not leak in
        run_id = add_run(session, questions=3, steps_per_episode=2)
        session.commit()
    assert other != run_id
    return run_id


def export(db_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", db_url, "export", *args])
    return result.exit_code, result.output


def test_csv_has_every_column_and_only_the_runs_rows(
    db_url: str, run_id: int, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, output = export(db_url, str(run_id), "--format", "csv", "--out", str(out))
    assert code == 0, output
    with (out / "episodes.csv").open(newline="") as handle:
        episodes = list(csv.DictReader(handle))
    with (out / "steps.csv").open(newline="") as handle:
        steps = list(csv.DictReader(handle))
    assert len(episodes) == 3 * 2 and len(steps) == 3 * 2 * 2
    assert list(episodes[0]) == EPISODE_COLUMNS and list(steps[0]) == STEP_COLUMNS
    assert {row["run_id"] for row in episodes} == {str(run_id)}
    assert {row["episode_id"] for row in steps} == {row["id"] for row in episodes}
    assert json.loads(episodes[0]["passage_ids"]) == ["doc-1", "doc-2"]
    assert episodes[0]["question"] == 'What, exactly?\nA line break and a "quote".'
    assert "episodes: 6 rows" in output and "steps: 12 rows" in output
    assert json.loads((out / "run.json").read_text())["id"] == run_id


def test_jsonl_keeps_types(db_url: str, run_id: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = export(db_url, str(run_id), "--format", "jsonl", "--out", str(out))
    assert code == 0, output
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert len(episodes) == 6 and len(steps) == 12
    assert list(episodes[0]) == EPISODE_COLUMNS and list(steps[0]) == STEP_COLUMNS
    by_status = {row["status"] for row in episodes}
    assert by_status == {"ok", "invalid"}
    assert all(row["correct"] is None for row in episodes if row["status"] == "invalid")
    assert steps[0]["scores"] == [0.5]


def test_a_run_without_episodes_exports_empty_tables_with_headers(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    with Session(engine) as session:
        run_id = add_run(session, questions=0, steps_per_episode=0)
        session.commit()
    out = tmp_path / "out"
    code, output = export(db_url, str(run_id), "--out", str(out))
    assert code == 0, output
    assert (out / "episodes.csv").read_text().strip().split(",") == EPISODE_COLUMNS


def test_unknown_run_is_one_line_exit_2(db_url: str, run_id: int, tmp_path: Path) -> None:
    code, output = export(db_url, "99", "--out", str(tmp_path / "out"))
    assert code == 2
    assert output.strip() == "Error: run 99 does not exist"
    assert not (tmp_path / "out").exists()


def test_parquet_without_pyarrow_says_how_to_get_it(
    db_url: str, run_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes ``import pyarrow`` fail
    code, output = export(db_url, str(run_id), "--format", "parquet", "--out", str(tmp_path))
    assert code == 2
    assert "pip install pyarrow" in output


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed")
def test_parquet_has_every_column_and_row(db_url: str, run_id: int, tmp_path: Path) -> None:
    import pyarrow.parquet as parquet  # type: ignore[import-untyped, import-not-found]

    code, output = export(db_url, str(run_id), "--format", "parquet", "--out", str(tmp_path))
    assert code == 0, output
    episodes = parquet.read_table(tmp_path / "episodes.parquet")
    steps = parquet.read_table(tmp_path / "steps.parquet")
    assert (episodes.num_rows, steps.num_rows) == (6, 12)
    assert episodes.column_names == EPISODE_COLUMNS and steps.column_names == STEP_COLUMNS
