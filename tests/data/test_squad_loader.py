from evalq.data import squad


def test_questions_answers_and_gold_paragraph() -> None:
    questions = squad.load("all")
    assert len(questions) == 10570
    assert len({q.id for q in questions}) == 10570
    first = questions[0]
    assert first.id == "56be4db0acb8001400a502ec"
    assert first.gold == "Denver Broncos"
    assert first.gold not in first.aliases
    assert first.gold_passages == ("squad:0:0",)
    assert all(len(set(q.aliases)) == len(q.aliases) for q in questions)


def test_corpus_holds_every_paragraph_and_its_answers() -> None:
    corpus = squad.load_corpus()
    assert len(corpus) == 2067
    for question in squad.load("all")[:200]:
        (gold_passage,) = question.gold_passages
        assert question.gold in corpus.by_id(gold_passage).text
