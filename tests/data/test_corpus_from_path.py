import json
from pathlib import Path

import pytest

from evalq.data.corpus import Corpus, Passage, corpus_from_path
from evalq.errors import UserError


def test_text_files_are_chunked_with_stable_ids(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text(" ".join(f"w{i}" for i in range(25)), encoding="utf-8")
    (docs / "sub" / "b.md").write_text("# Title\n\nshort paragraph\n", encoding="utf-8")
    (docs / "ignored.pdf").write_bytes(b"%PDF")
    corpus = corpus_from_path("spec", docs, words_per_passage=10)
    assert [p.id for p in corpus] == [
        "spec:a.txt:0",
        "spec:a.txt:1",
        "spec:a.txt:2",
        "spec:sub/b.md:0",
    ]
    assert corpus.by_id("spec:a.txt:2").text == "w20 w21 w22 w23 w24"
    assert corpus.by_id("spec:sub/b.md:0").title == "b"
    assert corpus_from_path("spec", docs, words_per_passage=10).content_hash() == (
        corpus.content_hash()
    )


def test_jsonl_rows_are_passages(tmp_path: Path) -> None:
    file = tmp_path / "p.jsonl"
    rows = [{"id": "x1", "title": "T", "text": "hello"}, {"text": "no id here"}]
    file.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    corpus = corpus_from_path("mine", file)
    assert corpus.by_id("x1") == Passage("x1", "T", "hello")
    assert corpus.by_id("mine:p.jsonl:1").text == "no id here"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bin.txt", b"abc\x00def", "binary"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("empty.md", b"  \n", "empty"),
        ("bad.jsonl", b'{"title": "no text"}\n', "'text' must be"),
    ],
)
def test_unusable_files_are_user_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message):
        corpus_from_path("c", tmp_path / name)


def test_missing_path_and_duplicate_ids_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        corpus_from_path("c", tmp_path / "nope")
    file = tmp_path / "dup.jsonl"
    file.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="duplicate passage id"):
        corpus_from_path("c", file)
    with pytest.raises(ValueError):
        Corpus("c", [Passage("a", "", "x"), Passage("a", "", "y")])
