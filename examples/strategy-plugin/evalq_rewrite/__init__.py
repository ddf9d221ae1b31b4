"""``rewrite:k=N``: the model rewrites the question as a search query; retrieve k; answer.

Questions are written for people, not for BM25: "Which band released the album that
followed ...?" spends most of its words on grammar. This strategy asks the model for a
keyword query first, retrieves the top ``k`` passages for that query, then answers from
them with evalq's own answer prompt, so that its scores compare with ``fixed:k=N``.

An example of a strategy living outside evalq: it uses only ``evalq``'s public names and
registers itself through the ``evalq.strategies`` entry point in its ``pyproject.toml``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from evalq import (
    EpisodeContext,
    EpisodeGenerator,
    Generation,
    Question,
    RetrievalRequest,
    Retrieved,
    StepRecord,
    UserError,
    answer_messages,
    grade,
    new_result,
)

__all__ = ["RewriteThenRetrieve", "rewrite_messages", "search_query"]

# A query is a handful of keywords; a long reply is cut, not paid for.
REWRITE_TOKENS = 32
_LABEL = re.compile(r"^\s*(?:search\s+)?(?:query|keywords)\s*:\s*", re.IGNORECASE)


def rewrite_messages(q: Question) -> tuple[dict[str, str], ...]:
    """Ask the model to turn the question into a keyword search query."""
    return (
        {"role": "system", "content": "You write search engine queries."},
        {
            "role": "user",
            "content": f"Question: {q.text}\n\nRewrite the question as a short search engine "
            "query: 3 to 8 keywords, not a sentence. Reply with the query alone.",
        },
    )


def search_query(reply: str, question: str) -> str:
    """The query in a model's reply: its first line, unlabelled and unquoted.

    An empty reply falls back to the question itself, so the episode still retrieves.
    """
    lines = [line.strip() for line in reply.splitlines() if line.strip()]
    query = _LABEL.sub("", lines[0]).strip().strip("\"'`*").strip() if lines else ""
    return query or question


@dataclass(frozen=True)
class RewriteThenRetrieve:
    """Rewrite the question as a query, retrieve ``k`` passages for it, answer once."""

    k: int

    @property
    def name(self) -> str:
        """The spec stored on each episode, e.g. ``rewrite:k=3``."""
        return f"rewrite:k={self.k}"

    @classmethod
    def from_spec(
        cls, spec: str, opts: dict[str, str], run_config: dict[str, Any]
    ) -> RewriteThenRetrieve:
        """The ``rewrite`` kind's factory: ``rewrite:k=N`` with N >= 1."""
        if set(opts) != {"k"} or not opts["k"].isdigit() or int(opts["k"]) < 1:
            raise UserError(f"strategy {spec!r}: use rewrite:k=N with N >= 1")
        return cls(k=int(opts["k"]))

    def episode(self, question: Question, ctx: EpisodeContext) -> EpisodeGenerator:
        """Rewrite, retrieve, answer, grade; cost = k * c_r + 2 * c_p (two model calls)."""
        if question.corpus is None:
            raise ValueError(f"question {question.id} has no corpus to retrieve from")
        result = new_result(question, self.name, ctx.repeat)

        rewrite: Generation = yield ctx.request(rewrite_messages(question), REWRITE_TOKENS)
        query = search_query(rewrite.text, question.text)
        result.steps.append(
            StepRecord(
                action="rewrite",
                query=query,
                text=rewrite.text,
                prompt_tokens=rewrite.prompt_tokens,
                completion_tokens=rewrite.completion_tokens,
                latency_s=rewrite.latency_s,
            )
        )

        got: Retrieved = yield RetrievalRequest(question.corpus, query, self.k)
        passages = [ctx.passage(question.corpus, h.passage_id) for h in got.hits]
        result.passage_ids = [p.id for p in passages]
        result.retrievals = 1
        result.steps.append(
            StepRecord(
                action="retrieve",
                success=bool(passages),
                query=query,
                passage_ids=list(result.passage_ids),
                scores=[h.score for h in got.hits],
                latency_s=got.latency_s,
            )
        )

        answer: Generation = yield ctx.request(
            answer_messages(question, passages), ctx.generation.answer_tokens
        )
        result.steps.append(
            StepRecord(
                action="answer",
                passage_ids=list(result.passage_ids),
                text=answer.text,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                latency_s=answer.latency_s,
            )
        )
        result.cost = self.k * ctx.c_r + 2 * ctx.c_p
        grade(result, question, answer.text)
        return result
