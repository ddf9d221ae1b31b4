"""The engine seam: generate many chat requests at once, return texts and token counts."""

from __future__ import annotations

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


@dataclass(frozen=True)
class Generation:
    """What the engine produced for one request.

    ``error`` is set when the engine refused this one request (its prompt does not fit the
    model's context) while serving the rest: the text is then empty. Drivers finish that
    request's episode as an error; a failure of the engine itself raises instead.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    error: str | None = None

    @classmethod
    def refused(cls, reason: str, prompt_tokens: int = 0) -> Generation:
        """The reply to a request the engine would not serve, with the reason why."""
        return cls("", prompt_tokens, 0, 0.0, error=reason)


class Engine(Protocol):
    """Anything that turns a batch of chat requests into generations, in order."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate one completion per request, in the order given."""
        ...
