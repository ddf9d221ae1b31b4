"""What the iterative strategies (IRCoT, Iter-RetGen, FLARE) share.

Their spec options, read against the defaults their dataclasses declare; cutting a
generation at its first sentence; one search or one model call recorded as a
``StepRecord``.

Costs, as fixed-k charges them: ``c_r`` per passage a search asks for (``k`` per search)
and ``c_p`` per model call, the final answer call included.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Generator, Iterable, Mapping
from typing import Any

from evalq.data.corpus import Passage
from evalq.data.question import Question
from evalq.errors import UserError
from evalq.models.base import Generation
from evalq.rag.episode import Action, RetrievalRequest, Retrieved, StepRecord
from evalq.rag.strategies.base import EpisodeContext

Option = int | float


def defaults(cls: type) -> dict[str, Option]:
    """A strategy dataclass's options and their defaults, in declaration order."""
    return {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if isinstance(f.default, int | float)  # every option has a default of its type
    }


def spec_name(kind: str, values: Mapping[str, Option]) -> str:
    """The canonical spec stored on each episode: every option, e.g. ``ircot:k=2,steps=4``."""
    return f"{kind}:" + ",".join(f"{key}={value:g}" for key, value in values.items())


def usage(kind: str, options: Mapping[str, Option]) -> str:
    """How to write a spec of ``kind``, with its defaults (the end of every option error)."""
    forms = ",".join(f"{key}={'N' if isinstance(v, int) else 'P'}" for key, v in options.items())
    kinds = [isinstance(v, int) for v in options.values()]
    ranges = ", ".join(
        r for r, used in (("N >= 1", any(kinds)), ("0 <= P <= 1", not all(kinds))) if used
    )
    return f"use {kind}:{forms} ({ranges}; any may be left out: {spec_name(kind, options)})"


def read_options(
    spec: str, kind: str, opts: Mapping[str, str], options: Mapping[str, Option]
) -> dict[str, Option]:
    """The spec's options over their defaults: whole numbers >= 1, probabilities in [0, 1].

    Args:
        spec: The whole spec, for the error message.
        kind: The strategy kind (``ircot``, ...).
        opts: The spec's ``key=value`` options.
        options: Every option's default; its type (int or float) is the option's.

    Raises:
        UserError: An unknown option, or a value of the wrong kind or range.
    """
    how = usage(kind, options)
    values = dict(options)
    for key, raw in opts.items():
        if key not in options:
            raise UserError(f"strategy {spec!r}: unknown option {key!r}; {how}")
        if isinstance(options[key], int):
            if not raw.isdigit() or int(raw) < 1:
                raise UserError(f"strategy {spec!r}: {key} must be a whole number >= 1; {how}")
            values[key] = int(raw)
        else:
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 1.0:  # NaN fails too
                raise UserError(f"strategy {spec!r}: {key} must be between 0 and 1; {how}")
            values[key] = value
    return values


# A list marker opening a reply ("1.", "-", "*"): not a sentence of its own.
_LIST_MARKER = re.compile(r"\s*(?:[-*\u2022]|\d+[.)])\s+")
# A sentence ends at . ! or ? before a space or the end (not after a lone capital: "J. K."),
# or at a line break.
_SENTENCE_END = re.compile(r"(?<!\b[A-Z])[.!?](?=\s|$)|\n")


def sentence_span(text: str) -> tuple[int, int]:
    """Where the first sentence of ``text`` starts and ends (end exclusive, with its stop).

    Leading white space and a list marker are skipped; with no sentence end the rest of
    the text is the sentence. IRCoT and FLARE both generate one sentence per step.
    """
    start = len(text) - len(text.lstrip())
    marker = _LIST_MARKER.match(text, start)
    if marker is not None:
        start = marker.end()
    found = _SENTENCE_END.search(text, start)
    if found is None:
        return start, len(text)
    return start, found.end() if found.group() != "\n" else found.start()


def first_sentence(text: str) -> str:
    """The first sentence of a generation, stripped ("" when there is none)."""
    start, end = sentence_span(text)
    return text[start:end].strip()


_ANSWER_IS = re.compile(r"\banswer is\b", re.IGNORECASE)


def says_answer(sentence: str) -> bool:
    """Whether a reasoning sentence gives the answer (IRCoT's stop: ".* answer is:? (.*)")."""
    return _ANSWER_IS.search(sentence) is not None


def retrieve(
    ctx: EpisodeContext, question: Question, query: str, k: int
) -> Generator[Action, Any, tuple[list[Passage], StepRecord]]:
    """Search the question's corpus for ``query``: the passages found and their step.

    Use as ``passages, step = yield from retrieve(...)``.

    Raises:
        ValueError: The question has no corpus (its episode is stored as an error).
    """
    if question.corpus is None:
        raise ValueError(f"question {question.id} has no corpus to retrieve from")
    got: Retrieved = yield RetrievalRequest(question.corpus, query, k)
    passages = [ctx.passage(question.corpus, h.passage_id) for h in got.hits]
    step = StepRecord(
        action="retrieve",
        success=bool(passages),
        query=query,
        passage_ids=[p.id for p in passages],
        scores=[h.score for h in got.hits],
        latency_s=got.latency_s,
    )
    return passages, step


def call_step(
    action: str, gen: Generation, text: str, passages: Iterable[Passage] = ()
) -> StepRecord:
    """One model call as a step: what it kept of the text, the passages it read, its tokens."""
    return StepRecord(
        action=action,
        passage_ids=[p.id for p in passages],
        text=text,
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        latency_s=gen.latency_s,
    )


def unique_ids(passages: Iterable[Passage]) -> list[str]:
    """Passage ids in first-seen order, each once (the episode's ``passage_ids``)."""
    return list(dict.fromkeys(p.id for p in passages))
