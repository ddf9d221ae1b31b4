"""FLARE: forward-looking active retrieval (Jiang et al., EMNLP 2023).

"Active Retrieval Augmented Generation", FLARE-direct. The answer is written a sentence at
a time. Each step the model first writes a look-ahead: its next sentence from the passages
in view, with every token's probability (read from the engine's log-probabilities). If
every token of it has probability at least ``theta``, the sentence is kept as written.
Otherwise the sentence, its tokens below ``beta`` masked out, is the query for ``k`` new
passages, which replace those in view, and the sentence is written again from them. As in
the authors' multi-hop QA setting, the first passages are retrieved with the question
before the first look-ahead. Where evalq differs from the paper: see docs/baselines.md.
"""

from __future__ import annotations

import dataclasses
import math
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
    sentence_span,
    spec_name,
    unique_ids,
)

KIND = "flare"


@dataclass(frozen=True)
class LookAhead:
    """A look-ahead's first sentence, how sure the model was of it, and its query.

    Attributes:
        sentence: The first sentence of the generation, stripped.
        lowest: The lowest probability of a token of that sentence; ``None`` when the
            engine reported no log-probabilities.
        query: The sentence with its tokens below ``beta`` masked out; the whole sentence
            when masking leaves nothing.
    """

    sentence: str
    lowest: float | None
    query: str


def look_ahead(gen: Generation, beta: float) -> LookAhead:
    """Read a look-ahead generation: its first sentence, that sentence's tokens' confidence.

    A token belongs to the sentence when its text overlaps it (a token may carry the
    sentence's stop and the next word's space; only the part inside the sentence is kept
    in the query). A masked token leaves a space, as in the authors' code.
    """
    text = gen.text
    start, end = sentence_span(text)
    sentence = text[start:end].strip()
    if gen.tokens is None or gen.token_logprobs is None:
        return LookAhead(sentence, None, sentence)
    probabilities: list[float] = []
    kept: list[str] = []
    low = 0
    for piece, logprob in zip(gen.tokens, gen.token_logprobs, strict=True):
        high = low + len(piece)
        if low >= end:
            break
        if high > start or low == high == start:  # in the sentence, or a byte starting it
            probability = math.exp(logprob)
            probabilities.append(probability)
            kept.append(text[max(low, start) : min(high, end)] if probability >= beta else " ")
        low = high
    query = " ".join("".join(kept).split()) or sentence
    return LookAhead(sentence, min(probabilities, default=None), query)


@dataclass(frozen=True)
class FLARE:
    """Write sentence by sentence; retrieve and rewrite a sentence the model is unsure of.

    Attributes:
        k: Passages per search.
        theta: A look-ahead with a token below this probability triggers a search
            (0: never, 1: every sentence).
        beta: Tokens below this probability are masked out of the query (0: none).
        steps: Most sentences before the answer call.
    """

    k: int = 2
    theta: float = 0.8
    beta: float = 0.4
    steps: int = 4

    @property
    def name(self) -> str:
        """The spec stored on each episode: ``flare:k=2,theta=0.8,beta=0.4,steps=4``."""
        options = {"k": self.k, "theta": self.theta, "beta": self.beta, "steps": self.steps}
        return spec_name(KIND, options)

    @classmethod
    def from_spec(cls, spec: str, opts: dict[str, str], run_config: dict[str, Any]) -> FLARE:
        """The ``flare`` kind's factory: ``flare:k=N,theta=P,beta=P,steps=N`` (run unused).

        Raises:
            UserError: An unknown option or a bad value.
        """
        values = read_options(spec, KIND, opts, defaults(cls))
        return cls(
            k=int(values["k"]),
            theta=float(values["theta"]),
            beta=float(values["beta"]),
            steps=int(values["steps"]),
        )

    def episode(self, question: Question, ctx: EpisodeContext) -> EpisodeGenerator:
        """Search with the question; then per sentence look ahead, and search when unsure.

        A look-ahead is a ``reason`` step whose ``success`` says whether it was kept and
        whose ``judgement`` is its lowest token probability; a rewritten sentence is a
        ``reason`` step after the ``retrieve`` it read. Cost: ``k * c_r`` per search,
        ``c_p`` per model call (look-aheads, rewrites, the answer call).
        """
        g = ctx.generation
        result = new_result(question, self.name, ctx.repeat)
        passages, first = yield from retrieve(ctx, question, question.text, self.k)
        result.steps.append(first)
        result.retrievals += 1
        seen: list[Passage] = list(passages)
        sentences: list[str] = []
        calls = 0
        for _ in range(self.steps):
            request = ctx.request(sentence_messages(question, passages, sentences), g.note_tokens)
            gen: Generation = yield dataclasses.replace(request, logprobs=True)
            calls += 1
            ahead = look_ahead(gen, self.beta)
            # Without log-probabilities the model's confidence is unknown: search.
            confident = ahead.lowest is not None and ahead.lowest >= self.theta
            step = call_step("reason", gen, ahead.sentence, passages)
            step.success, step.judgement = confident, ahead.lowest
            result.steps.append(step)
            sentence = ahead.sentence
            if sentence and not confident:
                passages, found = yield from retrieve(ctx, question, ahead.query, self.k)
                result.steps.append(found)
                result.retrievals += 1
                seen += passages
                again: Generation = yield ctx.request(
                    sentence_messages(question, passages, sentences), g.note_tokens
                )
                calls += 1
                sentence = first_sentence(again.text)
                result.steps.append(call_step("reason", again, sentence, passages))
            if not sentence:  # the model has nothing more to write
                break
            sentences.append(sentence)
            if says_answer(sentence):
                break
        agen: Generation = yield ctx.request(
            answer_messages(question, passages, sentences), g.answer_tokens
        )
        calls += 1
        result.steps.append(call_step("answer", agen, agen.text, passages))
        result.passage_ids = unique_ids(seen)
        result.cost = result.retrievals * self.k * ctx.c_r + calls * ctx.c_p
        grade(result, question, agen.text)
        return result
