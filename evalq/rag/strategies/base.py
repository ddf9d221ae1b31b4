"""The strategy seam and what every strategy shares: context, grading.

Kinds and spec parsing live in ``registry``, above this module and the strategies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from evalq.data.corpus import Passage
from evalq.data.question import Question
from evalq.models.base import ChatMessage, GenerationRequest
from evalq.rag import scoring
from evalq.rag.episode import EpisodeGenerator, EpisodeResult


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling for every model call of a run (stored with the run)."""

    answer_tokens: int = 32
    note_tokens: int = 64
    query_tokens: int = 24
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    # Benchmarks fix output lengths so that runs compare; evaluations leave it off.
    ignore_eos: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenerationConfig:
        """Rebuild from a run's stored config, ignoring unknown keys."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class EpisodeContext:
    """What an episode needs beyond its question: sampling, step costs, passage lookup."""

    generation: GenerationConfig
    c_r: float
    c_p: float
    passage: Callable[[str, str], Passage]
    repeat: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def request(self, messages: tuple[ChatMessage, ...], max_tokens: int) -> GenerationRequest:
        """A generation request with the run's sampling; repeats get their own seed."""
        g = self.generation
        return GenerationRequest(
            messages=messages,
            max_tokens=max_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
            seed=g.seed + self.repeat,
            ignore_eos=g.ignore_eos,
        )


class Strategy(Protocol):
    """A way to answer one question."""

    @property
    def name(self) -> str:
        """The spec stored on every episode, e.g. ``fixed:k=3`` or ``mdp``."""
        ...

    def episode(self, question: Question, ctx: EpisodeContext) -> EpisodeGenerator:
        """The episode's generator (see ``evalq.rag.episode``)."""
        ...


def new_result(q: Question, strategy: str, repeat: int, status: str = "ok") -> EpisodeResult:
    """An empty result carrying the question's identity."""
    return EpisodeResult(
        question_id=q.id,
        strategy=strategy,
        repeat=repeat,
        status=status,
        difficulty=q.difficulty,
        question=q.text,
        gold=q.gold,
    )


def grade(result: EpisodeResult, q: Question, generated: str) -> None:
    """Score the generated text (only the generated text, never the prompt) in place."""
    result.raw_output = generated
    if q.options is not None:
        choice = scoring.parse_option(generated, len(q.options), q.options)
        result.parsed = choice is not None
        result.answer = None if choice is None else str(choice)
        result.correct = choice is not None and str(choice) == q.gold
    else:
        # The dataset's own official metric (q.metric), over the gold answer and its aliases.
        answer = scoring.extract_short_answer(generated)
        result.answer = answer
        result.parsed = bool(answer)
        result.exact_match, result.f1 = scoring.score_answer(q.metric, answer, [q.gold, *q.aliases])
        result.correct = result.exact_match == 1.0
    if q.gold_passages:
        result.retrieval_recall = scoring.retrieval_recall(result.passage_ids, q.gold_passages)
