"""Model replies become search queries: chatter cleaned off, chat rejected, no repeats."""

from __future__ import annotations

import pytest

from evalq.rag.search_query import clean_query, next_query, normalize_query

QUESTION = "Which city hosts the museum founded by Ada Lovelace?"


@pytest.mark.parametrize(
    ("reply", "query"),
    [
        ("Ada Lovelace museum city", "Ada Lovelace museum city"),
        ("Query: Ada Lovelace museum", "Ada Lovelace museum"),
        ('Sure! Here is a search query: "Ada museum city"', "Ada museum city"),
        ("**Search query:** Ada museum", "Ada museum"),
        ("Search query:\nAda Lovelace museum city", "Ada Lovelace museum city"),
        ("1. Ada Lovelace museum\n2. London museums", "Ada Lovelace museum"),
        ("Great question. Ada Lovelace museum location.", "Ada Lovelace museum location"),
    ],
)
def test_chatter_is_cleaned_off(reply: str, query: str) -> None:
    assert clean_query(reply, QUESTION) == query


@pytest.mark.parametrize(
    "reply",
    [
        "What a delightful question! In one or two sentences, the museum was founded...",
        "What is still missing: the city of the museum.",
        "I think the answer is London.",
        "The answer to the question is",
        "The passages do not say where the museum is.",
        "",
        "   \n  ",
        "?!",
    ],
)
def test_chat_is_rejected(reply: str) -> None:
    assert clean_query(reply, QUESTION) is None


def test_the_note_fallback_skips_words_the_note_echoed_from_its_prompt() -> None:
    note = "In two sentences, state the facts: the passage helps answer the question. Paris."
    assert next_query(QUESTION, None, [note], [], [QUESTION]) == f"{QUESTION} two paris"


def test_queries_compare_on_content_words() -> None:
    assert normalize_query("Ada museum, City?") == normalize_query("city the ADA museum")
    assert normalize_query("Ada museum") != normalize_query("Ada museum city")


def test_next_query_never_repeats_and_falls_back_in_order() -> None:
    used = [QUESTION, "Ada museum city"]
    note = "The museum was founded in 1840 by Ada Lovelace in Paris."
    assert next_query(QUESTION, "Ada Lovelace museum", [note], [], used) == "Ada Lovelace museum"
    # A repeat: the question plus the note's new words.
    via_note = next_query(QUESTION, "museum city Ada", [note], ["Louvre"], used)
    assert via_note == f"{QUESTION} 1840 paris"
    # That used too: a seen passage's title.
    assert next_query(QUESTION, None, [note], ["Louvre"], [*used, via_note]) == f"{QUESTION} Louvre"
    # Everything used: a counter keeps it new.
    last = next_query(QUESTION, None, [], ["Louvre"], [*used, f"{QUESTION} Louvre"])
    assert normalize_query(last) not in {normalize_query(u) for u in used}
