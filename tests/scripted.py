"""Drive one episode by hand: every search and model call answered by a script.

The strategy's generator runs without a runner, engine or retriever: each
``RetrievalRequest`` gets fixed hits (search n returns ``pn-a``, ``pn-b``, ...), each
``GenerationRequest`` the script's next reply, so a test sees exactly which requests an
episode makes, in which order, and what it makes of each reply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from evalq.data.corpus import Passage
from evalq.data.question import Question
from evalq.models.base import Generation, GenerationRequest
from evalq.rag.episode import EpisodeResult, RetrievalRequest, Retrieved
from evalq.rag.retrievers import Hit
from evalq.rag.strategies import EpisodeContext, GenerationConfig, Strategy

QUESTION = Question(
    id="q1",
    text="What government position was held by the star of Kiss and Tell?",
    gold="Chief of Protocol",
    corpus="c",
)
C_R, C_P = 0.05, 0.02


def passage(corpus: str, pid: str) -> Passage:
    """Passage ``pid``: title ``Title pid``, text ``text of pid``."""
    return Passage(pid, f"Title {pid}", f"text of {pid}")


def reply(text: str, probabilities: Sequence[float] | None = None) -> Generation:
    """A generation; with ``probabilities``, one token per word (its trailing space with it)."""
    if probabilities is None:
        return Generation(text, 10, len(text.split()), 0.0)
    words = [w + " " for w in text.split(" ")]
    words[-1] = words[-1][:-1]
    assert len(words) == len(probabilities), (words, probabilities)
    logprobs = tuple(math.log(p) if p > 0 else -math.inf for p in probabilities)
    return Generation(text, 10, len(words), 0.0, token_logprobs=logprobs, tokens=tuple(words))


@dataclass
class Script:
    """Replies in order; ``hits(n, request)`` answers search n (from 1)."""

    replies: list[Generation]
    hits: Callable[[int, RetrievalRequest], list[Hit]] = lambda n, r: [
        Hit(f"p{n}-{c}", 2.0 - i / 10) for i, c in enumerate("abcdefgh"[: r.k])
    ]
    searches: list[RetrievalRequest] = field(default_factory=list)
    calls: list[GenerationRequest] = field(default_factory=list)

    def answer(self, action: Any) -> Any:
        if isinstance(action, RetrievalRequest):
            self.searches.append(action)
            return Retrieved(self.hits(len(self.searches), action), 0.0)
        assert isinstance(action, GenerationRequest), action
        self.calls.append(action)
        assert self.replies, f"no scripted reply left for call {len(self.calls)}"
        return self.replies.pop(0)


def drive(strategy: Strategy, script: Script, question: Question = QUESTION) -> EpisodeResult:
    """Run one episode against ``script``; its result (the script keeps the requests)."""
    ctx = EpisodeContext(GenerationConfig(), c_r=C_R, c_p=C_P, passage=passage)
    episode = strategy.episode(question, ctx)
    sent: Any = None
    while True:
        try:
            action = episode.send(sent)
        except StopIteration as done:
            result: EpisodeResult = done.value
            return result
        sent = script.answer(action)


def prompt(request: GenerationRequest) -> str:
    """The user message of a request (question, evidence, instruction)."""
    return request.messages[-1]["content"]
