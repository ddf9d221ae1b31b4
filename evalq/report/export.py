"""Export one run's episodes and steps to CSV, JSON Lines or Parquet for outside analysis."""

from __future__ import annotations

import csv
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import RowMapping, Table, select
from sqlalchemy.orm import Session

from evalq.db.models import Episode, Run, Step
from evalq.errors import UserError
from evalq.report.seed import export_seed

ExportFormat = Literal["csv", "jsonl", "parquet", "seed"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("csv", "jsonl", "parquet", "seed")

# Rows fetched per round trip: keeps memory flat on runs with millions of steps.
FETCH_ROWS = 1000


@dataclass(frozen=True)
class ExportedTable:
    """One file written: which table, where, and how many rows."""

    table: str
    path: Path
    rows: int


def _json_ready(value: Any) -> Any:
    """Datetimes as ISO 8601 text; everything else as the database returned it."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _csv_cell(value: Any) -> Any:
    """A CSV cell: lists and dicts as JSON text, None as empty, datetimes as ISO 8601."""
    if isinstance(value, list | dict):
        return json.dumps(value)
    if value is None:
        return ""
    return _json_ready(value)


def _table_rows(session: Session, table: Table, run_id: int) -> Iterator[RowMapping]:
    """The rows of ``episodes`` or ``steps`` that belong to the run, in a stable order."""
    episodes: Table = Episode.__table__  # type: ignore[assignment]
    if table is episodes:
        query = (
            select(table)
            .where(table.c.run_id == run_id)
            .order_by(table.c.question_id, table.c.strategy, table.c.repeat)
        )
    else:
        query = (
            select(table)
            .join(episodes, table.c.episode_id == episodes.c.id)
            .where(episodes.c.run_id == run_id)
            .order_by(episodes.c.question_id, episodes.c.strategy, episodes.c.repeat)
            .order_by(table.c.index)
        )
    result = session.execute(query, execution_options={"yield_per": FETCH_ROWS})
    yield from result.mappings()


def _write_csv(path: Path, columns: list[str], rows: Iterator[RowMapping]) -> int:
    """Write rows as CSV with a header; returns the row count."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row[name]) for name in columns])
            count += 1
    return count


def _write_jsonl(path: Path, columns: list[str], rows: Iterator[RowMapping]) -> int:
    """Write rows as JSON Lines, one object per row; returns the row count."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            record = {name: _json_ready(row[name]) for name in columns}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def _load_pyarrow() -> Any:
    """The pyarrow module, or a UserError saying how to get it."""
    try:
        return importlib.import_module("pyarrow")
    except ImportError as error:
        raise UserError("--format parquet needs pyarrow: pip install pyarrow") from error


def _write_parquet(path: Path, columns: list[str], rows: Iterator[RowMapping]) -> int:
    """Write rows as one Parquet file; JSON columns become JSON text so every type is flat."""
    pyarrow = _load_pyarrow()
    parquet = importlib.import_module("pyarrow.parquet")
    records = [
        {name: json.dumps(v) if isinstance(v := row[name], list | dict) else v for name in columns}
        for row in rows
    ]
    table = (
        pyarrow.Table.from_pylist(records) if records else pyarrow.table({c: [] for c in columns})
    )
    parquet.write_table(table, path)
    return len(records)


_WRITERS = {"csv": _write_csv, "jsonl": _write_jsonl, "parquet": _write_parquet}


def export_run(
    session: Session, run_id: int, out_dir: Path, output_format: ExportFormat
) -> list[ExportedTable]:
    """Write the run's episodes and steps as ``episodes.<ext>`` and ``steps.<ext>`` in out_dir.

    Every column of each table is written, under its database name; steps join back to
    episodes through ``episode_id`` = ``episodes.id``. A ``run.json`` with the run's settings
    sits beside them, so the export says what produced it.

    Format ``seed`` instead writes the seed project's JSON files under ``out_dir/results/``
    (see :mod:`evalq.report.seed`); each entry returned is then one file and its result count.

    Raises:
        UserError: The run does not exist, the format is unknown, Parquet is asked for
            without pyarrow installed, or ``seed`` for a run without MDP episodes.
    """
    if output_format == "seed":
        return [
            ExportedTable(f.kind, f.path, f.results) for f in export_seed(session, run_id, out_dir)
        ]
    if output_format not in _WRITERS:
        formats = ", ".join(EXPORT_FORMATS)
        raise UserError(f"unknown export format {output_format!r}; use one of {formats}")
    if output_format == "parquet":
        _load_pyarrow()  # fail before writing anything
    run = session.get(Run, run_id)
    if run is None:
        raise UserError(f"run {run_id} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    write = _WRITERS[output_format]
    extension = output_format
    exported: list[ExportedTable] = []
    tables: list[Table] = [Episode.__table__, Step.__table__]  # type: ignore[list-item]
    for table in tables:
        path = out_dir / f"{table.name}.{extension}"
        columns = [column.name for column in table.columns]
        rows = write(path, columns, _table_rows(session, table, run_id))
        exported.append(ExportedTable(table.name, path, rows))
    run_path = out_dir / "run.json"
    run_record = {a.key: _json_ready(getattr(run, a.key)) for a in Run.__mapper__.column_attrs}
    run_path.write_text(json.dumps(run_record, indent=2, default=str) + "\n", encoding="utf-8")
    return exported
