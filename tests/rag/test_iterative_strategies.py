"""IRCoT, Iter-RetGen and FLARE together: their specs, sentences, and whole episodes.

The episodes run through the real batching driver against a real BM25 retriever and the
passage engine, a model that knows an answer only when a gold passage is in its prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from engines import PassageEngine

from evalq.data.question import Question
from evalq.data.registry import load_questions
from evalq.errors import UserError
from evalq.rag.episode import EpisodeResult
from evalq.rag.retrieval import CorpusRetrievers
from evalq.rag.runner import PendingEpisode, run_episodes
from evalq.rag.strategies import EpisodeContext, GenerationConfig, parse_strategy
from evalq.rag.strategies.iterative import first_sentence, says_answer

NEW = ("ircot", "iter-retgen", "flare")
C_R, C_P = 0.05, 0.02


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ircot:k=0", "strategy 'ircot:k=0': k must be a whole number >= 1; use ircot:k=N,steps=N"),
        ("ircot:steps=two", "strategy 'ircot:steps=two': steps must be a whole number >= 1"),
        ("ircot:rounds=2", "strategy 'ircot:rounds=2': unknown option 'rounds'; use ircot:"),
        ("iter-retgen:rounds=0", "rounds must be a whole number >= 1; use iter-retgen:k=N,"),
        ("iter-retgen:k=-1", "strategy 'iter-retgen:k=-1': k must be a whole number >= 1"),
        ("flare:theta=1.5", "strategy 'flare:theta=1.5': theta must be between 0 and 1"),
        ("flare:beta=nan", "strategy 'flare:beta=nan': beta must be between 0 and 1"),
        ("flare:theta=", "strategy 'flare:theta=': theta must be between 0 and 1"),
        ("flare:k=2.5", "strategy 'flare:k=2.5': k must be a whole number >= 1"),
    ],
)
def test_a_bad_option_is_one_user_error_that_says_how_to_write_it(spec: str, message: str) -> None:
    with pytest.raises(UserError) as raised:
        parse_strategy(spec)
    text = str(raised.value)
    assert message in text and "\n" not in text
    kind = spec.split(":")[0]
    assert f"any may be left out: {parse_strategy(kind).name})" in text, "the defaults"


def test_usage_names_each_options_kind() -> None:
    with pytest.raises(UserError, match=r"use flare:k=N,theta=P,beta=P,steps=N \(N >= 1, 0 <= P"):
        parse_strategy("flare:x=1")


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        (
            "Kiss and Tell starred Shirley Temple. She was nine.",
            "Kiss and Tell starred Shirley Temple.",
        ),
        (
            "  \n1. Temple served as Chief of Protocol.\n2. More",
            "Temple served as Chief of Protocol.",
        ),
        ("J. K. Rowling wrote it. Then", "J. K. Rowling wrote it."),
        ("It grew 3.5 times. Then", "It grew 3.5 times."),
        ("First line\nSecond line.", "First line"),
        ("Who was it? Temple.", "Who was it?"),
        ("No stop at all", "No stop at all"),
        ("   ", ""),
    ],
)
def test_the_first_sentence(text: str, sentence: str) -> None:
    assert first_sentence(text) == sentence


def test_a_sentence_says_the_answer_as_ircot_reads_it() -> None:
    assert says_answer("So the answer is: Paris.")
    assert says_answer("Thus the answer is Paris")
    assert not says_answer("The answer lies in the passages.")


@pytest.fixture(scope="module")
def retrievers() -> CorpusRetrievers:
    return CorpusRetrievers()


@pytest.fixture(scope="module")
def questions() -> list[Question]:
    return load_questions("hotpotqa", "all")[:24]


def run(spec: str, questions: Sequence[Question], retrievers: CorpusRetrievers) -> Any:
    strategy = parse_strategy(spec)
    ctx = EpisodeContext(GenerationConfig(), c_r=C_R, c_p=C_P, passage=retrievers.passage)

    def on_error(reason: str) -> EpisodeResult:
        raise AssertionError(reason)

    episodes = [PendingEpisode(strategy.episode(q, ctx), on_error) for q in questions]
    engine = PassageEngine()
    results = list(run_episodes(episodes, engine, retrievers, concurrency=len(episodes)))
    return results, engine


@pytest.mark.parametrize("spec", NEW)
def test_episodes_through_the_batching_driver_keep_their_invariants(
    spec: str, questions: list[Question], retrievers: CorpusRetrievers
) -> None:
    results, engine = run(spec, questions, retrievers)
    assert len(results) == len(questions)
    assert max(engine.calls) > 1, "the episodes' calls were batched together"
    for r in results:
        assert r.status == "ok" and r.strategy == parse_strategy(spec).name
        actions = [s.action for s in r.steps]
        assert actions[0] == "retrieve" and actions[-1] == "answer"
        assert actions.count("answer") == 1 and set(actions) <= {"retrieve", "reason", "answer"}
        assert r.retrievals == actions.count("retrieve") >= 1
        assert r.raw_output == r.steps[-1].text, "the answer call is graded"
        assert len(r.passage_ids) == len(set(r.passage_ids))
        retrieved = {p for s in r.steps if s.action == "retrieve" for p in s.passage_ids}
        assert set(r.passage_ids) <= retrieved and r.retrieval_recall is not None
        assert all(s.prompt_tokens > 0 for s in r.steps if s.action != "retrieve")
        k = int(r.strategy.split("k=")[1].split(",")[0])
        calls = len(r.steps) - r.retrievals
        assert r.cost == pytest.approx(r.retrievals * k * C_R + calls * C_P)


@pytest.mark.parametrize("spec", NEW)
def test_retrieved_text_reaches_the_model(
    spec: str, questions: list[Question], retrievers: CorpusRetrievers
) -> None:
    """The passage engine answers only from gold passages in its prompt."""
    closed, _ = run("fixed:k=0", questions, retrievers)
    results, _ = run(spec, questions, retrievers)
    assert sum(bool(r.correct) for r in closed) == 0
    assert sum(bool(r.correct) for r in results) >= len(questions) // 2
