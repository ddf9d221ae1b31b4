"""Passages that retrieval runs over: shipped corpora and corpora built from a user's files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from evalq.config import evalq_home
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


# --- Users' corpora, stored under EVALQ_HOME/corpora/<name>/ -------------------------------

PASSAGES_FILE = "passages.jsonl"
META_FILE = "meta.json"
INDEX_FOLDER = "indexes"
_CORPUS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class StoredCorpus:
    """What ``meta.json`` says about a user's stored corpus.

    Attributes:
        name: The corpus name (``--corpus NAME``).
        source: The absolute file or folder it was built from.
        files: How many files it was built from.
        passages: How many passages it holds.
        words: Words over all passages.
        words_per_passage: The chunk size text and Markdown files were cut to.
        content_hash: ``Corpus.content_hash()`` of its passages (keys its index caches).
        created_at: When it was added (ISO 8601, UTC).
        folder: Where it is stored.
    """

    name: str
    source: str
    files: int
    passages: int
    words: int
    words_per_passage: int
    content_hash: str
    created_at: str
    folder: Path

    def to_json(self) -> dict[str, object]:
        """The ``meta.json`` content (the folder is where it lives, not part of it)."""
        data = dataclasses.asdict(self)
        del data["folder"]
        return data


def corpora_root() -> Path:
    """The folder that holds every user corpus: ``EVALQ_HOME/corpora``."""
    return evalq_home() / "corpora"


def check_corpus_name(name: str) -> str:
    """The name, if it can name a corpus folder (letters, digits, ``.``, ``_``, ``-``).

    Raises:
        UserError: If it cannot.
    """
    if not _CORPUS_NAME.match(name):
        raise UserError(
            f"corpus name {name!r} must start with a letter or digit and hold only letters, "
            "digits, '.', '_' or '-' (64 characters at most)"
        )
    return name


def count_source_files(path: str | Path) -> int:
    """How many files ``corpus_from_path`` reads at ``path`` (1 for a file)."""
    root = Path(path)
    if root.is_dir():
        return sum(
            1 for p in root.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_FILE_SUFFIXES
        )
    return 1


def store_corpus(
    corpus: Corpus,
    source: str | Path,
    *,
    words_per_passage: int = DEFAULT_WORDS_PER_PASSAGE,
    replace: bool = False,
    root: Path | None = None,
) -> StoredCorpus:
    """Write a corpus to ``<root>/<name>/`` as ``passages.jsonl`` and ``meta.json``.

    The folder is written under a temporary name and renamed into place, so a reader sees
    the old corpus or the new one, never half of one.

    Args:
        corpus: The corpus; its name names the folder.
        source: The file or folder it was built from (recorded in ``meta.json``).
        words_per_passage: The chunk size it was built with (recorded).
        replace: Overwrite a stored corpus of the same name.
        root: The parent folder; ``corpora_root()`` when None.

    Returns:
        The stored corpus's metadata.

    Raises:
        UserError: If the name is unusable or taken (without ``replace``), or the disk refuses.
    """
    name = check_corpus_name(corpus.name)
    parent = root if root is not None else corpora_root()
    folder = parent / name
    if folder.exists() and not replace:
        raise UserError(f"corpus {name!r} already exists; add --replace to rebuild it")
    if len(corpus) == 0:
        raise UserError(f"corpus {name!r} has no passages")
    stored = StoredCorpus(
        name=name,
        source=str(Path(source).resolve()),
        files=count_source_files(source),
        passages=len(corpus),
        words=sum(len(p.text.split()) for p in corpus),
        words_per_passage=words_per_passage,
        content_hash=corpus.content_hash(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        folder=folder,
    )
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=parent))
        with (staging / PASSAGES_FILE).open("w", encoding="utf-8") as out:
            for passage in corpus:
                row = {"id": passage.id, "title": passage.title, "text": passage.text}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        (staging / META_FILE).write_text(json.dumps(stored.to_json(), indent=2), encoding="utf-8")
        old: Path | None = None
        if folder.exists():
            # Moved aside, not deleted first: a failed swap must not lose the old corpus.
            old = Path(tempfile.mkdtemp(prefix=f".{name}-old-", dir=parent))
            folder.rename(old / name)
        staging.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        raise UserError(f"cannot store corpus {name!r} in {parent}: {error}") from None
    return stored


def stored_corpus_meta(name: str, root: Path | None = None) -> StoredCorpus | None:
    """The metadata of a stored user corpus, or None when no corpus has this name.

    Raises:
        UserError: If the corpus folder exists but its ``meta.json`` is unreadable.
    """
    if not _CORPUS_NAME.match(name):
        return None
    folder = (root if root is not None else corpora_root()) / name
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        return None
    try:
        data = json.loads(meta_file.read_text(encoding="utf-8"))
        return StoredCorpus(folder=folder, **data)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"corpus {name!r}: unreadable {meta_file} ({error})") from None


def stored_corpora(root: Path | None = None) -> list[StoredCorpus]:
    """Every stored user corpus, by name."""
    parent = root if root is not None else corpora_root()
    if not parent.is_dir():
        return []
    found = (stored_corpus_meta(p.name, parent) for p in sorted(parent.iterdir()) if p.is_dir())
    return [meta for meta in found if meta is not None]


def read_stored_corpus(meta: StoredCorpus) -> Corpus:
    """The passages of a stored corpus, checked against its recorded content hash.

    Raises:
        UserError: If ``passages.jsonl`` is missing, malformed or no longer matches its hash.
    """
    file = meta.folder / PASSAGES_FILE
    try:
        with file.open(encoding="utf-8") as lines:
            passages = [Passage(**json.loads(line)) for line in lines if line.strip()]
        corpus = Corpus(meta.name, passages)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(
            f"corpus {meta.name!r}: unreadable {file} ({error}); run `evalq corpus add "
            f"{meta.name} {meta.source} --replace`"
        ) from None
    if corpus.content_hash() != meta.content_hash:
        raise UserError(
            f"corpus {meta.name!r}: {file} was changed after it was added; run "
            f"`evalq corpus add {meta.name} {meta.source} --replace`"
        )
    return corpus


def remove_stored_corpus(name: str, root: Path | None = None) -> None:
    """Delete a stored user corpus and its cached indexes.

    Raises:
        UserError: If no user corpus has this name.
    """
    meta = stored_corpus_meta(name, root)
    if meta is None:
        raise UserError(f"no user corpus {name!r}; see `evalq corpus list`")
    shutil.rmtree(meta.folder)
