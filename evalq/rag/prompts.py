"""Prompts for every model call of an episode.

Each call of one episode starts with the same system message and question, then the
evidence gathered so far, then the call's own instruction: the calls share the longest
possible prefix, which vLLM's prefix caching serves from cache.
"""

from __future__ import annotations

from collections.abc import Sequence

from evalq.data.corpus import Passage
from evalq.data.question import Question
from evalq.models.base import ChatMessage

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


# The answer call, chosen by measurement on a real model (SmolLM2-135M-Instruct, 100 SQuAD
# and 40 HotpotQA questions; docs/prompts.md): the question before and after the evidence,
# passages as plain text (a "[id] Title:" prefix was copied into answers), and a request for
# the answer alone (an "Answer: ..." template was copied, labels and all, or ignored).
ANSWER_INSTRUCTION = "Give only the answer, in a few words."
OPTION_INSTRUCTION = "Give only the number of the correct option."


def _answer_evidence(passages: Sequence[Passage], notes: Sequence[str]) -> str:
    """Passages (their text only) and notes, as the answer call reads them."""
    parts = [p.text for p in passages]
    if notes:
        parts.append("Notes:\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)


def answer_messages(
    q: Question, passages: Sequence[Passage] = (), notes: Sequence[str] = ()
) -> tuple[ChatMessage, ...]:
    """The final answer call, from the question, retrieved passages and notes.

    With evidence the question is asked again after it: a small model answers what it read
    last. Closed book, the question and the instruction alone.
    """
    question = _question_block(q)
    instruction = OPTION_INSTRUCTION if q.options is not None else ANSWER_INSTRUCTION
    evidence = _answer_evidence(passages, notes)
    if evidence:
        body = (
            f"{question}\n\nRead the text below and answer the question.\n\n{evidence}"
            f"\n\n{question}\n{instruction}"
        )
    else:
        body = f"{question}\n{instruction}"
    return ({"role": "system", "content": SYSTEM}, {"role": "user", "content": body})


JUDGE_CHOICES = ("yes", "no")


def judge_messages(q: Question, passages: Sequence[Passage]) -> tuple[ChatMessage, ...]:
    """Ask whether newly retrieved passages help; the answer is read as P(yes), one token.

    The notes are left out: the judgement is about these passages alone. The prompt starts
    like the note call's, which reads the same passages, so the two share a cached prefix.
    """
    instruction = (
        "Do these passages contain information needed to answer the question? Answer yes or no."
    )
    return _messages(q, _evidence_block(passages, ()), instruction)


def query_messages(q: Question, notes: Sequence[str]) -> tuple[ChatMessage, ...]:
    """Ask for a keyword search query for what the notes do not yet say.

    Small chat models reply to a request with chat ("What a delightful question! ...").
    The reply is cleaned, and replaced when it is chat or a repeat
    (``evalq.rag.search_query``). No example reply is given: SmolLM2-135M copied the
    example's names into its queries.
    """
    instruction = (
        "Write a search engine query (3 to 8 keywords, not a sentence) to find the "
        "information still needed to answer the question. Reply with the keywords only: "
        "names, titles, places, dates."
    )
    return _messages(q, _evidence_block((), notes), instruction)


def note_messages(
    q: Question, passages: Sequence[Passage], notes: Sequence[str]
) -> tuple[ChatMessage, ...]:
    """Ask the model to note the facts in passages judged relevant (the answer's evidence)."""
    instruction = (
        "In one or two sentences, state the facts from these passages that help answer "
        f"the question, with their names and numbers. If none do, reply {NO_INFO}."
    )
    return _messages(q, _evidence_block(passages, notes), instruction)


def reason_messages(q: Question, notes: Sequence[str]) -> tuple[ChatMessage, ...]:
    """Ask the model for one short reasoning step from the notes so far."""
    instruction = (
        "Write one short reasoning step (one sentence) toward the answer from the notes so far."
    )
    return _messages(q, _evidence_block((), notes), instruction)


# The iterative strategies (IRCoT, Iter-RetGen, FLARE) reason in sentences and stop on the
# phrase their papers' demonstrations end with.
ANSWER_IS = "So the answer is"


def _titled_passages(passages: Sequence[Passage]) -> str:
    """Passages as ``Title: text``, as IRCoT's prompts give them ("Wikipedia Title: ...").

    Titles name the entities a next search needs; the answer call leaves them out, so they
    never reach an answer (see ``ANSWER_INSTRUCTION``).
    """
    if not passages:
        return ""
    return "Passages:\n" + "\n".join(f"{p.title}: {p.text}" for p in passages)


def sentence_messages(
    q: Question, passages: Sequence[Passage], sentences: Sequence[str]
) -> tuple[ChatMessage, ...]:
    """The next sentence of a step-by-step answer: IRCoT's reasoning step and FLARE's.

    The passages in view come before the reasoning so far, so that successive calls of an
    episode share their prefix up to the passages' end. One sentence is asked for (the
    strategies keep only the first either way), a fact with its names: it is the next
    search's query. The way to stop ("So the answer is") is offered only once there is
    reasoning to stop: offered at the first sentence, SmolLM2-135M opened with "The answer
    is:" and a guess nearly every time, and searched no further (docs/baselines.md). The
    papers' few-shot demonstrations are left out: a 135M model copied example names into
    its answers (docs/prompts.md).
    """
    parts = [_titled_passages(passages)]
    if sentences:
        parts.append("Reasoning so far: " + " ".join(sentences))
        instruction = (
            "Continue the step-by-step reasoning toward the answer with one new sentence: a "
            "fact from the passages, with its names, that is not in the reasoning so far. If "
            f"the reasoning so far already answers the question, reply: {ANSWER_IS}, and the "
            "answer."
        )
    else:
        instruction = (
            "Start a step-by-step reasoning toward the answer with one sentence: a fact from "
            "the passages, with its names."
        )
    return _messages(q, "\n\n".join(p for p in parts if p), instruction)


def reasoned_answer_messages(q: Question, passages: Sequence[Passage]) -> tuple[ChatMessage, ...]:
    """Iter-RetGen's generation: a short chain of thought over one round's passages.

    The reply is the next round's search (with the question), so it should name what it
    found: the instruction asks for reasoning that ends with the answer.
    """
    instruction = (
        "Answer the question by reasoning step by step from the passages, in two or three "
        f"sentences. End with: {ANSWER_IS}: followed by the answer."
    )
    return _messages(q, _titled_passages(passages), instruction)
