"""Retrievers: one backend per module (``bm25.py``), all behind the ``Retriever`` protocol."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from evalq.data.corpus import Corpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One retrieved passage and its retriever score (higher is better)."""

    passage_id: str
    score: float


class Retriever(Protocol):
    """Finds the passages of one corpus that best match each query."""

    def search(
        self,
        queries: Sequence[str],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        """The top ``k`` passages per query, best first, leaving out each query's ``exclude``."""
        ...


def exclusions(
    queries: Sequence[str], k: int, exclude: Sequence[Collection[str]] | None
) -> list[set[str]]:
    """Each query's seen passage ids, after checking ``k`` and ``exclude`` against ``queries``.

    Raises:
        ValueError: If ``k`` is negative or ``exclude`` does not match ``queries``.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    excluded = [set(ids) for ids in exclude] if exclude is not None else [set() for _ in queries]
    if len(excluded) != len(queries):
        raise ValueError(f"exclude has {len(excluded)} entries for {len(queries)} queries")
    return excluded


def fetch_size(corpus_size: int, k: int, excluded: Sequence[Collection[str]]) -> int:
    """How many hits to fetch so that every query keeps ``k`` after dropping its seen ones."""
    return min(corpus_size, k + max(len(ids) for ids in excluded))


def cache_matches(ids_file: Path, corpus: Corpus) -> bool:
    """Whether a cached index was built for exactly this corpus's passages, in order.

    An absent, unreadable or mismatched list of ids means the index must be rebuilt.
    """
    if not ids_file.is_file():
        return False
    try:
        stored = json.loads(ids_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("index cache %s unreadable (%s); rebuilding", ids_file.parent, error)
        return False
    if stored != [passage.id for passage in corpus.passages]:
        log.warning("index cache %s does not match corpus %s; rebuilding", ids_file.parent, corpus)
        return False
    return True


__all__ = ["Hit", "Retriever", "cache_matches", "exclusions", "fetch_size"]
