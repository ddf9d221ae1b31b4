"""Deterministic engines for tests (test code only; never shipped as a model)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from evalq.config import EngineSettings
from evalq.data.registry import load_corpus, load_questions
from evalq.models.base import Generation, GenerationRequest
from evalq.rag.prompts import NO_INFO


@cache
def _hotpot_facts() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Question text -> (gold answer, texts of its gold passages)."""
    corpus = load_corpus("hotpotqa")
    return {
        q.text: (q.gold, tuple(corpus.by_id(p).text for p in q.gold_passages))
        for q in load_questions("hotpotqa", "all")
    }


class PassageEngine:
    """Knows an answer only when a gold passage is in the prompt.

    It stands for a model that reads its context: with the gold passage in front of it,
    it answers; without, it says it does not know. Any gap between closed-book and
    retrieval then proves that retrieved text reached the model.
    """

    calls: list[int]

    def __init__(self) -> None:
        self.calls = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls.append(len(requests))
        return [self._one(r) for r in requests]

    def _one(self, r: GenerationRequest) -> Generation:
        prompt = "\n".join(m["content"] for m in r.messages)
        match = re.search(r"Question: (.*)", prompt)
        gold, passages = _hotpot_facts().get(match.group(1) if match else "", ("", ()))
        seen = any(p and p in prompt for p in passages)
        if "search query" in prompt:
            text = "more evidence"
        elif "note what these passages say" in prompt:
            text = f"The passages say the answer is {gold}." if seen else NO_INFO
        elif "reasoning step" in prompt:
            text = "Combining the notes."
        else:
            known = seen or (gold and f"answer is {gold}" in prompt)
            text = f"Answer: {gold}" if known else "Answer: unknown"
        return Generation(text, len(prompt.split()), len(text.split()), 0.0)


class InstantEngine:
    """Returns at once: measures and tests everything around the model."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [Generation("Answer: 1", 10, 2, 0.0) for _ in requests]


def passage_engine(settings: EngineSettings) -> PassageEngine:
    """Factory for ``evalq worker --engine engines:passage_engine``."""
    return PassageEngine()


def instant_engine(settings: EngineSettings) -> InstantEngine:
    """Factory for ``evalq worker --engine engines:instant_engine``."""
    return InstantEngine()
