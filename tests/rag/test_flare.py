"""FLARE's control flow against a scripted model whose every token has a set probability.

A look-ahead is a generation with ``token_logprobs``: one token per word here, so a test
says exactly which words the model was unsure of, and sees whether FLARE searches, with
which query, and which sentence it keeps.
"""

from __future__ import annotations

import math

import pytest
from scripted import C_P, C_R, QUESTION, Script, drive, prompt, reply

from evalq.models.base import Generation
from evalq.rag.prompts import ANSWER_INSTRUCTION
from evalq.rag.strategies import parse_strategy
from evalq.rag.strategies.flare import FLARE, look_ahead

SURE = "So the answer is: Chief of Protocol."


def sure(text: str) -> Generation:
    return reply(text, [0.95] * len(text.split(" ")))


def test_a_confident_look_ahead_is_kept_without_searching() -> None:
    script = Script([sure("Kiss and Tell starred Shirley Temple."), sure(SURE), reply("x")])
    result = drive(FLARE(), script)

    # One search, with the question, before the first look-ahead (the authors' QA setting).
    assert [s.query for s in script.searches] == [QUESTION.text]
    assert [c.logprobs for c in script.calls] == [True, True, False]
    assert [s.action for s in result.steps] == ["retrieve", "reason", "reason", "answer"]
    ahead = result.steps[1]
    assert ahead.success is True and ahead.judgement == pytest.approx(0.95)
    assert result.cost == pytest.approx(2 * C_R + 3 * C_P)
    answer = prompt(script.calls[-1])
    assert answer.endswith(ANSWER_INSTRUCTION)
    assert "text of p1-a" in answer and "Kiss and Tell starred Shirley Temple." in answer


def test_an_unsure_look_ahead_searches_with_its_sure_tokens_and_is_rewritten() -> None:
    # "Temple" is below theta (0.8) but above beta (0.4): it triggers the search and stays
    # in the query; "1932" is below beta: masked out.
    unsure = reply("Shirley Temple starred in 1932.", [0.9, 0.6, 0.9, 0.9, 0.2])
    script = Script(
        [unsure, reply("Shirley Temple starred in 1945. More."), sure(SURE), reply("x")]
    )
    result = drive(FLARE(k=2), script)

    assert [s.query for s in script.searches] == [QUESTION.text, "Shirley Temple starred in"]
    assert [s.action for s in result.steps] == [
        *("retrieve", "reason", "retrieve", "reason", "reason", "answer")
    ]
    ahead, found, rewritten = result.steps[1:4]
    assert ahead.success is False and ahead.judgement == pytest.approx(0.2)
    assert ahead.text == "Shirley Temple starred in 1932."
    assert found.passage_ids == ["p2-a", "p2-b"]
    assert rewritten.text == "Shirley Temple starred in 1945." and rewritten.success is None
    # The rewrite reads the new passages instead of the old, and no look-ahead of it.
    again = prompt(script.calls[1])
    assert "text of p2-a" in again and "text of p1-a" not in again and "1932" not in again
    assert script.calls[1].logprobs is False
    # The rewritten sentence, not the look-ahead, is what the next calls read.
    assert "1945" in prompt(script.calls[2]) and "1932" not in prompt(script.calls[2])
    assert result.passage_ids == ["p1-a", "p1-b", "p2-a", "p2-b"]
    assert result.retrievals == 2
    assert result.cost == pytest.approx(2 * 2 * C_R + 4 * C_P)


def test_only_the_first_sentence_of_a_look_ahead_is_judged() -> None:
    ahead = reply("Temple was born. Unsure words", [0.9, 0.9, 0.9, 0.01, 0.01])
    script = Script([ahead, sure(SURE), reply("x")])
    result = drive(FLARE(), script)
    assert len(script.searches) == 1 and result.steps[1].text == "Temple was born."


def test_theta_zero_never_searches_again_and_theta_one_searches_every_sentence() -> None:
    never = Script([reply("One two.", [0.01, 0.01]), sure(SURE), reply("x")])
    drive(FLARE(theta=0.0), never)
    assert len(never.searches) == 1

    always = Script([sure("One two."), sure("Three."), sure("Four."), sure(SURE), reply("x")])
    drive(FLARE(theta=1.0, steps=2), always)
    assert len(always.searches) == 3


def test_a_query_masked_to_nothing_is_the_whole_sentence() -> None:
    script = Script([reply("Shirley Temple.", [0.1, 0.1]), sure(SURE), reply("x")])
    drive(FLARE(), script)
    assert script.searches[1].query == "Shirley Temple."


def test_without_log_probabilities_every_sentence_searches() -> None:
    script = Script([reply("One."), reply("Two."), reply("Three."), reply("Four."), reply("x")])
    result = drive(FLARE(steps=2), script)
    assert len(script.searches) == 3
    assert [s.judgement for s in result.steps if s.success is False] == [None, None]


def test_steps_caps_the_sentences_and_an_empty_one_ends_them() -> None:
    script = Script([sure("One."), sure("Two."), reply("x")])
    result = drive(FLARE(steps=2), script)
    assert [s.action for s in result.steps] == ["retrieve", "reason", "reason", "answer"]

    empty = Script([reply(""), reply("x")])
    result = drive(FLARE(), empty)
    assert [s.action for s in result.steps] == ["retrieve", "reason", "answer"]
    assert len(empty.searches) == 1


def test_a_token_across_the_sentence_end_counts_only_inside_it() -> None:
    gen = Generation(
        " Temple. Later",
        0,
        3,
        0.0,
        token_logprobs=(math.log(0.9), math.log(0.5), math.log(0.01)),
        tokens=(" Temple", ". Later", ""),
    )
    ahead = look_ahead(gen, beta=0.6)
    assert ahead.sentence == "Temple."
    assert ahead.lowest == pytest.approx(0.5)
    assert ahead.query == "Temple"  # the masked token's text inside the sentence is "."


def test_the_spec_names_every_option_and_keeps_defaults() -> None:
    assert parse_strategy("flare") == FLARE(k=2, theta=0.8, beta=0.4, steps=4)
    assert parse_strategy("flare:theta=0.50").name == "flare:k=2,theta=0.5,beta=0.4,steps=4"
