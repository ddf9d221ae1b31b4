"""IRCoT: interleave chain-of-thought sentences with retrieval (Trivedi et al., ACL 2023).

"Interleaving Retrieval with Chain-of-Thought Reasoning for Knowledge-Intensive Multi-Step
Questions". Retrieve ``k`` passages with the question; then, in turn, the model writes the
next sentence of its reasoning from every passage collected so far, and that sentence is
the query for ``k`` more. The loop stops when a sentence says "answer is", after ``steps``
sentences, or when 15 passages are collected (the authors' code: ``global_max_num_paras``).
A reader then answers from the collected passages alone, as IRCoT's QA reader does.
Where evalq differs from the paper: see docs/baselines.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalq.data.corpus import Passage
from evalq.data.question import Question
from evalq.models.base import Generation
from evalq.rag.episode import EpisodeGenerator
from evalq.rag.prompts import answer_messages, sentence_messages
from evalq.rag.strategies.base import EpisodeContext, grade, new_result
from evalq.rag.strategies.iterative import (
    call_step,
    defaults,
    first_sentence,
    read_options,
    retrieve,
    says_answer,
    spec_name,
)

KIND = "ircot"
# The reasoning stops collecting at this many passages (IRCoT's own cap).
MAX_PASSAGES = 15


@dataclass(frozen=True)
class IRCoT:
    """Retrieve with the question, then with each new reasoning sentence; read, answer.

    Attributes:
        k: Passages per search (IRCoT's K).
        steps: Most reasoning sentences (one search before each).
    """

    k: int = 2
    steps: int = 4

    @property
    def name(self) -> str:
        """The spec stored on each episode, every option given: ``ircot:k=2,steps=4``."""
        return spec_name(KIND, {"k": self.k, "steps": self.steps})

    @classmethod
    def from_spec(cls, spec: str, opts: dict[str, str], run_config: dict[str, Any]) -> IRCoT:
        """The ``ircot`` kind's factory: ``ircot``, ``ircot:k=N,steps=N`` (run settings unused).

        Raises:
            UserError: An unknown option or a bad value.
        """
        values = read_options(spec, KIND, opts, defaults(cls))
        return cls(k=int(values["k"]), steps=int(values["steps"]))

    def episode(self, question: Question, ctx: EpisodeContext) -> EpisodeGenerator:
        """Search, reason a sentence, search with it, ...; then answer from the passages.

        Cost: ``k * c_r`` per search, ``c_p`` per sentence and for the answer call.
        """
        g = ctx.generation
        result = new_result(question, self.name, ctx.repeat)
        collected: list[Passage] = []
        thoughts: list[str] = []
        query = question.text
        calls = 0
        while True:
            found, step = yield from retrieve(ctx, question, query, self.k)
            result.steps.append(step)
            result.retrievals += 1
            # Passages found again are not added twice; the collection stops at the cap.
            known = {p.id for p in collected}
            fresh = [p for p in found if p.id not in known]
            collected += fresh[: MAX_PASSAGES - len(collected)]
            gen: Generation = yield ctx.request(
                sentence_messages(question, collected, thoughts), g.note_tokens
            )
            calls += 1
            thought = first_sentence(gen.text)
            result.steps.append(call_step("reason", gen, thought, collected))
            if thought:
                thoughts.append(thought)
            if (
                not thought
                or says_answer(thought)
                or len(thoughts) >= self.steps
                or len(collected) >= MAX_PASSAGES
            ):
                break
            query = thought
        agen: Generation = yield ctx.request(answer_messages(question, collected), g.answer_tokens)
        calls += 1
        result.steps.append(call_step("answer", agen, agen.text, collected))
        result.passage_ids = [p.id for p in collected]
        result.cost = result.retrievals * self.k * ctx.c_r + calls * ctx.c_p
        grade(result, question, agen.text)
        return result
