"""MDP episodes against a real BM25 retriever: the invariants every stored episode keeps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from engines import PassageEngine, judged

from evalq.data.question import Question
from evalq.data.registry import load_questions
from evalq.models.base import Generation, GenerationRequest
from evalq.rag.episode import EpisodeResult
from evalq.rag.mdp_solver import PRESETS, solve
from evalq.rag.prompts import NO_INFO
from evalq.rag.retrieval import CorpusRetrievers
from evalq.rag.runner import PendingEpisode, run_episodes
from evalq.rag.strategies import EpisodeContext, GenerationConfig, parse_strategy


def mdp_config(preset: str, max_steps: int = 10, **overrides: Any) -> dict[str, Any]:
    """A run's stored MDP config, as submit writes it."""
    params = PRESETS[preset].with_overrides(**overrides)
    solution = solve(params)
    return {
        "preset": preset,
        **params.to_json(),
        "theta_cont": solution.theta_cont,
        "theta_star": solution.theta_star,
        "k_step": 3,
        "max_steps": max_steps,
    }


@pytest.fixture(scope="module")
def retrievers() -> CorpusRetrievers:
    return CorpusRetrievers()


@pytest.fixture(scope="module")
def questions() -> list[Question]:
    return load_questions("hotpotqa", "all")[:24]


def run(
    spec: str,
    config: dict[str, Any],
    questions: Sequence[Question],
    retrievers: CorpusRetrievers,
    engine: Any = None,
) -> list[EpisodeResult]:
    strategy = parse_strategy(spec, config)
    ctx = EpisodeContext(
        generation=GenerationConfig(),
        c_r=config["c_r"],
        c_p=config["c_p"],
        passage=retrievers.passage,
    )

    def on_error(reason: str) -> EpisodeResult:
        raise AssertionError(reason)

    episodes = [PendingEpisode(strategy.episode(q, ctx), on_error) for q in questions]
    return list(
        run_episodes(episodes, engine or PassageEngine(), retrievers, concurrency=len(episodes))
    )


def assert_invariants(results: list[EpisodeResult], max_steps: int) -> None:
    for result in results:
        assert result.status == "ok", result.error
        actions = [step.action for step in result.steps]
        assert actions.count("terminate") == 1 and actions[-1] == "terminate", actions
        assert len(result.steps) <= max_steps + 1
        u = [0.0]
        for step in result.steps:
            assert step.u_before == u[-1], "each step starts where the last one ended"
            assert step.u_after is not None and step.u_after >= step.u_before
            u.append(step.u_after)
        assert result.retrievals == actions.count("retrieve")
        assert result.raw_output == result.steps[-1].text, "the answer call is graded"


@pytest.mark.parametrize("preset", ["base", "multi_gpu", "early"])
@pytest.mark.parametrize("max_steps", [0, 3, 10])
def test_every_episode_ends_with_one_answer_and_u_never_decreases(
    preset: str, max_steps: int, questions: list[Question], retrievers: CorpusRetrievers
) -> None:
    results = run("mdp", mdp_config(preset, max_steps), questions, retrievers)
    assert len(results) == len(questions)
    assert_invariants(results, max_steps)


def test_theta_cont_equal_theta_star_still_answers_every_question(
    questions: list[Question], retrievers: CorpusRetrievers
) -> None:
    config = mdp_config("multi_gpu")
    assert config["theta_cont"] == config["theta_star"], "the preset that crashed the original"
    results = run("mdp", config, questions, retrievers)
    assert_invariants(results, 10)
    assert all(r.answer is not None for r in results)
    assert not any(s.action == "reason" for r in results for s in r.steps), "it never reasons"


def test_retrieve_steps_record_query_passages_scores_text_and_tokens(
    questions: list[Question], retrievers: CorpusRetrievers
) -> None:
    results = run("mdp", mdp_config("early"), questions, retrievers)
    retrieves = [s for r in results for s in r.steps if s.action == "retrieve"]
    assert retrieves
    for step in retrieves:
        assert step.query and len(step.passage_ids) == len(step.scores) <= 3
        assert step.scores == sorted(step.scores, reverse=True)
        assert step.prompt_tokens > 0 and step.judgement is not None
        # The passage engine judges 0.9 with a gold passage in view, 0.1 without; only
        # passages judged useful get a note.
        assert step.success == (step.judgement >= 0.5)
        assert bool(step.text) == step.success
        gain = 0.25 if step.success else 0.0
        assert step.u_after == pytest.approx(min((step.u_before or 0.0) + gain, 1.0))
    for result in results:
        seen = [p for s in result.steps if s.action == "retrieve" for p in s.passage_ids]
        assert len(seen) == len(set(seen)), "a retrieve never returns a passage seen before"
        assert result.passage_ids == seen


class NothingHelps:
    """Every judgement is a sure no: retrieval never succeeds, so U moves only by reasoning."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [judged(r, 0.01) if r.choices else Generation(NO_INFO, 5, 1, 0.0) for r in requests]


def test_success_is_observed_not_sampled(
    questions: list[Question], retrievers: CorpusRetrievers
) -> None:
    config = mdp_config("multi_gpu", max_steps=4)
    results = run("mdp", config, questions, retrievers, NothingHelps())
    assert_invariants(results, 4)
    for result in results:
        assert [s.action for s in result.steps] == ["retrieve"] * 4 + ["terminate"]
        assert all(s.success is False and s.u_after == 0.0 for s in result.steps[:-1])


def test_retrieved_text_reaches_the_model(
    questions: list[Question], retrievers: CorpusRetrievers
) -> None:
    """The passage engine answers only from gold passages in its prompt."""
    closed = run("fixed:k=0", mdp_config("early"), questions, retrievers)
    fixed = run("fixed:k=3", mdp_config("early"), questions, retrievers)
    adaptive = run("mdp", mdp_config("early"), questions, retrievers)

    def accuracy(results: list[EpisodeResult]) -> float:
        return sum(bool(r.correct) for r in results) / len(results)

    assert accuracy(closed) == 0.0
    assert accuracy(fixed) > 0.5
    assert accuracy(adaptive) > 0.5
