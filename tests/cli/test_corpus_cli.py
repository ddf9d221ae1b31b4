"""`evalq corpus add/list/remove`: a user's documents become a stored, indexed corpus."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support import TINY

from evalq.cli.corpus import COMMANDS
from evalq.cli.main import cli
from evalq.data.registry import load_corpus, load_questions
from evalq.db.models import Run
from evalq.db.session import open_store
from evalq.rag.retrieval import CorpusRetrievers

# Until evalq/cli/main.py registers them (add_command is idempotent).
for _command in COMMANDS:
    cli.add_command(_command)


def evalq(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})


def table_rows(output: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines()]
    return {row[0]: row for row in rows if row and row[0]}


def home() -> Path:
    return Path(os.environ["EVALQ_HOME"])


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "fronthaul.txt").write_text(
        "The fronthaul uses split option 7.2x between the O-DU and the O-RU.\n\n"
        + " ".join(f"filler{i}" for i in range(40)),
        encoding="utf-8",
    )
    (folder / "sub" / "ric.md").write_text(
        "# RIC\n\nThe near-RT RIC runs xApps over the E2 interface.\n", encoding="utf-8"
    )
    (folder / "extra.jsonl").write_text(
        json.dumps({"id": "e1", "title": "SMO", "text": "The SMO hosts the non-RT RIC."}) + "\n",
        encoding="utf-8",
    )
    (folder / "picture.png").write_bytes(b"\x89PNG\x00\x00")
    return folder


def test_add_stores_passages_meta_and_index_then_list_and_load_find_it(docs: Path) -> None:
    result = evalq("corpus", "add", "specs-a", str(docs), "--words-per-passage", "20")
    assert result.exit_code == 0, result.output
    assert "specs-a:" in result.output and "3 files" in result.output

    folder = home() / "corpora" / "specs-a"
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (folder / "passages.jsonl").read_text().splitlines()]
    assert meta["source"] == str(docs.resolve()) and meta["files"] == 3
    assert meta["passages"] == len(rows) >= 4 and meta["words_per_passage"] == 20
    assert {"e1", "specs-a:sub/ric.md:0", "specs-a:fronthaul.txt:0"} <= {r["id"] for r in rows}
    indexes = list((folder / "indexes").iterdir())
    assert len(indexes) == 1, "the BM25 index is built once, at add time"

    corpus = load_corpus("specs-a")
    assert len(corpus) == meta["passages"] and corpus.content_hash() == meta["content_hash"]
    hits = CorpusRetrievers().search("specs-a", ["which interface do xApps use"], 1, [frozenset()])
    assert hits[0][0].passage_id == "specs-a:sub/ric.md:0"
    assert list((folder / "indexes").iterdir()) == indexes, "the worker reuses the cached index"

    listing = evalq("corpus", "list")
    assert listing.exit_code == 0, listing.output
    rows_by_name = table_rows(listing.output)
    assert rows_by_name["specs-a"][1:3] == ["user", str(meta["passages"])]
    assert rows_by_name["hotpotqa"][1:3] == ["shipped", "4,858"]


def test_replace_rebuilds_and_remove_deletes(docs: Path) -> None:
    assert evalq("corpus", "add", "specs-b", str(docs)).exit_code == 0
    again = evalq("corpus", "add", "specs-b", str(docs))
    assert again.exit_code == 2 and "--replace" in again.output
    (docs / "extra.jsonl").write_text(
        json.dumps({"id": "e2", "text": "Changed text."}) + "\n", encoding="utf-8"
    )
    assert evalq("corpus", "add", "specs-b", str(docs), "--replace").exit_code == 0
    assert "e2" in load_corpus("specs-b") and "e1" not in load_corpus("specs-b")

    assert evalq("corpus", "remove", "specs-b").exit_code == 0
    assert not (home() / "corpora" / "specs-b").exists()
    gone = evalq("corpus", "remove", "specs-b")
    assert gone.exit_code == 2 and gone.output.startswith("Error: no user corpus")


def bad_binary(tmp_path: Path) -> Path:
    file = tmp_path / "data.txt"
    file.write_bytes(b"\x00\x01\x02 not text")
    return file


def bad_empty(tmp_path: Path) -> Path:
    file = tmp_path / "empty.md"
    file.write_text("  \n", encoding="utf-8")
    return file


def bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "only-pdfs"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(b"%PDF")
    return folder


def bad_jsonl(tmp_path: Path) -> Path:
    file = tmp_path / "rows.jsonl"
    file.write_text('{"id": "x", "text": "fine"}\n{"id": "y"}\n', encoding="utf-8")
    return file


@pytest.mark.parametrize(
    ("make", "name", "message"),
    [
        (lambda tmp: tmp / "missing", "c1", "does not exist"),
        (bad_binary, "c2", "is binary"),
        (bad_empty, "c3", "is empty"),
        (bad_folder, "c4", "holds no"),
        (bad_jsonl, "c5", "'text' must be a non-empty string"),
        (bad_empty, "hotpotqa", "shipped corpus"),
        (bad_empty, "../escape", "corpus name"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_stores_nothing(
    tmp_path: Path, make: object, name: str, message: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    result = evalq("corpus", "add", name, str(path))
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert message in result.output
    assert not (home() / "corpora" / name).exists()


def test_oran_bench_and_jsonl_questions_retrieve_from_a_user_corpus(
    docs: Path, tmp_path: Path, db_url: str, redis_url: str
) -> None:
    add = evalq("corpus", "add", "oran-specs-cli", str(docs), "--replace")
    assert add.exit_code == 0, add.output
    assert {q.corpus for q in load_questions("oran-bench", "easy", "oran-specs-cli")} == {
        "oran-specs-cli"
    }

    def submit(*args: str) -> Result:
        return evalq(
            *("--database-url", db_url, "--broker-url", redis_url, "submit", "--model", TINY),
            *args,
        )

    refused = submit("--dataset", "oran-bench", "--n", "5", "--strategy", "fixed:k=2")
    assert refused.exit_code == 2 and "--corpus" in refused.output
    unknown = submit("--dataset", "oran-bench", "--n", "5", "--corpus", "nope")
    assert unknown.exit_code == 2 and "no corpus 'nope'" in unknown.output
    own = submit("--dataset", "hotpotqa", "--n", "5", "--corpus", "oran-specs-cli")
    assert own.exit_code == 2 and "ships its own corpus" in own.output

    ok = submit(
        *("--dataset", "oran-bench", "--difficulty", "easy", "--n", "5"),
        *("--corpus", "oran-specs-cli", "--strategy", "fixed:k=2", "--strategy", "mdp"),
    )
    assert ok.exit_code == 0, ok.output
    file = tmp_path / "q.jsonl"
    file.write_text(json.dumps({"id": "1", "question": "Which split?", "answer": "7.2x"}) + "\n")
    jsonl = submit(f"--dataset=jsonl:{file}", "--n", "1", "--corpus", "oran-specs-cli")
    assert jsonl.exit_code == 0, jsonl.output
    with open_store(db_url).session() as s:
        configs = [run.config for run in s.query(Run).order_by(Run.id)]
    assert [c["corpus"] for c in configs] == ["oran-specs-cli", "oran-specs-cli"]
    assert [c["retriever"] for c in configs] == ["bm25", "bm25"]
