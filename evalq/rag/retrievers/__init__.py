"""Retrievers: one backend per module (``bm25.py``), all behind the ``Retriever`` protocol."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol


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


__all__ = ["Hit", "Retriever", "exclusions", "fetch_size"]
