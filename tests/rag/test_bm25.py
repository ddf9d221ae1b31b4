from pathlib import Path

import bm25s
import pytest

from evalq.data import hotpotqa
from evalq.data.corpus import Corpus, Passage
from evalq.rag.retrievers import Hit
from evalq.rag.retrievers.bm25 import BM25Retriever, index_dir_for


@pytest.fixture(scope="module")
def hotpot_retriever(tmp_path_factory: pytest.TempPathFactory) -> BM25Retriever:
    return BM25Retriever.for_corpus(hotpotqa.load_corpus(), tmp_path_factory.mktemp("indexes"))


def _small_corpus() -> Corpus:
    return Corpus(
        "tiny",
        [
            Passage("p0", "Cats", "Cats purr and sleep in the sun."),
            Passage("p1", "Dogs", "Dogs bark at the mail carrier."),
            Passage("p2", "Cats and dogs", "Cats and dogs can live together."),
            Passage("p3", "Fish", "Fish swim in water."),
        ],
    )


def test_keyword_query_finds_the_gold_passage(hotpot_retriever: BM25Retriever) -> None:
    (hits,) = hotpot_retriever.search(["Shirley Temple Chief of Protocol"], k=5)
    assert "hotpotqa:Shirley Temple" in [hit.passage_id for hit in hits]
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_gold_recall_over_the_first_questions(hotpot_retriever: BM25Retriever) -> None:
    questions = hotpotqa.load("all")[:50]
    results = hotpot_retriever.search([q.text for q in questions], k=10)
    found = sum(
        any(hit.passage_id in q.gold_passages for hit in hits)
        for q, hits in zip(questions, results, strict=True)
    )
    assert found >= 40


def test_batched_search_equals_per_query_search(hotpot_retriever: BM25Retriever) -> None:
    queries = [q.text for q in hotpotqa.load("comparison")[:20]]
    top = hotpot_retriever.search(queries, k=3)
    # Odd queries have seen their top hits, so the batch mixes exclude sizes 0 and 3.
    exclude = [{hit.passage_id for hit in hits} if i % 2 else set() for i, hits in enumerate(top)]
    batched = hotpot_retriever.search(queries, k=4, exclude=exclude)
    single = [
        hotpot_retriever.search([query], k=4, exclude=[seen])[0]
        for query, seen in zip(queries, exclude, strict=True)
    ]
    assert batched == single
    for hits, seen in zip(batched, exclude, strict=True):
        assert len(hits) == 4
        assert not seen & {hit.passage_id for hit in hits}


def test_exclude_returns_the_next_unseen_passages(tmp_path: Path) -> None:
    retriever = BM25Retriever.for_corpus(_small_corpus(), tmp_path)
    (top,) = retriever.search(["cats"], k=2)
    assert [hit.passage_id for hit in top] == ["p0", "p2"]
    (rest,) = retriever.search(["cats"], k=2, exclude=[{"p0"}])
    assert [hit.passage_id for hit in rest] == ["p2"]  # no other passage mentions cats
    (dogs,) = retriever.search(["dogs"], k=1, exclude=[["p1"]])
    assert [hit.passage_id for hit in dogs] == ["p2"]


def test_k_zero_and_no_matching_terms_give_empty_lists(tmp_path: Path) -> None:
    retriever = BM25Retriever.for_corpus(_small_corpus(), tmp_path)
    assert retriever.search(["cats", "dogs"], k=0) == [[], []]
    assert retriever.search(["zebra quantum"], k=3) == [[]]
    assert retriever.search([], k=3) == []
    with pytest.raises(ValueError):
        retriever.search(["cats"], k=1, exclude=[])


def test_second_retriever_loads_the_cached_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _small_corpus()
    first = BM25Retriever.for_corpus(corpus, tmp_path)
    assert (index_dir_for(corpus, tmp_path) / "passage_ids.json").is_file()

    def refuse_to_index(*args: object, **kwargs: object) -> None:
        raise AssertionError("the index should have been loaded from the cache")

    monkeypatch.setattr(bm25s.BM25, "index", refuse_to_index)
    second = BM25Retriever.for_corpus(corpus, tmp_path)
    assert second.search(["dogs bark"], k=2) == first.search(["dogs bark"], k=2)
    assert isinstance(second.search(["fish"], k=1)[0][0], Hit)


def test_changed_corpus_gets_its_own_index(tmp_path: Path) -> None:
    corpus = _small_corpus()
    changed = Corpus("tiny", [*corpus.passages, Passage("p4", "Birds", "Birds sing.")])
    assert index_dir_for(corpus, tmp_path) != index_dir_for(changed, tmp_path)
    (hits,) = BM25Retriever.for_corpus(changed, tmp_path).search(["birds"], k=1)
    assert hits[0].passage_id == "p4"
