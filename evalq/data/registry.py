"""The datasets evalq knows by name, and the one way to load their questions and corpora."""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evalq.data import hotpotqa, jsonl, musique, oran, squad
from evalq.data.corpus import (
    INDEX_FOLDER,
    Corpus,
    read_stored_corpus,
    stored_corpora,
    stored_corpus_meta,
)
from evalq.data.question import Question
from evalq.errors import UserError

JSONL_PREFIX = "jsonl:"


@dataclass(frozen=True)
class DatasetInfo:
    """What a named dataset is and how to select from it.

    Attributes:
        name: The name users type (``--dataset``).
        description: One line: what it is, its size and licence.
        difficulties: Valid difficulty choices; the first selects every question.
        has_corpus: Whether it ships a corpus with gold passages (retrieval recall works).
    """

    name: str
    description: str
    difficulties: tuple[str, ...]
    has_corpus: bool

    @property
    def every_question(self) -> str:
        """The difficulty choice that selects every question."""
        return self.difficulties[0]


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="oran-bench",
            description=(
                "ORAN-Bench-13K: 13,952 O-RAN multiple-choice questions "
                "(1,139 easy, 9,570 medium, 3,243 hard); no corpus; MIT"
            ),
            difficulties=("mixed", "easy", "medium", "hard"),
            has_corpus=False,
        ),
        DatasetInfo(
            name="hotpotqa",
            description=(
                "HotpotQA dev distractor, 500 multi-hop questions (250 bridge, 250 comparison) "
                "over 4,858 pooled paragraphs; CC BY-SA 4.0"
            ),
            difficulties=hotpotqa.DIFFICULTIES,
            has_corpus=True,
        ),
        DatasetInfo(
            name="squad",
            description=(
                "SQuAD v1.1 dev, 10,570 single-hop questions, open-domain over its "
                "2,067 paragraphs; CC BY-SA 4.0"
            ),
            difficulties=squad.DIFFICULTIES,
            has_corpus=True,
        ),
        DatasetInfo(
            name="musique",
            description=(
                "MuSiQue-Ans TRAIN sample (not dev/test): 100 2-4 hop questions over "
                "1,890 pooled paragraphs, from HippoRAG; CC BY 4.0"
            ),
            difficulties=musique.DIFFICULTIES,
            has_corpus=True,
        ),
    )
}

_QUESTION_LOADERS: dict[str, Callable[[str], list[Question]]] = {
    "oran-bench": oran.load,
    "hotpotqa": hotpotqa.load,
    "squad": squad.load,
    "musique": musique.load,
}
_CORPUS_LOADERS: dict[str, Callable[[], Corpus]] = {
    "hotpotqa": hotpotqa.load_corpus,
    "squad": squad.load_corpus,
    "musique": musique.load_corpus,
}


def _unknown_dataset(name: str) -> UserError:
    choices = ", ".join([*DATASETS, f"{JSONL_PREFIX}<path>"])
    return UserError(f"unknown dataset {name!r}; choose from {choices}")


# Held while a dataset is parsed into the cache (see load_questions).
_LOADING = threading.Lock()


def load_questions(name: str, difficulty: str, corpus: str | None = None) -> list[Question]:
    """The questions of a dataset at one difficulty, in a deterministic order.

    Args:
        name: A name from ``DATASETS``, or ``"jsonl:<path>"`` for a user's JSON Lines file.
        difficulty: One of the dataset's difficulties (``"all"`` for a JSON Lines file).
        corpus: The corpus the questions retrieve from (a shipped or user corpus name), for
            a dataset that ships none (``jsonl:``, ``oran-bench``); None leaves them
            closed-book. Its existence is not checked here (see ``check_corpus_exists``).

    Returns:
        A fresh list (the parsed questions are cached per process).

    Raises:
        UserError: If the dataset or difficulty is unknown, the dataset ships its own
            corpus and another is named, or the file is unusable.
    """
    if name.startswith(JSONL_PREFIX):
        path = name.removeprefix(JSONL_PREFIX)
        if not path:
            raise UserError(f"give a file after {JSONL_PREFIX!r}, e.g. jsonl:questions.jsonl")
        with _LOADING:
            return list(_cached_jsonl(path, difficulty, corpus))
    info = DATASETS.get(name)
    if info is None:
        raise _unknown_dataset(name)
    if corpus is not None and info.has_corpus:
        raise UserError(
            f"{name} ships its own corpus; --corpus is for datasets without one "
            f"({', '.join(n for n, i in DATASETS.items() if not i.has_corpus)}, jsonl:<path>)"
        )
    if difficulty not in info.difficulties:
        raise UserError(
            f"unknown difficulty {difficulty!r} for {name}; choose from "
            + ", ".join(info.difficulties)
        )
    # The shards a worker starts together all ask at once: one parses, the others wait for it.
    with _LOADING:
        return list(_cached_questions(name, difficulty, corpus))


