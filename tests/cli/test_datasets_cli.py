"""`evalq datasets`: what can be evaluated, how many questions per difficulty, with what corpus."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from evalq.cli.corpus import COMMANDS
from evalq.cli.main import cli

# Until evalq/cli/main.py registers them (add_command is idempotent).
for _command in COMMANDS:
    cli.add_command(_command)


def evalq(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})


def table_rows(output: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines()]
    return {row[0]: row for row in rows if row and row[0]}


def test_lists_every_dataset_with_counts_per_difficulty_and_its_corpus() -> None:
    result = evalq("datasets")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert rows["oran-bench"][1:] == [
        "13,952",
        "easy 1,139, medium 9,570, hard 3,243",
        "none: add --corpus NAME",
    ]
    assert rows["hotpotqa"][1:] == [
        "500",
        "bridge 250, comparison 250",
        "hotpotqa (4,858 passages)",
    ]
    assert rows["squad"][3] == "squad (2,067 passages)"
    assert rows["musique"][1] == "100"
    assert "jsonl:PATH" in result.output


def test_one_jsonl_file(tmp_path: Path) -> None:
    file = tmp_path / "q.jsonl"
    rows = [
        {"id": "1", "question": "a?", "answer": "x", "difficulty": "hard"},
        {"id": "2", "question": "b?", "answer": "y", "difficulty": "hard"},
        {"id": "3", "question": "c?", "answer": "z", "difficulty": "easy"},
    ]
    file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = evalq("datasets", f"jsonl:{file}")
    assert result.exit_code == 0, result.output
    assert table_rows(result.output)[f"jsonl:{file}"][1:3] == ["3", "hard 2, easy 1"]


def test_unknown_dataset_is_one_line_exit_2() -> None:
    result = evalq("datasets", "trivia")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error: unknown dataset")
