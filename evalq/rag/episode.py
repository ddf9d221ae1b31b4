"""What an episode asks for and what it produces.

An episode is a generator: it yields a ``GenerationRequest`` (and receives a ``Generation``)
or a ``RetrievalRequest`` (and receives its hits), and returns an ``EpisodeResult``. The
runner drives many episodes at once so the engine always sees a full batch.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from evalq.models.base import Generation, GenerationRequest
from evalq.rag.retrievers import Hit


@dataclass(frozen=True)
class RetrievalRequest:
    """Top-k passages of ``corpus`` for ``query``, skipping ids in ``exclude``."""

    corpus: str
    query: str
    k: int
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Retrieved:
    """The reply to a ``RetrievalRequest``: hits, best first, and the search time."""

    hits: list[Hit]
    latency_s: float


Action = GenerationRequest | RetrievalRequest
Reply = Generation | Retrieved
EpisodeGenerator = Generator[Action, Any, "EpisodeResult"]


@dataclass
class StepRecord:
    """One action of an episode, as stored in the ``steps`` table."""

    action: str
    u_before: float | None = None
    u_after: float | None = None
    success: bool | None = None
    # A retrieve's judged P(yes) that its passages help answer; None when not judged.
    judgement: float | None = None
    query: str | None = None
    passage_ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0


@dataclass
class EpisodeResult:
    """A finished episode: the answer, its score, its cost and every step."""

    question_id: str
    strategy: str
    repeat: int
    status: str  # ok / invalid / error
    difficulty: str | None = None
    question: str | None = None
    gold: str | None = None
    answer: str | None = None
    raw_output: str | None = None
    correct: bool | None = None
    parsed: bool | None = None
    exact_match: float | None = None
    f1: float | None = None
    retrieval_recall: float | None = None
    cost: float = 0.0
    retrievals: int = 0
    passage_ids: list[str] = field(default_factory=list)
    error: str | None = None
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens over all steps."""
        return sum(s.prompt_tokens for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        """Generated tokens over all steps."""
        return sum(s.completion_tokens for s in self.steps)

    @property
    def latency_s(self) -> float:
        """Model and retrieval time over all steps."""
        return sum(s.latency_s for s in self.steps)
