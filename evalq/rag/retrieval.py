"""The retrievers a worker holds: one index per corpus and kind, built or loaded once, shared."""

from __future__ import annotations

from evalq.data.corpus import Corpus, Passage
from evalq.data.registry import index_root, load_corpus
from evalq.errors import UserError
from evalq.rag.retrievers import Hit, Retriever
from evalq.rag.retrievers.bm25 import BM25Retriever

BM25 = "bm25"
DENSE = "dense"
RETRIEVER_KINDS = (BM25, DENSE)


def check_retriever(kind: str) -> None:
    """Fail early, with one line, for an unknown kind or a missing optional extra.

    Raises:
        UserError: If ``kind`` is not a retriever evalq has, or cannot run here.
    """
    if kind not in RETRIEVER_KINDS:
        raise UserError(f"unknown retriever {kind!r}; choose from {', '.join(RETRIEVER_KINDS)}")
    if kind == DENSE:
        from evalq.rag.retrievers.dense import missing_extra

        reason = missing_extra()
        if reason is not None:
            raise UserError(reason)


def build_retriever(kind: str, corpus: Corpus, corpus_name: str | None = None) -> Retriever:
    """A retriever of ``kind`` over ``corpus``, its index loaded from or saved to the cache.

    Args:
        kind: ``bm25`` or ``dense``.
        corpus: The corpus.
        corpus_name: The registry name it was loaded by, which decides where its indexes
            are cached (a user corpus keeps them in its own folder); ``corpus.name`` if None.

    Raises:
        UserError: If the kind is unknown or cannot run here.
    """
    check_retriever(kind)
    cache_dir = index_root(corpus_name or corpus.name)
    if kind == DENSE:
        from evalq.rag.retrievers.dense import DenseRetriever

        return DenseRetriever.for_corpus(corpus, cache_dir)
    return BM25Retriever.for_corpus(corpus, cache_dir)


class CorpusRetrievers:
    """Lazily built retrievers keyed by (kind, corpus), for every episode of a worker.

    ``search`` uses BM25; ``using("dense")`` gives a view with the same caches that searches
    with another kind, so one worker serves runs with different retrievers.
    """

    def __init__(self) -> None:
        """Start empty; each corpus and index is loaded on first use."""
        self._corpora: dict[str, Corpus] = {}
        self._retrievers: dict[tuple[str, str], Retriever] = {}

    def corpus(self, name: str) -> Corpus:
        """The named corpus, loaded once."""
        if name not in self._corpora:
            self._corpora[name] = load_corpus(name)
        return self._corpora[name]

    def passage(self, corpus: str, passage_id: str) -> Passage:
        """A passage by id."""
        return self.corpus(corpus).by_id(passage_id)

    def retriever(self, corpus: str, kind: str = BM25) -> Retriever:
        """The retriever of ``kind`` over the named corpus, built once."""
        key = (kind, corpus)
        if key not in self._retrievers:
            self._retrievers[key] = build_retriever(kind, self.corpus(corpus), corpus)
        return self._retrievers[key]

    def search(
        self,
        corpus: str,
        queries: list[str],
        k: int,
        exclude: list[frozenset[str]],
        kind: str = BM25,
    ) -> list[list[Hit]]:
        """One batched search: the top-k unseen passages per query."""
        return self.retriever(corpus, kind).search(queries, k, exclude)

    def using(self, kind: str) -> RetrieverChoice:
        """A view that searches with ``kind`` (as stored in a run's config).

        Raises:
            UserError: If the kind is unknown or cannot run here.
        """
        check_retriever(kind)
        return RetrieverChoice(self, kind)


class RetrieverChoice:
    """``CorpusRetrievers`` with the retriever kind of one run fixed (what the runner gets)."""

    def __init__(self, retrievers: CorpusRetrievers, kind: str) -> None:
        """Share ``retrievers``' caches; search with ``kind``."""
        self.retrievers = retrievers
        self.kind = kind

    def passage(self, corpus: str, passage_id: str) -> Passage:
        """A passage by id."""
        return self.retrievers.passage(corpus, passage_id)

    def search(
        self, corpus: str, queries: list[str], k: int, exclude: list[frozenset[str]]
    ) -> list[list[Hit]]:
        """One batched search with this run's retriever kind."""
        return self.retrievers.search(corpus, queries, k, exclude, self.kind)
