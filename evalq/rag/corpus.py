"""Passages that retrieval runs over: shipped corpora and corpora built from a user's files."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from evalq.errors import UserError

DEFAULT_WORDS_PER_PASSAGE = 150
CORPUS_FILE_SUFFIXES = (".txt", ".md", ".jsonl")

_BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of text.

    Attributes:
        id: Stable id, unique within its corpus (gold passages and stored steps refer to it).
        title: A short title (article or file name); may be empty.
        text: The passage text.
    """

    id: str
    title: str
    text: str


class Corpus:
    """A named, ordered collection of passages with lookup by id."""

    def __init__(self, name: str, passages: Iterable[Passage]) -> None:
        """Build a corpus.

        Args:
            name: The corpus name (questions refer to it through ``Question.corpus``).
            passages: The passages, in a deterministic order.

        Raises:
            ValueError: If two passages share an id.
        """
        self.name = name
        self.passages: list[Passage] = list(passages)
        self._by_id: dict[str, Passage] = {}
        for passage in self.passages:
            if passage.id in self._by_id:
                raise ValueError(f"corpus {name!r}: duplicate passage id {passage.id!r}")
            self._by_id[passage.id] = passage

    def __len__(self) -> int:
        return len(self.passages)

    def __iter__(self) -> Iterator[Passage]:
        return iter(self.passages)

    def __contains__(self, passage_id: object) -> bool:
        return passage_id in self._by_id

    def __repr__(self) -> str:
        return f"Corpus(name={self.name!r}, passages={len(self.passages)})"

    def by_id(self, passage_id: str) -> Passage:
        """The passage with this id.

        Raises:
            KeyError: If no passage has this id.
        """
        return self._by_id[passage_id]

    def content_hash(self) -> str:
        """A hex digest of every passage's id, title and text, in order (keys index caches)."""
        digest = hashlib.sha256()
        for passage in self.passages:
            for part in (passage.id, passage.title, passage.text):
                encoded = part.encode("utf-8")
                # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
                digest.update(len(encoded).to_bytes(8, "little"))
                digest.update(encoded)
        return digest.hexdigest()


def corpus_from_path(
    name: str, path: str | Path, words_per_passage: int = DEFAULT_WORDS_PER_PASSAGE
) -> Corpus:
    """Build a corpus from a user's file or folder of ``.txt``, ``.md`` and ``.jsonl`` files.

    Text and Markdown files are split at blank lines into paragraphs, which are packed into
    passages of about ``words_per_passage`` words (a longer paragraph is cut by words); their
    ids are ``"<name>:<file>:<chunk>"``, with ``<file>`` relative to the folder. Each JSON Lines
    row ``{"id"?, "title"?, "text"}`` is one passage as given; a row without an id gets
    ``"<name>:<file>:<line>"`` (0-based line number). A folder is read recursively in sorted
    order; files with other suffixes in it are ignored.

    Args:
        name: The corpus name.
        path: A file or a folder.
        words_per_passage: Target passage length in words for text and Markdown files.

    Returns:
        The corpus, passages in file order.

    Raises:
        UserError: If the path is missing, holds no usable file, or a file is empty, binary,
            not UTF-8, or has a malformed JSON Lines row.
    """
    if words_per_passage < 1:
        raise UserError(f"words per passage must be at least 1, got {words_per_passage}")
    root = Path(path)
    if root.is_dir():
        files = sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_FILE_SUFFIXES
        )
        if not files:
            suffixes = ", ".join(CORPUS_FILE_SUFFIXES)
            raise UserError(f"corpus folder {root} holds no {suffixes} files")
        relative_names = [p.relative_to(root).as_posix() for p in files]
    elif root.is_file():
        if root.suffix.lower() not in CORPUS_FILE_SUFFIXES:
            suffixes = ", ".join(CORPUS_FILE_SUFFIXES)
            raise UserError(f"corpus file {root} is not one of {suffixes}")
        files = [root]
        relative_names = [root.name]
    else:
        raise UserError(f"corpus path {root} does not exist")

    passages: list[Passage] = []
    for file, relative_name in zip(files, relative_names, strict=True):
        text = _read_text_file(file)
        if file.suffix.lower() == ".jsonl":
            passages.extend(_jsonl_passages(name, file, relative_name, text))
        else:
            title = file.stem
            for index, chunk in enumerate(_chunk_words(text, words_per_passage)):
                passages.append(Passage(f"{name}:{relative_name}:{index}", title, chunk))
    try:
        return Corpus(name, passages)
    except ValueError as error:
        raise UserError(str(error)) from None


def _read_text_file(file: Path) -> str:
    """The file's text; a clear error for binary, undecodable or empty files."""
    try:
        data = file.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read corpus file {file}: {error.strerror}") from None
    # A NUL byte never appears in text files; UTF-8 decoding alone accepts some binaries.
    if b"\x00" in data:
        raise UserError(f"corpus file {file} is binary, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(
            f"corpus file {file} is not UTF-8 text (bad byte at offset {error.start})"
        ) from None
    if not text.strip():
        raise UserError(f"corpus file {file} is empty")
    return text


def _jsonl_passages(name: str, file: Path, relative_name: str, text: str) -> list[Passage]:
    """One passage per JSON Lines row; blank lines are skipped."""
    passages: list[Passage] = []
    for line_no, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        where = f"{file}:{line_no + 1}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object with a 'text' field")
        passage_text = row.get("text")
        if not isinstance(passage_text, str) or not passage_text.strip():
            raise UserError(f"{where}: 'text' must be a non-empty string")
        passage_id = row.get("id", f"{name}:{relative_name}:{line_no}")
        if isinstance(passage_id, int) and not isinstance(passage_id, bool):
            passage_id = str(passage_id)
        if not isinstance(passage_id, str) or not passage_id:
            raise UserError(f"{where}: 'id' must be a non-empty string")
        title = row.get("title", "")
        if not isinstance(title, str):
            raise UserError(f"{where}: 'title' must be a string")
        passages.append(Passage(passage_id, title, passage_text.strip()))
    return passages


def _chunk_words(text: str, words_per_passage: int) -> list[str]:
    """Pack blank-line separated paragraphs into chunks of about ``words_per_passage`` words."""
    chunks: list[str] = []
    current: list[str] = []
    for paragraph in _BLANK_LINES.split(text):
        words = paragraph.split()
        if not words:
            continue
        # Close the chunk rather than let a paragraph push it far past the target.
        if current and len(current) + len(words) > words_per_passage:
            chunks.append(" ".join(current))
            current = []
        current.extend(words)
        while len(current) >= words_per_passage:
            chunks.append(" ".join(current[:words_per_passage]))
            current = current[words_per_passage:]
    if current:
        chunks.append(" ".join(current))
    return chunks
