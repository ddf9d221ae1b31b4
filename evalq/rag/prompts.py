"""Prompts for every model call of an episode.

Each call of one episode starts with the same system message and question, then the
evidence gathered so far, then the call's own instruction: the calls share the longest
possible prefix, which vLLM's prefix caching serves from cache.
"""

from __future__ import annotations

from collections.abc import Sequence

from evalq.data.question import Question
from evalq.models.base import ChatMessage
from evalq.rag.corpus import Passage

NO_INFO = "NO_INFO"
SYSTEM = "You are a careful expert. Answer questions using the evidence given when it helps."


def _question_block(q: Question) -> str:
    lines = [f"Question: {q.text}"]
    if q.options is not None:
        lines += [f"{i}. {opt}" for i, opt in enumerate(q.options, start=1)]
    return "\n".join(lines)


def _evidence_block(passages: Sequence[Passage], notes: Sequence[str]) -> str:
    parts: list[str] = []
    if passages:
        parts.append("Passages:")
        parts += [f"[{p.id}] {p.title}: {p.text}" for p in passages]
    if notes:
        parts.append("Notes so far:")
        parts += [f"- {n}" for n in notes]
    return "\n".join(parts)


def _messages(q: Question, evidence: str, instruction: str) -> tuple[ChatMessage, ...]:
    body = _question_block(q)
    if evidence:
        body += "\n\n" + evidence
    return (
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{body}\n\n{instruction}"},
    )


def answer_messages(
    q: Question, passages: Sequence[Passage] = (), notes: Sequence[str] = ()
) -> tuple[ChatMessage, ...]:
    """The final answer call, from the question, retrieved passages and notes."""
    if q.options is not None:
        instruction = (
            f"Reply with the number (1-{len(q.options)}) of the correct option only, "
            "as 'Answer: N'."
        )
    else:
        instruction = "Reply with a short answer only (a few words), as 'Answer: ...'."
    return _messages(q, _evidence_block(passages, notes), instruction)


def query_messages(q: Question, notes: Sequence[str]) -> tuple[ChatMessage, ...]:
    """Ask the model for a search query that would find what is still missing."""
    instruction = "Write one search query (a few keywords) for what is still missing. Query:"
    return _messages(q, _evidence_block((), notes), instruction)


def note_messages(
    q: Question, passages: Sequence[Passage], notes: Sequence[str]
) -> tuple[ChatMessage, ...]:
    """Ask the model to note what the new passages say about the question."""
    instruction = (
        "In one or two sentences, note what these passages say that bears on the question. "
        f"If nothing does, reply {NO_INFO}."
    )
    return _messages(q, _evidence_block(passages, notes), instruction)


def reason_messages(q: Question, notes: Sequence[str]) -> tuple[ChatMessage, ...]:
    """Ask the model for one short reasoning step from the notes so far."""
    instruction = "Write one short reasoning step toward the answer from the notes so far."
    return _messages(q, _evidence_block((), notes), instruction)
