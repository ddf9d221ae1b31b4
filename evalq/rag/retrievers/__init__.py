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


__all__ = ["Hit", "Retriever"]
