"""Iter-RetGen's control flow, round by round against a scripted model and retriever."""

from __future__ import annotations

import pytest
from scripted import C_P, C_R, QUESTION, Script, drive, prompt, reply

from evalq.rag.prompts import ANSWER_INSTRUCTION
from evalq.rag.retrievers import Hit
from evalq.rag.strategies import parse_strategy
from evalq.rag.strategies.fixed import FixedK
from evalq.rag.strategies.iter_retgen import IterRetGen

Y1 = "Kiss and Tell starred Shirley Temple. So the answer is: actress."
Y2 = "Shirley Temple was Chief of Protocol. So the answer is: Chief of Protocol."


def test_each_round_searches_with_the_question_and_the_last_generation() -> None:
    script = Script([reply(Y1), reply(Y2), reply("Chief of Protocol")])
    result = drive(IterRetGen(k=3, rounds=3), script)

    assert [s.query for s in script.searches] == [
        QUESTION.text,
        f"{QUESTION.text} {Y1}",
        f"{QUESTION.text} {Y2}",
    ]
    assert all(s.k == 3 and not s.exclude for s in script.searches)
    assert [s.action for s in result.steps] == [
        *("retrieve", "reason", "retrieve", "reason", "retrieve", "answer")
    ]
    assert [s.text for s in result.steps if s.action == "reason"] == [Y1, Y2]
    assert result.retrievals == 3
    assert result.cost == pytest.approx(3 * (3 * C_R + C_P))
    assert result.raw_output == "Chief of Protocol" and result.correct


def test_each_generation_reads_its_own_rounds_passages_only() -> None:
    script = Script([reply(Y1), reply(Y2), reply("Chief of Protocol")])
    result = drive(IterRetGen(k=2, rounds=3), script)
    first, second, answer = (prompt(c) for c in script.calls)
    assert "text of p1-a" in first and "text of p2-a" not in first
    assert "text of p2-a" in second and "text of p1-a" not in second and Y1 not in second
    assert "text of p3-b" in answer and "text of p2-a" not in answer
    assert answer.endswith(ANSWER_INSTRUCTION), "the last round's generation is the answer"
    assert result.steps[-1].passage_ids == ["p3-a", "p3-b"]


def test_passages_found_in_several_rounds_count_once() -> None:
    script = Script([reply(Y1), reply("x")], hits=lambda n, r: [Hit("p-a", 2.0), Hit(f"p{n}", 1.0)])
    result = drive(IterRetGen(k=2, rounds=2), script)
    assert result.passage_ids == ["p-a", "p1", "p2"]


def test_an_empty_generation_searches_with_the_question_again() -> None:
    script = Script([reply(" "), reply("x")])
    drive(IterRetGen(k=1, rounds=2), script)
    assert [s.query for s in script.searches] == [QUESTION.text, QUESTION.text]


def test_one_round_is_fixed_k() -> None:
    one, fixed = Script([reply("Chief of Protocol")]), Script([reply("Chief of Protocol")])
    ours, theirs = drive(IterRetGen(k=3, rounds=1), one), drive(FixedK(3), fixed)
    assert one.searches == fixed.searches and one.calls == fixed.calls
    assert (ours.cost, ours.retrievals, ours.passage_ids) == (
        theirs.cost,
        theirs.retrievals,
        theirs.passage_ids,
    )


def test_the_spec_names_every_option_and_keeps_defaults() -> None:
    assert parse_strategy("iter-retgen") == IterRetGen(k=3, rounds=3)
    assert parse_strategy("iter-retgen:rounds=2").name == "iter-retgen:k=3,rounds=2"
