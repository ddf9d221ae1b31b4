"""BM25 retrieval over a corpus with ``bm25s``, its index cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

# bm25s runs a JAX op when it is imported if JAX is installed; on a GPU host JAX would then
# take the GPU (it preallocates 75% of its memory) before vLLM starts. Retrieval top-k needs
# no accelerator, so JAX stays on the CPU unless the user chose otherwise.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bm25s

from evalq.config import evalq_home
from evalq.data.corpus import Corpus
from evalq.errors import UserError
from evalq.rag.retrievers import Hit, cache_matches, exclusions, fetch_size

log = logging.getLogger(__name__)
# bm25s sets its own logger to DEBUG on import; users should not see its chatter.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# Part of the cache key: change it whenever tokenisation or index parameters change.
_INDEX_FORMAT = "bm25s-lucene-k1=1.5-b=0.75-lower-stopwords=en-v1"
_STOPWORDS = "en"
_PASSAGE_IDS_FILE = "passage_ids.json"


def _tokenize(texts: list[str]) -> Any:
    """Lower-cased word tokens without English stopwords (the same for passages and queries)."""
    return bm25s.tokenize(
        texts, lower=True, stopwords=_STOPWORDS, return_ids=False, show_progress=False
    )


def default_index_root() -> Path:
    """The folder that holds one cached index per corpus version."""
    return evalq_home() / "indexes"


def index_dir_for(corpus: Corpus, cache_dir: str | Path | None = None) -> Path:
    """The folder a corpus's index is cached in: ``<cache_dir>/<corpus name>-<content hash>``.

    Args:
        corpus: The corpus.
        cache_dir: The parent folder; ``default_index_root()`` when None.
    """
    root = Path(cache_dir) if cache_dir is not None else default_index_root()
    key = hashlib.sha256(f"{_INDEX_FORMAT}\n{corpus.content_hash()}".encode()).hexdigest()
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", corpus.name) or "corpus"
    return root / f"{safe_name}-{key[:16]}"


class BM25Retriever:
    """Top-k BM25 search over one corpus; passage titles are indexed with their text."""

    def __init__(self, corpus: Corpus, index: Any) -> None:
        """Wrap a built ``bm25s.BM25`` index whose documents are ``corpus.passages`` in order.

        Prefer ``BM25Retriever.for_corpus``, which builds or loads the index.
        """
        self.corpus = corpus
        self._index = index
        self._passage_ids = [passage.id for passage in corpus.passages]

    @classmethod
    def for_corpus(cls, corpus: Corpus, cache_dir: str | Path | None = None) -> BM25Retriever:
        """A retriever for ``corpus``, loading its cached index or building and caching it.

        Args:
            corpus: The corpus to search.
            cache_dir: Parent folder of the index cache; ``EVALQ_HOME/indexes`` when None.
                The index lives in ``index_dir_for(corpus, cache_dir)``, so a changed
                corpus never loads a stale index.

        Raises:
            UserError: If the corpus has no passages.
        """
        if len(corpus) == 0:
            raise UserError(f"corpus {corpus.name!r} has no passages to search")
        index_dir = index_dir_for(corpus, cache_dir)
        index = _load_index(index_dir, corpus)
        if index is None:
            index = _build_index(corpus)
            _save_index(index, index_dir, corpus)
        return cls(corpus, index)

    def search(
        self,
        queries: Sequence[str],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        """The top ``k`` passages for each query, best first, in one batched call.

        Passages that share no term with a query (score 0) are never returned, so a query
        can get fewer than ``k`` hits.

        Args:
            queries: The query texts.
            k: Hits wanted per query; 0 gives empty lists.
            exclude: Per query, passage ids already seen; they are skipped, so each list
                holds the top ``k`` unseen passages.

        Returns:
            One list of hits per query, in query order.

        Raises:
            ValueError: If ``k`` is negative or ``exclude`` does not match ``queries``.
        """
        excluded = exclusions(queries, k, exclude)
        if k == 0 or not queries:
            return [[] for _ in queries]
        n_fetch = fetch_size(len(self._passage_ids), k, excluded)
        documents, scores = self._index.retrieve(
            _tokenize(list(queries)),
            k=n_fetch,
            show_progress=False,
            n_threads=0,
            backend_selection="numpy",
        )
        results: list[list[Hit]] = []
        for doc_row, score_row, seen in zip(documents, scores, excluded, strict=True):
            # Ties broken by corpus order, so a result never depends on the batch it was in.
            ranked = sorted(
                zip(doc_row.tolist(), score_row.tolist(), strict=True),
                key=lambda pair: (-pair[1], pair[0]),
            )
            hits: list[Hit] = []
            for doc_index, score in ranked:
                passage_id = self._passage_ids[doc_index]
                if score <= 0.0 or passage_id in seen:
                    continue
                hits.append(Hit(passage_id, float(score)))
                if len(hits) == k:
                    break
            results.append(hits)
        return results


def _build_index(corpus: Corpus) -> Any:
    """A fresh BM25 index over every passage's title and text."""
    texts = [
        f"{passage.title}\n{passage.text}" if passage.title else passage.text
        for passage in corpus.passages
    ]
    index = bm25s.BM25()
    index.index(_tokenize(texts), show_progress=False)
    return index


def _load_index(index_dir: Path, corpus: Corpus) -> Any | None:
    """The cached index, or None when absent, unreadable or built for other passages."""
    if not cache_matches(index_dir / _PASSAGE_IDS_FILE, corpus):
        return None
    try:
        return bm25s.BM25.load(str(index_dir), load_corpus=False, show_progress=False)
    except (OSError, ValueError) as error:
        log.warning("index cache %s unreadable (%s); rebuilding", index_dir, error)
        return None


def _save_index(index: Any, index_dir: Path, corpus: Corpus) -> None:
    """Write the index to ``index_dir`` atomically; a failure only costs a rebuild later."""
    try:
        index_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}-", dir=index_dir.parent))
    except OSError as error:
        log.warning("cannot cache BM25 index in %s: %s", index_dir.parent, error)
        return
    try:
        index.save(str(staging), show_progress=False)
        ids = [passage.id for passage in corpus.passages]
        # Stored to check, on load, that the index rows line up with this corpus's passages.
        (staging / _PASSAGE_IDS_FILE).write_text(json.dumps(ids), encoding="utf-8")
        staging.rename(index_dir)
    except OSError as error:
        # Another process finished the same index first, or the disk refused; both are fine.
        if not index_dir.is_dir():
            log.warning("cannot cache BM25 index in %s: %s", index_dir, error)
        shutil.rmtree(staging, ignore_errors=True)
