"""Each generated token's text, from the decoded prefixes of the generation (no engine)."""

from __future__ import annotations

from evalq.models.vllm import prefixes, token_texts


def test_each_token_adds_what_its_prefix_adds() -> None:
    assert token_texts(["The", "The answer", "The answer."], "The answer.") == (
        "The",
        " answer",
        ".",
    )


def test_a_character_split_over_byte_tokens_comes_whole_with_its_last_byte() -> None:
    # "é" is two byte tokens: the first alone decodes to U+FFFD.
    decoded = ["Caf", "Caf\ufffd", "Café", "Café!"]
    assert token_texts(decoded, "Café!") == ("Caf", "", "é", "!")


def test_the_texts_join_to_the_text_even_when_a_prefix_decodes_differently() -> None:
    # A tokenizer that drops a prefix's leading space: the text is still rebuilt exactly.
    pieces = token_texts(["Hi", "Hi there", "xx"], " Hi there!")
    assert "".join(pieces) == " Hi there!"


def test_no_tokens_no_texts() -> None:
    assert token_texts([], "") == () and prefixes([]) == []
    assert prefixes([5, 6, 7]) == [[5], [5, 6], [5, 6, 7]]
