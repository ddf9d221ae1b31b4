"""MuSiQue-Ans: a 100-question TRAIN sample (from HippoRAG) over its pooled 1,890-passage corpus.

Results on it are train-sample numbers, not MuSiQue dev or test results.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

from evalq.data.corpus import Corpus, Passage
from evalq.data.question import Question
from evalq.errors import UserError

DATA_DIR = Path(__file__).parent / "files" / "musique-train-100-hipporag"
QUESTIONS_FILE = DATA_DIR / "musique_train.json.gz"
CORPUS_FILE = DATA_DIR / "musique_train_corpus.json.gz"
CORPUS_NAME = "musique"
DIFFICULTIES = ("all", "2hop", "3hop", "4hop")

# Official ids start with the hop count: "2hop__...", "3hop1__...", "4hop3__...".
_HOPS = re.compile(r"^(\d)hop")


def _read_json(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        rows: list[dict[str, Any]] = json.load(file)
    return rows


def passage_id(corpus_index: int) -> str:
    """The id of the passage at this position of the corpus file: ``musique:<index>``."""
    return f"{CORPUS_NAME}:{corpus_index}"


def load_corpus() -> Corpus:
    """The pooled, de-duplicated paragraphs of all 100 questions, in file order."""
    return Corpus(
        CORPUS_NAME,
        (
            Passage(passage_id(index), row["title"], row["text"])
            for index, row in enumerate(_read_json(CORPUS_FILE))
        ),
    )


def _hop_label(question_id: str) -> str:
    match = _HOPS.match(question_id)
    return f"{match.group(1)}hop" if match else "unknown"


def load(difficulty: str) -> list[Question]:
    """The questions: "all" or those with 2, 3 or 4 hops ("2hop", "3hop", "4hop").

    Gold passages are the supporting paragraphs (2-4 per question) as corpus ids; answers
    are graded by the official MuSiQue metric ("musique"), over the answer and its aliases.

    Raises:
        UserError: If the difficulty is unknown.
    """
    if difficulty not in DIFFICULTIES:
        raise UserError(
            f"unknown difficulty {difficulty!r} for musique; choose from " + ", ".join(DIFFICULTIES)
        )
    # Supporting paragraphs are matched to corpus passages by (title, text), as pooled.
    id_of = {
        (row["title"], row["text"]): passage_id(index)
        for index, row in enumerate(_read_json(CORPUS_FILE))
    }
    questions: list[Question] = []
    for row in _read_json(QUESTIONS_FILE):
        label = _hop_label(row["id"])
        if difficulty not in ("all", label):
            continue
        supporting = [p for p in row["paragraphs"] if p["is_supporting"]]
        gold_passages = tuple(
            id_of[key]
            for key in ((p["title"], p["paragraph_text"]) for p in supporting)
            if key in id_of
        )
        missing = len(supporting) - len(gold_passages)
        questions.append(
            Question(
                id=row["id"],
                text=row["question"],
                gold=row["answer"],
                difficulty=label,
                corpus=CORPUS_NAME,
                gold_passages=gold_passages,
                aliases=tuple(a for a in row.get("answer_aliases", []) if a != row["answer"]),
                invalid=(
                    f"{missing} supporting paragraph(s) not in the corpus" if missing else None
                ),
                metric="musique",
            )
        )
    return questions
