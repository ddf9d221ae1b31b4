"""Fixed-k: retrieve the top k passages for the question, then answer once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalq.data.question import Question
from evalq.errors import UserError
from evalq.models.base import Generation
from evalq.rag.episode import EpisodeGenerator, RetrievalRequest, Retrieved, StepRecord
from evalq.rag.prompts import answer_messages
from evalq.rag.strategies.base import EpisodeContext, grade, new_result


@dataclass(frozen=True)
class FixedK:
    """Top-k retrieval with one answer call; ``k = 0`` is closed-book."""

    k: int

    @property
    def name(self) -> str:
        """The spec stored on each episode, e.g. ``fixed:k=3``."""
        return f"fixed:k={self.k}"

    @classmethod
    def from_spec(cls, spec: str, opts: dict[str, str], run_config: dict[str, Any]) -> FixedK:
        """The ``fixed`` kind's factory: ``fixed:k=N`` (the run's settings play no part)."""
        if set(opts) != {"k"} or not opts["k"].isdigit():
            raise UserError(f"strategy {spec!r}: use fixed:k=N with N >= 0 (k=0 is closed-book)")
        return cls(k=int(opts["k"]))

    def episode(self, question: Question, ctx: EpisodeContext) -> EpisodeGenerator:
        """Retrieve (when k > 0), answer, grade; cost = k * c_r + c_p."""
        result = new_result(question, self.name, ctx.repeat)
        passages = []
        if self.k > 0:
            if question.corpus is None:
                raise ValueError(f"question {question.id} has no corpus to retrieve from")
            got: Retrieved = yield RetrievalRequest(question.corpus, question.text, self.k)
            passages = [ctx.passage(question.corpus, h.passage_id) for h in got.hits]
            result.passage_ids = [p.id for p in passages]
            result.retrievals = 1
            result.steps.append(
                StepRecord(
                    action="retrieve",
                    success=bool(passages),
                    query=question.text,
                    passage_ids=list(result.passage_ids),
                    scores=[h.score for h in got.hits],
                    latency_s=got.latency_s,
                )
            )
        gen: Generation = yield ctx.request(
            answer_messages(question, passages), ctx.generation.answer_tokens
        )
        result.steps.append(
            StepRecord(
                action="answer",
                passage_ids=list(result.passage_ids),
                text=gen.text,
                prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens,
                latency_s=gen.latency_s,
            )
        )
        result.cost = self.k * ctx.c_r + ctx.c_p
        grade(result, question, gen.text)
        return result
