"""Iter-RetGen: retrieve with the last generation, a fixed number of rounds (Shao et al., 2023).

"Enhancing Retrieval-Augmented Large Language Models with Iterative Retrieval-Generation
Synergy" (Findings of EMNLP 2023). Round 1 retrieves ``k`` passages with the question; each
later round retrieves with the question followed by the previous round's generation
(generation-augmented retrieval), and the model generates from that round's passages alone
(retrieval-augmented generation). After ``rounds`` rounds the last generation is the
answer. Where evalq differs from the paper: see docs/baselines.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalq.data.corpus import Passage
from evalq.data.question import Question
from evalq.models.base import Generation
from evalq.rag.episode import EpisodeGenerator
from evalq.rag.prompts import answer_messages, reasoned_answer_messages
from evalq.rag.strategies.base import EpisodeContext, grade, new_result
from evalq.rag.strategies.iterative import (
    call_step,
    defaults,
    read_options,
    retrieve,
    spec_name,
    unique_ids,
)

KIND = "iter-retgen"


@dataclass(frozen=True)
class IterRetGen:
    """``rounds`` rounds of retrieve-then-generate, each round's search led by the last.

    Attributes:
        k: Passages per round.
        rounds: Rounds, each one search and one generation (1 is fixed-k).
    """

    k: int = 3
    rounds: int = 3

    @property
    def name(self) -> str:
        """The spec stored on each episode: ``iter-retgen:k=3,rounds=3``."""
        return spec_name(KIND, {"k": self.k, "rounds": self.rounds})

    @classmethod
    def from_spec(cls, spec: str, opts: dict[str, str], run_config: dict[str, Any]) -> IterRetGen:
        """The ``iter-retgen`` kind's factory: ``iter-retgen:k=N,rounds=N`` (run settings unused).

        Raises:
            UserError: An unknown option or a bad value.
        """
        values = read_options(spec, KIND, opts, defaults(cls))
        return cls(k=int(values["k"]), rounds=int(values["rounds"]))

    def episode(self, question: Question, ctx: EpisodeContext) -> EpisodeGenerator:
        """Each round: search (question + last generation), generate; the last one answers.

        Cost: ``rounds * (k * c_r + c_p)``.
        """
        g = ctx.generation
        result = new_result(question, self.name, ctx.repeat)
        seen: list[Passage] = []
        query = question.text
        for _ in range(self.rounds - 1):
            passages, step = yield from retrieve(ctx, question, query, self.k)
            result.steps.append(step)
            result.retrievals += 1
            seen += passages
            gen: Generation = yield ctx.request(
                reasoned_answer_messages(question, passages), g.note_tokens
            )
            text = gen.text.strip()
            result.steps.append(call_step("reason", gen, text, passages))
            # The paper's query: the question, then the generation (q || y_{t-1}).
            query = f"{question.text} {text}" if text else question.text
        passages, step = yield from retrieve(ctx, question, query, self.k)
        result.steps.append(step)
        result.retrievals += 1
        seen += passages
        # The last round's generation is the answer: evalq's answer call, which is graded.
        agen: Generation = yield ctx.request(answer_messages(question, passages), g.answer_tokens)
        result.steps.append(call_step("answer", agen, agen.text, passages))
        result.passage_ids = unique_ids(seen)
        result.cost = self.rounds * (self.k * ctx.c_r + ctx.c_p)
        grade(result, question, agen.text)
        return result
