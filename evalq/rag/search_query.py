"""Search queries from model output: chatter cleaned off, never the same query twice.

A small chat model asked for a query replies with chat ("What a delightful question! In one
or two sentences, ...", "What is still missing: ...") and repeats itself. ``clean_query``
keeps what reads as a query, or rejects the reply; ``next_query`` then falls back to
queries built from the episode's own evidence, so that each retrieve of an episode searches
with a query it has not used before (compared after ``normalize_query``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# Longest query kept: BM25 gains nothing from a paragraph, and a long reply is chat.
MAX_QUERY_WORDS = 16
# Words of the latest note added to the question by the first fallback.
NOTE_WORDS = 8

_STOPWORDS = """a an the and or but of in on at to for from by with as is are was were be been
being it its this that these those which who whom whose what when where why how do does did
has have had not no yes than then so such there their they he she his her him we you i me my
our your can could would should will shall may might must about into over after before
between during also more most other some any each both all one only same very just"""
STOPWORDS = frozenset(_STOPWORDS.split())

# A label the model put before its query ("Search query:", "Keywords -").
_LABEL = re.compile(
    r"^\s*(?:(?:here\s+is|here's)\s+)?(?:(?:a|the|my|your)\s+)?"
    r"(?:(?:search|web|google)\s+(?:engine\s+)?)?(?:query|queries|keywords?|search|answer)"
    r"\s*(?:\([^)]*\))?\s*[:\-=]\s*",
    re.IGNORECASE,
)
# Opening pleasantries, up to their end ("Sure!", "Great question.", "Certainly,").
_PLEASANTRY = re.compile(
    r"^\s*(?:what\s+a\s+\w+\s+question|(?:a\s+)?(?:great|good|delightful|interesting|excellent)"
    r"\s+question|sure(?:\s+thing)?|certainly|of\s+course|absolutely|okay|ok|alright|hello|hi)"
    r"\b[^.!:,]*[.!:,]\s*",
    re.IGNORECASE,
)
# Phrases that only chat (or an echoed instruction) contains; such a reply is no query.
_CHAT = re.compile(
    r"\b(?:delightful|one or two sentences|still missing|still needed|search (?:engine )?query|"
    r"keywords? only|i (?:am|can|will|would|think)|i'm|i'd|let me|here is|here's|"
    r"you (?:can|could|should|might)|happy to|sorry|as an ai|reply with|the passages?|"
    r"the notes?|the answer|the question|no_info)\b",
    re.IGNORECASE,
)
# A list bullet or number before the query ("1. ", "- ").
_BULLET = re.compile(r"^\s*(?:\d+[.)]|[-\u2022*])\s+")
_WORD = re.compile(r"[0-9A-Za-z\u00C0-\u024F]+(?:['\u2019][A-Za-z]+)?")


def words(text: str) -> list[str]:
    """The words of a text, in order, case kept."""
    return _WORD.findall(text)


def content_words(text: str) -> list[str]:
    """Lower-cased words that are not stopwords, in order, each once."""
    return list(dict.fromkeys(w.lower() for w in words(text) if w.lower() not in STOPWORDS))


def normalize_query(query: str) -> frozenset[str]:
    """What two queries must differ in: their content words, case and order ignored.

    BM25 scores a bag of words, so queries with the same content words in another order or
    case retrieve the same passages; they count as the same query.
    """
    return frozenset(content_words(query)) or frozenset(w.lower() for w in words(query))


def clean_query(text: str, question: str) -> str | None:
    """A search query from a model's reply, or ``None`` when the reply is not one.

    Keeps the first non-empty line; strips labels ("Query:", "Search query:"), opening
    pleasantries ("Sure!", "What a delightful question!"), quotes and markdown; caps the
    length. Rejects a reply that still reads as chat (an echoed instruction, "I can ..."),
    and a long one that restates the question.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[0]
    # A reply that is only a label ("Search query:") has its query on the next line.
    if _LABEL.sub("", line).strip() == "" and len(lines) > 1:
        line = lines[1]
    for _ in range(3):  # "Sure! Search query: ..." takes more than one pass
        before = line
        line = _PLEASANTRY.sub("", line)
        line = _BULLET.sub("", line)
        line = _LABEL.sub("", line)
        line = line.strip().strip("\"'`*_#>[]()").strip()
        if line == before:
            break
    line = re.sub(r"[\"`*]+", " ", line)
    line = re.sub(r"\s+", " ", line).strip().rstrip(".?!,;:")
    if not line or _CHAT.search(line):
        return None
    kept = words(line)
    if not content_words(line):
        return None
    if len(kept) > MAX_QUERY_WORDS:
        # A long reply is a sentence, not a query: keep its leading keywords only if it is
        # not simply the question again.
        if _restates(line, question):
            return None
        line = " ".join(kept[:MAX_QUERY_WORDS])
    return line


def _restates(query: str, question: str) -> bool:
    """True when nearly all of the query's content words are the question's."""
    q = set(content_words(query))
    return bool(q) and len(q - set(content_words(question))) <= 1 and len(q) > 6


# Words of the note prompt that a small model echoes into its note; never search words.
_NOTE_PROMPT = """sentence sentences state facts fact passage passages help helps answer
question note notes information names numbers"""
_PROMPT_WORDS = frozenset(_NOTE_PROMPT.split())


def note_fallback(question: str, note: str) -> str | None:
    """The question plus the words of ``note`` that it lacks (``None`` if it lacks none).

    A note names what the last passages said (often a bridge entity, "the album was
    produced by X"): those words steer the next search to what the question leads to.
    """
    asked = set(content_words(question))
    new = [w for w in content_words(note) if w not in asked and w not in _PROMPT_WORDS]
    new = new[:NOTE_WORDS]
    return f"{question} {' '.join(new)}" if new else None


def next_query(
    question: str,
    reply: str | None,
    notes: Sequence[str],
    titles: Iterable[str],
    used: Iterable[str],
) -> str:
    """The query for an episode's next retrieve: the first candidate not used before.

    Candidates, in order: the cleaned model ``reply``; the question plus the latest note's
    new words (``note_fallback``); the question plus the title of a passage seen so far
    (``titles``, most relevant first: a bridge question's first hop is often titled by the
    entity the second hop needs); last, the question plus a counter, which is always new.
    """
    taken = {normalize_query(u) for u in used}
    candidates: list[str | None] = [
        clean_query(reply, question) if reply is not None else None,
        note_fallback(question, notes[-1]) if notes else None,
    ]
    candidates += [f"{question} {t}" for t in titles]
    for candidate in candidates:
        if candidate and normalize_query(candidate) not in taken:
            return candidate
    n = len(taken) + 1
    while normalize_query(f"{question} {n}") in taken:
        n += 1
    return f"{question} {n}"
