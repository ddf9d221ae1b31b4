"""The retrievers a worker holds: one index per corpus, built or loaded once, then shared."""

from __future__ import annotations

from evalq.data.registry import load_corpus
from evalq.rag.corpus import Corpus, Passage
from evalq.rag.retrievers import Hit
from evalq.rag.retrievers.bm25 import BM25Retriever


class CorpusRetrievers:
    """Lazily built BM25 retrievers keyed by corpus name, for every episode of a worker."""

    def __init__(self) -> None:
        """Start empty; each corpus is loaded on its first search."""
        self._corpora: dict[str, Corpus] = {}
        self._retrievers: dict[str, BM25Retriever] = {}

    def corpus(self, name: str) -> Corpus:
        """The named corpus, loaded once."""
        if name not in self._corpora:
            self._corpora[name] = load_corpus(name)
        return self._corpora[name]

    def passage(self, corpus: str, passage_id: str) -> Passage:
        """A passage by id."""
        return self.corpus(corpus).by_id(passage_id)

    def search(
        self, corpus: str, queries: list[str], k: int, exclude: list[frozenset[str]]
    ) -> list[list[Hit]]:
        """One batched search: the top-k unseen passages per query."""
        if corpus not in self._retrievers:
            self._retrievers[corpus] = BM25Retriever.for_corpus(self.corpus(corpus))
        return self._retrievers[corpus].search(queries, k, exclude)
