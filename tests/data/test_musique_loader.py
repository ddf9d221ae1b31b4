from collections import Counter

import pytest

from evalq.data import musique
from evalq.errors import UserError


def test_hop_labels_and_counts() -> None:
    questions = musique.load("all")
    assert Counter(q.difficulty for q in questions) == {"2hop": 68, "3hop": 27, "4hop": 5}
    assert len(musique.load("3hop")) == 27


def test_gold_passages_are_supporting_paragraphs_in_the_corpus() -> None:
    corpus = musique.load_corpus()
    assert len(corpus) == 1890
    questions = musique.load("all")
    assert all(q.invalid is None for q in questions)
    for question in questions:
        assert 2 <= len(question.gold_passages) <= 4
        assert all(pid in corpus for pid in question.gold_passages)
    first = questions[0]
    assert first.gold == "G. Stanley Hall"
    assert first.aliases == ("Stanley Hall",)


def test_unknown_difficulty_is_a_user_error() -> None:
    with pytest.raises(UserError, match="2hop"):
        musique.load("5hop")
