"""IRCoT's control flow, step by step against a scripted model and retriever."""

from __future__ import annotations

import pytest
from scripted import C_P, C_R, QUESTION, Script, drive, prompt, reply

from evalq.rag.prompts import ANSWER_INSTRUCTION
from evalq.rag.retrievers import Hit
from evalq.rag.strategies import parse_strategy
from evalq.rag.strategies.ircot import MAX_PASSAGES, IRCoT

THOUGHTS = [
    "Kiss and Tell starred Shirley Temple. She was a child actress.",
    "Shirley Temple later served as Chief of Protocol.",
    "So the answer is: Chief of Protocol.",
]


def test_each_sentence_is_the_next_query_until_one_says_the_answer() -> None:
    script = Script([reply(t) for t in THOUGHTS] + [reply("Chief of Protocol")])
    result = drive(IRCoT(k=2, steps=8), script)

    assert [s.query for s in script.searches] == [
        QUESTION.text,
        "Kiss and Tell starred Shirley Temple.",  # the first sentence only
        "Shirley Temple later served as Chief of Protocol.",
    ]
    assert [s.action for s in result.steps] == ["retrieve", "reason"] * 3 + ["answer"]
    reasons = [s for s in result.steps if s.action == "reason"]
    assert [s.text for s in reasons] == [THOUGHTS[0].split(" She")[0], *THOUGHTS[1:]]
    assert result.retrievals == 3
    collected = ["p1-a", "p1-b", "p2-a", "p2-b", "p3-a", "p3-b"]
    assert result.passage_ids == collected
    assert result.steps[-1].passage_ids == collected
    # k passages a search, a call per sentence and one to answer.
    assert result.cost == pytest.approx(3 * 2 * C_R + 4 * C_P)
    assert result.raw_output == "Chief of Protocol" and result.correct


def test_each_reasoning_call_reads_every_passage_so_far_and_every_sentence() -> None:
    script = Script([reply(t) for t in THOUGHTS] + [reply("Chief of Protocol")])
    drive(IRCoT(k=2, steps=8), script)
    first, second, third = (prompt(c) for c in script.calls[:3])
    # How to stop is offered once there is reasoning to stop (docs/baselines.md).
    assert "answer is" not in first and "So the answer is" in second
    assert all(f"text of {p}" in second for p in ("p1-a", "p1-b", "p2-a", "p2-b"))
    assert "Reasoning so far: Kiss and Tell starred Shirley Temple." in second
    assert "text of p3-a" in third and THOUGHTS[1] in third
    # The calls of an episode share their prefix: new passages go after the old ones.
    assert second.index("text of p1-b") < second.index("text of p2-a")


def test_the_reader_answers_from_the_passages_alone() -> None:
    script = Script([reply(t) for t in THOUGHTS] + [reply("Chief of Protocol")])
    drive(IRCoT(), script)
    reader = prompt(script.calls[-1])
    assert reader.endswith(ANSWER_INSTRUCTION)
    assert "text of p1-a" in reader and "Shirley Temple" not in reader


def test_steps_caps_the_sentences() -> None:
    script = Script([reply("A thought."), reply("Another thought."), reply("Paris")])
    result = drive(IRCoT(k=1, steps=2), script)
    assert [s.action for s in result.steps] == [
        "retrieve",
        "reason",
        "retrieve",
        "reason",
        "answer",
    ]
    assert [s.query for s in script.searches] == [QUESTION.text, "A thought."]
    assert result.cost == pytest.approx(2 * 1 * C_R + 3 * C_P)


def test_collecting_stops_at_fifteen_passages() -> None:
    script = Script([reply(f"Thought {n}.") for n in range(10)] + [reply("x")])
    result = drive(IRCoT(k=6, steps=10), script)
    assert len(script.searches) == 3  # 6 + 6 + 3 of the third search's 6
    assert len(result.passage_ids) == MAX_PASSAGES
    assert result.steps[-2].action == "reason" and len(script.calls) == 4


def test_passages_found_again_are_collected_once() -> None:
    same = Script(
        [reply("One."), reply("Two."), reply("x")],
        hits=lambda n, r: [Hit("p-a", 2.0), Hit("p-b", 1.0)],
    )
    result = drive(IRCoT(k=2, steps=2), same)
    assert result.passage_ids == ["p-a", "p-b"]
    assert [s.passage_ids for s in result.steps if s.action == "retrieve"] == [["p-a", "p-b"]] * 2
    assert prompt(same.calls[1]).count("text of p-a") == 1


def test_an_empty_sentence_ends_the_reasoning() -> None:
    script = Script([reply("  "), reply("Paris")])
    result = drive(IRCoT(), script)
    assert [s.action for s in result.steps] == ["retrieve", "reason", "answer"]
    assert result.steps[1].text == ""


def test_the_spec_names_every_option_and_keeps_defaults() -> None:
    assert parse_strategy("ircot") == IRCoT(k=2, steps=4)
    assert parse_strategy("ircot").name == "ircot:k=2,steps=4"
    assert parse_strategy("ircot:steps=6").name == "ircot:k=2,steps=6"
