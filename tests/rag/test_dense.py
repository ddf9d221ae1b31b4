"""Dense retrieval (the optional ``dense`` extra): sentence embeddings searched with FAISS."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from engines import PassageEngine
from support import TINY

from evalq.cli.main import cli
from evalq.data.corpus import Corpus, Passage, store_corpus
from evalq.data.registry import index_root, load_corpus, load_questions
from evalq.db.models import Run
from evalq.db.session import open_store
from evalq.rag import retrieval
from evalq.rag.episode import EpisodeResult
from evalq.rag.retrievers import dense
from evalq.rag.retrievers.bm25 import BM25Retriever
from evalq.rag.runner import PendingEpisode, run_episodes
from evalq.rag.strategies import EpisodeContext, GenerationConfig, parse_strategy

MISSING = dense.missing_extra()
needs_extra = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))

TOY = Corpus(
    "toy",
    [
        Passage("a", "", "The feline dozed on the rug all afternoon."),
        Passage("b", "", "Stock markets fell sharply after the announcement."),
        Passage("c", "", "The recipe needs flour, butter and two eggs."),
    ],
)


@needs_extra
def test_finds_meaning_without_shared_words(tmp_path: Path) -> None:
    query = ["cat sleeping on a mat"]
    assert BM25Retriever.for_corpus(TOY, tmp_path).search(query, 1) == [[]], "no shared term"
    hits = dense.DenseRetriever.for_corpus(TOY, tmp_path).search(query, 2)
    assert hits[0][0].passage_id == "a"
    assert 0.0 < hits[0][1].score < hits[0][0].score <= 1.0


@needs_extra
def test_batched_queries_exclusion_and_k(tmp_path: Path) -> None:
    retriever = dense.DenseRetriever.for_corpus(TOY, tmp_path)
    queries = ["cat sleeping on a mat", "baking a cake", "share prices dropped"]
    one_by_one = [retriever.search([q], 2)[0] for q in queries]
    batched = retriever.search(queries, 2)
    for alone, together in zip(one_by_one, batched, strict=True):
        assert [h.passage_id for h in together] == [h.passage_id for h in alone]
        assert [h.score for h in together] == pytest.approx([h.score for h in alone], abs=1e-5)
    assert [h[0].passage_id for h in one_by_one] == ["a", "c", "b"]
    excluded = retriever.search(queries, 3, [{"a"}, set(), {"a", "b", "c"}])
    assert [len(h) for h in excluded] == [2, 3, 0]
    assert "a" not in [h.passage_id for h in excluded[0]]
    assert retriever.search(queries, 0) == [[], [], []]


@needs_extra
def test_embeddings_are_built_once_and_cached_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = dense.DenseRetriever.for_corpus(TOY, tmp_path)
    cached = [p for p in tmp_path.iterdir() if "-dense-" in p.name]
    assert len(cached) == 1 and (cached[0] / "index.faiss").is_file()

    def no_rebuild(*args: object) -> None:
        raise AssertionError("the cached embeddings must be loaded, not rebuilt")

    monkeypatch.setattr(dense, "_build_index", no_rebuild)
    again = dense.DenseRetriever.for_corpus(TOY, tmp_path)
    assert again.search(["baking"], 3) == first.search(["baking"], 3)
    changed = Corpus("toy", [*TOY.passages, Passage("d", "", "A new passage.")])
    monkeypatch.undo()
    dense.DenseRetriever.for_corpus(changed, tmp_path)
    assert len([p for p in tmp_path.iterdir() if "-dense-" in p.name]) == 2, "new content, new key"


@needs_extra
def test_a_run_with_the_dense_retriever_feeds_gold_passages_to_the_model() -> None:
    questions = load_questions("hotpotqa", "all")[:10]
    hotpot = load_corpus("hotpotqa")
    gold = {p for q in questions for p in q.gold_passages}
    keep = [p for p in hotpot.passages if p.id in gold] + [
        p for p in hotpot.passages if p.id not in gold
    ][:20]
    store_corpus(Corpus("dense-wiki", keep), "test", replace=True)
    own = [q.__class__(**{**q.__dict__, "corpus": "dense-wiki"}) for q in questions]

    retrievers = retrieval.CorpusRetrievers()
    chosen = retrievers.using("dense")
    strategy = parse_strategy("fixed:k=3")
    ctx = EpisodeContext(GenerationConfig(), c_r=0.1, c_p=0.1, passage=chosen.passage)

    def on_error(reason: str) -> EpisodeResult:
        raise AssertionError(reason)

    results = list(
        run_episodes(
            [PendingEpisode(strategy.episode(q, ctx), on_error) for q in own],
            PassageEngine(),
            chosen,
            concurrency=10,
        )
    )
    assert isinstance(retrievers.retriever("dense-wiki", "dense"), dense.DenseRetriever)
    assert sum(bool(r.correct) for r in results) / len(results) > 0.5
    assert sum(r.retrieval_recall or 0.0 for r in results) / len(results) > 0.3
    index_folder = index_root("dense-wiki")
    assert index_folder is not None
    assert any("-dense-" in p.name for p in index_folder.iterdir()), "cached next to BM25's"


def submit(db_url: str, redis_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        [
            *("--database-url", db_url, "--broker-url", redis_url, "submit", "--model", TINY),
            *("--dataset", "hotpotqa", "--n", "3"),
            *args,
        ],
    )
    return result.exit_code, result.output


def test_submit_stores_the_retriever_and_refuses_dense_without_the_extra(
    sqlite_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = submit(sqlite_url, redis_url, "--retriever", "bm25")
    assert code == 0, output
    monkeypatch.setattr(dense, "missing_extra", lambda: "dense retrieval needs the 'dense' extra")
    code, output = submit(sqlite_url, redis_url, "--retriever", "dense")
    assert code == 2 and output == "Error: dense retrieval needs the 'dense' extra\n"
    monkeypatch.undo()
    if MISSING is None:
        code, output = submit(sqlite_url, redis_url, "--retriever", "dense")
        assert code == 0, output
    with open_store(sqlite_url).session() as s:
        stored = [run.config["retriever"] for run in s.query(Run).order_by(Run.id)]
    assert stored == (["bm25"] if MISSING else ["bm25", "dense"])
