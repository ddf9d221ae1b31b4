"""The MDP's retrieve, step by step against a scripted model and retriever.

The episode generator is driven by hand: each generation request is answered by a script
(the judge's P(yes), the model's query reply), each retrieval by fixed hits, so every
branch of a retrieve is seen exactly: judged below the threshold, no note and U unchanged;
at or above it, a note and U grows; a repeated or chatty query replaced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from evalq.data.corpus import Passage
from evalq.data.question import Question
from evalq.models.base import Generation, GenerationRequest
from evalq.rag.episode import EpisodeResult, RetrievalRequest, Retrieved
from evalq.rag.mdp_solver import PRESETS
from evalq.rag.retrievers import Hit
from evalq.rag.strategies import EpisodeContext, GenerationConfig
from evalq.rag.strategies.mdp import MDPStrategy

QUESTION = Question(
    id="q1",
    text="Which city hosts the museum founded by Ada Lovelace?",
    gold="London",
    corpus="c",
)


def passage(corpus: str, pid: str) -> Passage:
    return Passage(pid, f"Title {pid}", f"text of {pid}")


def strategy(max_steps: int = 3, **run_mdp: Any) -> MDPStrategy:
    """Always retrieve (theta_cont = 1) up to ``max_steps`` retrieves."""
    config = {"preset": "early", "theta_cont": 1.0, "theta_star": 1.0, "k_step": 2}
    return MDPStrategy.from_spec("mdp", {}, {**config, "max_steps": max_steps, **run_mdp})


def judged(p_yes: float) -> Generation:
    return Generation(
        "yes" if p_yes >= 0.5 else "no",
        10,
        1,
        0.0,
        choice_logprobs={"yes": math.log(p_yes), "no": math.log(1.0 - p_yes)},
    )


def drive(
    s: MDPStrategy, judgements: Sequence[float | None], replies: Sequence[str] = ()
) -> tuple[EpisodeResult, list[GenerationRequest], list[RetrievalRequest]]:
    """Run one episode: retrieve n returns passages pn-a, pn-b; judge n says judgements[n]."""
    ctx = EpisodeContext(GenerationConfig(), c_r=0.05, c_p=0.02, passage=passage)
    episode = s.episode(QUESTION, ctx)
    asked: list[GenerationRequest] = []
    searched: list[RetrievalRequest] = []
    judge_n, reply_n = iter(judgements), iter(replies)
    reply: Any = None
    try:
        while True:
            action = episode.send(reply)
            if isinstance(action, RetrievalRequest):
                searched.append(action)
                n = len(searched)
                reply = Retrieved([Hit(f"p{n}-a", 2.0), Hit(f"p{n}-b", 1.0)], 0.0)
                continue
            asked.append(action)
            content = action.messages[-1]["content"]
            if action.choices is not None:
                p = next(judge_n)
                reply = Generation("?", 10, 1, 0.0) if p is None else judged(p)
            elif "search engine query" in content:
                reply = Generation(next(reply_n, "museum founder city"), 10, 4, 0.0)
            elif "state the facts" in content:
                reply = Generation(f"Note {len(searched)}: Ada Lovelace museum Paris.", 10, 8, 0.0)
            else:
                reply = Generation("Answer: London", 10, 3, 0.0)
    except StopIteration as stop:
        result: EpisodeResult = stop.value
    return result, asked, searched


def is_note(r: GenerationRequest) -> bool:
    return "state the facts" in r.messages[-1]["content"]


def test_below_threshold_no_note_and_u_unchanged() -> None:
    result, asked, _ = drive(strategy(max_steps=1), [0.3])
    step = result.steps[0]
    assert step.action == "retrieve" and step.judgement == pytest.approx(0.3)
    assert step.success is False and step.u_after == step.u_before == 0.0
    assert step.text is None and not any(is_note(r) for r in asked)
    judge = next(r for r in asked if r.choices is not None)
    assert judge.choices == ("yes", "no") and judge.max_tokens == 1
    assert "Answer yes or no." in judge.messages[-1]["content"]


def test_at_or_above_threshold_a_note_and_u_grows() -> None:
    result, asked, _ = drive(strategy(max_steps=2), [0.8, 0.5])
    delta_r = PRESETS["early"].delta_r
    first, second = result.steps[0], result.steps[1]
    assert first.success and first.judgement == pytest.approx(0.8)
    assert (
        first.u_after == pytest.approx(delta_r)
        and first.text == "Note 1: Ada Lovelace museum Paris."
    )
    assert second.success, "a judgement equal to the threshold succeeds"
    assert second.u_after == pytest.approx(2 * delta_r)
    assert sum(is_note(r) for r in asked) == 2
    # The note is evidence for the answer: it reaches the answer call.
    assert "Note 1" in asked[-1].messages[-1]["content"]


def test_the_threshold_is_a_run_option() -> None:
    result, _, _ = drive(strategy(max_steps=1, judge_threshold=0.9), [0.8])
    assert result.steps[0].success is False
    result, _, _ = drive(strategy(max_steps=1, judge_threshold=0.2), [0.3])
    assert result.steps[0].success is True


def test_no_log_probabilities_is_no_judgement_and_no_success() -> None:
    result, _, _ = drive(strategy(max_steps=1), [None])
    assert result.steps[0].judgement is None and result.steps[0].success is False


def test_chatter_is_cleaned_from_the_model_query() -> None:
    reply = 'What a delightful question! Search query: "Ada Lovelace museum city"\nMore chat.'
    result, _, searched = drive(strategy(max_steps=2), [0.2, 0.2], [reply])
    assert searched[0].query == QUESTION.text, "the first query is the question"
    assert searched[1].query == "Ada Lovelace museum city"
    assert result.steps[1].query == "Ada Lovelace museum city"


def test_a_repeated_query_falls_back_to_the_latest_note() -> None:
    # The second and third replies repeat the first: the third retrieve must not reuse it.
    result, _, searched = drive(
        strategy(max_steps=3), [0.9, 0.2, 0.2], ["museum founder city", "Museum city founder?"]
    )
    queries = [r.query for r in searched]
    assert queries[1] == "museum founder city"
    assert queries[2] == f"{QUESTION.text} 1 paris", "the note's words the question lacks"
    assert len({frozenset(q.lower().split()) for q in queries}) == 3
    assert [s.query for s in result.steps[:3]] == queries


def test_a_chat_only_reply_falls_back_and_no_query_repeats() -> None:
    chat = "In one or two sentences, what is still missing: the city."
    _, _, searched = drive(strategy(max_steps=5), [0.1] * 5, [chat] * 4)
    queries = [r.query for r in searched]
    assert all("sentences" not in q for q in queries)
    # Nothing judged useful, so no note: the fallbacks are the question plus seen titles.
    assert queries[1] == f"{QUESTION.text} Title p1-a"
    assert len(set(queries)) == 5


def test_the_threshold_is_set_like_an_mdp_parameter_and_kept_out_of_the_model() -> None:
    from evalq.errors import UserError
    from evalq.scheduler.submit import RunRequest, judge_threshold, mdp_params

    def request(**overrides: str) -> RunRequest:
        return RunRequest("hotpotqa", "m", ("mdp",), 1, mdp_overrides=overrides)

    assert judge_threshold(request()) == 0.5
    assert judge_threshold(request(judge_threshold="0.7", p_s="0.5")) == 0.7
    # Not a parameter of the decision model: the solved thresholds' cache key is unchanged.
    assert mdp_params(request(judge_threshold="0.7")) == mdp_params(request())
    for bad in ("1.5", "yes"):
        with pytest.raises(UserError, match="judge_threshold"):
            judge_threshold(request(judge_threshold=bad))
