"""SQuAD v1.1 dev as open-domain QA: every question searches all 2,067 dev paragraphs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from evalq.data.corpus import Corpus, Passage
from evalq.data.question import Question
from evalq.errors import UserError

DATA_FILE = Path(__file__).parent / "files" / "squad-dev" / "dev-v1.1.json.gz"
CORPUS_NAME = "squad"
DIFFICULTIES = ("all",)


def passage_id(article_index: int, paragraph_index: int) -> str:
    """The corpus id of one paragraph: ``squad:<article index>:<paragraph index>``."""
    return f"{CORPUS_NAME}:{article_index}:{paragraph_index}"


def _articles() -> list[dict[str, Any]]:
    with gzip.open(DATA_FILE, "rt", encoding="utf-8") as file:
        articles: list[dict[str, Any]] = json.load(file)["data"]
    return articles


def _title(article: dict[str, Any]) -> str:
    return str(article["title"]).replace("_", " ")


def load(difficulty: str) -> list[Question]:
    """All 10,570 questions (difficulty "all"), in file order.

    Gold is the first reference answer, aliases the other distinct ones; the gold passage
    is the question's own paragraph in the "squad" corpus. Answers are graded by the
    official SQuAD v1.1 metric ("squad").

    Raises:
        UserError: If the difficulty is not "all".
    """
    if difficulty not in DIFFICULTIES:
        raise UserError(f"unknown difficulty {difficulty!r} for squad; choose from all")
    questions: list[Question] = []
    for article_index, article in enumerate(_articles()):
        for paragraph_index, paragraph in enumerate(article["paragraphs"]):
            gold_passage = passage_id(article_index, paragraph_index)
            for qa in paragraph["qas"]:
                answers = [answer["text"] for answer in qa["answers"]]
                gold = answers[0] if answers else ""
                aliases = tuple(dict.fromkeys(a for a in answers[1:] if a != gold))
                questions.append(
                    Question(
                        id=qa["id"],
                        text=qa["question"],
                        gold=gold,
                        difficulty="all",
                        corpus=CORPUS_NAME,
                        gold_passages=(gold_passage,),
                        aliases=aliases,
                        invalid=None if answers else "no reference answer",
                        metric="squad",
                    )
                )
    return questions


def load_corpus() -> Corpus:
    """Every dev paragraph, titled by its article, in file order."""
    return Corpus(
        CORPUS_NAME,
        (
            Passage(
                passage_id(article_index, paragraph_index), _title(article), paragraph["context"]
            )
            for article_index, article in enumerate(_articles())
            for paragraph_index, paragraph in enumerate(article["paragraphs"])
        ),
    )
