from evalq.data import hotpotqa


def test_difficulties_split_the_500_questions() -> None:
    everything = hotpotqa.load("all")
    bridge = hotpotqa.load("bridge")
    comparison = hotpotqa.load("comparison")
    assert len(everything) == 500
    assert len(bridge) == len(comparison) == 250
    assert everything == bridge + comparison
    assert {q.difficulty for q in bridge} == {"bridge"}
    assert {q.difficulty for q in comparison} == {"comparison"}


def test_first_question_gold_and_supporting_passages() -> None:
    first = hotpotqa.load("all")[0]
    assert first.id == "5a8c7595554299585d9e36b6"
    assert first.gold == "Chief of Protocol"
    assert first.corpus == "hotpotqa"
    assert set(first.gold_passages) == {
        "hotpotqa:Shirley Temple",
        "hotpotqa:Kiss and Tell (1945 film)",
    }


def test_corpus_pools_4858_paragraphs_holding_every_gold_passage() -> None:
    corpus = hotpotqa.load_corpus()
    assert corpus.name == "hotpotqa"
    assert len(corpus) == 4858
    for question in hotpotqa.load("all"):
        assert len(question.gold_passages) == 2
        assert all(pid in corpus for pid in question.gold_passages)
    assert corpus.by_id("hotpotqa:Shirley Temple").title == "Shirley Temple"