@functools.lru_cache(maxsize=32)
def _cached_questions(name: str, difficulty: str, corpus: str | None) -> tuple[Question, ...]:
    questions = _QUESTION_LOADERS[name](difficulty)
    if corpus is None:
        return tuple(questions)
    return tuple(dataclasses.replace(question, corpus=corpus) for question in questions)


@functools.lru_cache(maxsize=8)
def _cached_jsonl(path: str, difficulty: str, corpus: str | None) -> tuple[Question, ...]:
    return tuple(jsonl.load(path, difficulty, corpus))


def shipped_corpus_names() -> tuple[str, ...]:
    """The corpora that come with evalq (one per dataset that ships one)."""
    return tuple(_CORPUS_LOADERS)


def check_corpus_exists(name: str) -> None:
    """Cheaply check that a shipped or user corpus has this name (nothing is loaded).

    Raises:
        UserError: If none has.
    """
    if name in _CORPUS_LOADERS or stored_corpus_meta(name) is not None:
        return
    raise _unknown_corpus(name)


def _unknown_corpus(name: str) -> UserError:
    users = [meta.name for meta in stored_corpora()]
    return UserError(
        f"no corpus {name!r}; shipped: {', '.join(_CORPUS_LOADERS)}; "
        + (f"yours: {', '.join(users)}" if users else "add yours with `evalq corpus add NAME PATH`")
    )


def load_corpus(name: str) -> Corpus:
    """A shipped corpus ("hotpotqa", "squad", "musique") or a user's, cached per process.

    A user corpus (``evalq corpus add``) is cached by its content hash, so a long-lived
    worker picks up a corpus that was re-added with ``--replace``.

    Raises:
        UserError: If no corpus has this name, or a stored one is damaged.
    """
    if name in _CORPUS_LOADERS:
        return _cached_shipped_corpus(name)
    meta = stored_corpus_meta(name)
    if meta is None:
        raise _unknown_corpus(name)
    return _cached_user_corpus(name, meta.content_hash)


def index_root(name: str) -> Path | None:
    """Where a corpus's retrieval indexes are cached: a user corpus keeps them in its folder.

    Returns:
        ``EVALQ_HOME/corpora/<name>/indexes`` for a user corpus; None (the retrievers'
        default, ``EVALQ_HOME/indexes``) for a shipped one.
    """
    if name in _CORPUS_LOADERS:
        return None
    meta = stored_corpus_meta(name)
    return None if meta is None else meta.folder / INDEX_FOLDER


@functools.lru_cache(maxsize=4)
def _cached_shipped_corpus(name: str) -> Corpus:
    return _CORPUS_LOADERS[name]()


@functools.lru_cache(maxsize=4)
def _cached_user_corpus(name: str, content_hash: str) -> Corpus:
    meta = stored_corpus_meta(name)
    if meta is None:
        raise _unknown_corpus(name)
    return read_stored_corpus(meta)


def dataset_counts(name: str) -> dict[str, int]:
    """How many questions the dataset has per difficulty label, in first-seen order.

    Raises:
        UserError: If the dataset is unknown.
    """
    if name.startswith(JSONL_PREFIX):
        questions = load_questions(name, jsonl.ALL)
    else:
        info = DATASETS.get(name)
        if info is None:
            raise _unknown_dataset(name)
        questions = load_questions(name, info.every_question)
    return dict(Counter(question.difficulty for question in questions))
