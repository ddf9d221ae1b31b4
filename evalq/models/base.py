"""The engine seam: generate many chat requests at once, return texts and token counts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

ChatMessage = dict[str, str]


@dataclass(frozen=True)
class GenerationRequest:
    """One chat request: messages plus per-request sampling."""

    messages: tuple[ChatMessage, ...]
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    # Lower runs first when the engine schedules by priority (the async driver numbers
    # episodes in the order they start, so episodes under way finish before new ones grow).
    priority: int = 0
    # A judgement instead of a text: the engine generates one token and reports, in
    # ``Generation.choice_logprobs``, how likely each of these words was as that token.
    choices: tuple[str, ...] | None = None
    # Also report each generated token's log-probability and text
    # (``Generation.token_logprobs`` and ``Generation.tokens``): how sure the model was of
    # what it wrote, e.g. for FLARE's decision to retrieve.
    logprobs: bool = False


@dataclass(frozen=True)
class Generation:
    """What the engine produced for one request.

    ``error`` is set when the engine refused this one request (its prompt does not fit the
    model's context) while serving the rest: the text is then empty. Drivers finish that
    request's episode as an error; a failure of the engine itself raises instead.

    ``choice_logprobs`` answers a request with ``choices``: per choice, the log of the
    summed probability of its one-token spellings (``yes``, `` yes``, ``Yes``, `` Yes``,
    ``YES``, `` YES``) as the first generated token; ``-inf`` when it has none.
    ``None`` for a request without choices.

    ``token_logprobs`` and ``tokens`` answer a request with ``logprobs``: per generated
    token, the log-probability the model gave it (the model's own distribution, before
    temperature or top-p) and the text it added; the texts join to ``text`` (a token that
    ends inside a multi-byte character adds "" and the next one the whole character).
    ``None`` for a request without ``logprobs``, or from an engine that cannot report them.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    error: str | None = None
    choice_logprobs: dict[str, float] | None = None
    token_logprobs: tuple[float, ...] | None = None
    tokens: tuple[str, ...] | None = None

    @classmethod
    def refused(cls, reason: str, prompt_tokens: int = 0) -> Generation:
        """The reply to a request the engine would not serve, with the reason why."""
        return cls("", prompt_tokens, 0, 0.0, error=reason)


def choice_probability(gen: Generation, choice: str) -> float | None:
    """P(choice) among the request's choices, renormalised over them; ``None`` if unknown.

    ``None`` when the engine gave no log-probabilities, or every choice's is ``-inf``
    (their odds are then unknown, not even).
    """
    if not gen.choice_logprobs or choice not in gen.choice_logprobs:
        return None
    top = max(gen.choice_logprobs.values())
    if top == -math.inf:
        return None
    weights = {c: math.exp(lp - top) for c, lp in gen.choice_logprobs.items()}
    return weights[choice] / sum(weights.values())


class Engine(Protocol):
    """Anything that turns a batch of chat requests into generations, in order.

    A request with ``choices`` asks for one token and its log-probabilities: an engine
    answers it with ``Generation.choice_logprobs`` set (and the token as text). An engine
    that cannot leaves it ``None``; callers then treat the judgement as unknown. A request
    with ``logprobs`` is answered likewise with ``Generation.token_logprobs`` and ``tokens``,
    or ``None`` where the engine cannot.
    """

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate one completion per request, in the order given."""
        ...
