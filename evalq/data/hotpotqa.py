"""HotpotQA dev (distractor), 500-question subset, over its pooled paragraphs as the corpus."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from evalq.data.corpus import Corpus, Passage
from evalq.data.question import Question
from evalq.errors import UserError

DATA_FILE = (
    Path(__file__).parent / "files" / "hotpotqa-dev-500" / "hotpotqa_dev_distractor_500.jsonl.gz"
)
CORPUS_NAME = "hotpotqa"

# The file holds the 250 bridge questions, then the 250 comparison ones (see its README).
_BLOCKS: dict[str, range] = {"bridge": range(0, 250), "comparison": range(250, 500)}
DIFFICULTIES = ("all", *_BLOCKS)


def passage_id(title: str) -> str:
    """The corpus id of the paragraph with this title (titles are unique in the pool)."""
    return f"{CORPUS_NAME}:{title}"


def _rows() -> list[dict[str, Any]]:
    with gzip.open(DATA_FILE, "rt", encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def _question_type(row_index: int) -> str:
    for label, rows in _BLOCKS.items():
        if row_index in rows:
            return label
    raise ValueError(f"HotpotQA row {row_index} is outside the 500-question subset")


def load(difficulty: str) -> list[Question]:
    """The questions: "all" (500), "bridge" (rows 0-249) or "comparison" (rows 250-499).

    Each question's difficulty label is its type, "bridge" or "comparison"; its gold
    passages are its two supporting paragraphs in the "hotpotqa" corpus. Answers are graded
    by the official HotpotQA metric ("hotpotqa").

    Raises:
        UserError: If the difficulty is unknown.
    """
    if difficulty not in DIFFICULTIES:
        raise UserError(
            f"unknown difficulty {difficulty!r} for hotpotqa; choose from "
            + ", ".join(DIFFICULTIES)
        )
    questions: list[Question] = []
    for row_index, row in enumerate(_rows()):
        question_type = _question_type(row_index)
        if difficulty != "all" and question_type != difficulty:
            continue
        questions.append(
            Question(
                id=row["question_id"],
                text=row["question_text"],
                gold=row["answers_objects"][0]["spans"][0],
                difficulty=question_type,
                corpus=CORPUS_NAME,
                gold_passages=tuple(
                    passage_id(context["title"])
                    for context in row["contexts"]
                    if context["is_supporting"]
                ),
                metric="hotpotqa",
            )
        )
    return questions


def load_corpus() -> Corpus:
    """Every question's context paragraphs, pooled and de-duplicated by title (4,858)."""
    passages: dict[str, Passage] = {}
    for row in _rows():
        for context in row["contexts"]:
            pid = passage_id(context["title"])
            if pid not in passages:
                # The IRCoT layout joins sentences with two spaces; one reads better in prompts.
                text = " ".join(context["paragraph_text"].split())
                passages[pid] = Passage(pid, context["title"], text)
    return Corpus(CORPUS_NAME, passages.values())
