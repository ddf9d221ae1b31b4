"""`evalq mdp calibrate`: p_s and per-step lifts from stored MDP steps, and re-solved thresholds."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats
from support import store_mdp_run

from evalq.cli.main import cli
from evalq.rag.calibrate import (
    Coefficient,
    EpisodeTrace,
    estimate_lifts,
    estimate_p_s,
    proportion,
    recalibrate,
)
from evalq.rag.episode import EpisodeResult, StepRecord
from evalq.rag.mdp_solver import PRESETS, solve


def test_p_s_is_the_success_fraction_of_retrieve_steps_with_an_exact_interval() -> None:
    traces = [
        EpisodeTrace("q1", True, (True, False, True)),
        EpisodeTrace("q2", False, (False, True)),
        EpisodeTrace("q3", True, (True, True, True, True), reasons=2),
        EpisodeTrace("q4", False, ()),
    ]
    overall, by_position = estimate_p_s(traces)
    assert overall is not None
    assert (overall.successes, overall.trials) == (7, 9)
    # Clopper-Pearson for 7 of 9, as published tables give it.
    assert (overall.low, overall.high) == pytest.approx((0.3999, 0.9719), abs=1e-4)
    assert [(p.successes, p.trials) for p in by_position] == [(2, 3), (2, 3), (2, 2), (1, 1)]
    assert estimate_p_s([EpisodeTrace("q", True)]) == (None, [])


def exact_linear_data(
    intercept: float, per_retrieve: float, per_reason: float
) -> list[EpisodeTrace]:
    """20 episodes per (successful retrieves, reason steps) cell, correct in exact proportion."""
    traces = []
    for successes, reasons in itertools.product(range(3), (0, 2, 4)):
        p = intercept + per_retrieve * successes + per_reason * reasons
        correct = round(20 * p)
        for i in range(20):
            traces.append(
                EpisodeTrace(
                    f"s{successes}-r{reasons}-{i}",
                    i < correct,
                    (True,) * successes + (False,) * (i % 2),
                    reasons,
                )
            )
    return traces


def test_lifts_recover_a_known_linear_accuracy_model() -> None:
    intercept, retrieve, reason = estimate_lifts(exact_linear_data(0.1, 0.2, 0.05))
    assert intercept.estimate == pytest.approx(0.1)
    assert retrieve.estimate == pytest.approx(0.2)
    assert reason.estimate == pytest.approx(0.05)
    for coefficient in (intercept, retrieve, reason):
        assert coefficient.low is not None and coefficient.high is not None
        assert coefficient.low < coefficient.estimate < coefficient.high  # type: ignore[operator]
    wider = estimate_lifts(exact_linear_data(0.1, 0.2, 0.05), confidence=0.99)[1]
    assert wider.high - wider.low > retrieve.high - retrieve.low  # type: ignore[operator]


def test_lifts_that_the_data_cannot_separate_say_why() -> None:
    same_reasons = [
        EpisodeTrace(f"q{i}", i % 3 == 0, (True,) * (i % 2), reasons=3) for i in range(30)
    ]
    intercept, retrieve, reason = estimate_lifts(same_reasons)
    assert retrieve.estimate is not None
    assert reason.estimate is None and reason.reason and "no variation" in reason.reason
    assert intercept.estimate is None, "3 reason steps each: accuracy at 0 steps is unseen"

    never_reasons = [EpisodeTrace(f"q{i}", i % 3 == 0, (True,) * (i % 2)) for i in range(30)]
    intercept, retrieve, reason = estimate_lifts(never_reasons)
    assert intercept.estimate is not None and retrieve.estimate is not None
    assert reason.estimate is None

    lockstep = [
        EpisodeTrace(f"q{i}", i % 2 == 0, (True,) * (i % 3), 2 * (i % 3)) for i in range(30)
    ]
    intercept, retrieve, reason = estimate_lifts(lockstep)
    assert retrieve.estimate is None and reason.estimate is None and intercept.estimate is None
    assert retrieve.reason and "lockstep" in retrieve.reason


def test_recalibrate_puts_in_what_is_usable_and_says_what_it_kept() -> None:
    base = PRESETS["early"]
    p_s = proportion(6, 10)
    lift = Coefficient("per successful retrieve", 0.3, 0.05, 0.2, 0.4)
    negative = Coefficient("per reason step", -0.02, 0.01, -0.04, 0.0)
    params, notes = recalibrate(base, p_s, lift, negative)
    assert (params.p_s, params.delta_r, params.delta_p) == (0.6, 0.3, base.delta_p)
    assert len(notes) == 1 and "delta_p kept" in notes[0]

    sqrt = base.with_overrides(quality="sqrt")
    params, notes = recalibrate(sqrt, None, lift, lift)
    assert (params.p_s, params.delta_r, params.delta_p) == (sqrt.p_s, sqrt.delta_r, sqrt.delta_p)
    assert len(notes) == 3 and all("kept" in note for note in notes)


def store_run(db_url: str, strategies: list[str], episodes: list[EpisodeResult]) -> int:
    return store_mdp_run(db_url, episodes, strategies=tuple(strategies))


def mdp_episode(qid: str, retrieves: list[bool], reasons: int, correct: bool) -> EpisodeResult:
    result = EpisodeResult(qid, "mdp", 0, "ok", correct=correct)
    result.steps = [StepRecord("retrieve", success=ok) for ok in retrieves]
    result.steps += [StepRecord("reason") for _ in range(reasons)]
    result.steps.append(StepRecord("terminate"))
    return result


def test_calibrate_command_reads_a_stored_run(db_url: str) -> None:
    episodes = [
        mdp_episode(f"q{i}", [i % 4 != 0] + [True] * (i % 2), reasons=i % 3, correct=i % 2 == 0)
        for i in range(24)
    ]
    episodes += [EpisodeResult(f"q{i}", "fixed:k=0", 0, "ok", correct=False) for i in range(24)]
    episodes.append(EpisodeResult("bad", "mdp", 0, "invalid"))
    run_id = store_run(db_url, ["mdp", "fixed:k=0"], episodes)

    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "mdp", "calibrate", str(run_id), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    retrieves = [s.success for e in episodes if e.strategy == "mdp" for s in e.steps]
    successes = sum(1 for s in retrieves if s)
    trials = sum(1 for s in retrieves if s is not None)
    assert payload["mdp_episodes"] == 24 and payload["closed_book_episodes"] == 24
    assert (payload["p_s"]["successes"], payload["p_s"]["trials"]) == (successes, trials)
    assert payload["calibrated_params"]["p_s"] == pytest.approx(successes / trials)
    expected = solve(
        PRESETS["early"].with_overrides(
            **{k: payload["calibrated_params"][k] for k in ("p_s", "delta_r", "delta_p")}
        )
    )
    assert payload["theta_cont"]["calibrated"] == expected.theta_cont
    assert payload["theta_star"]["calibrated"] == expected.theta_star

    table = CliRunner().invoke(
        cli, ["--database-url", db_url, "mdp", "calibrate", str(run_id)], env={"COLUMNS": "200"}
    )
    assert table.exit_code == 0, table.output
    assert "p_s" in table.output and "calibrated" in table.output and "not causal" in table.output


def test_calibrate_refuses_runs_it_cannot_use(sqlite_url: str) -> None:
    fixed_only = store_run(sqlite_url, ["fixed:k=3"], [EpisodeResult("q", "fixed:k=3", 0, "ok")])
    no_episodes = store_run(sqlite_url, ["mdp"], [EpisodeResult("q", "mdp", 0, "error")])
    for run_id, message in (
        (fixed_only, "no mdp strategy"),
        (no_episodes, "no finished mdp"),
        (999, "no run 999"),
    ):
        result = CliRunner().invoke(
            cli, ["--database-url", sqlite_url, "mdp", "calibrate", str(run_id)]
        )
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and message in result.output


def judged_episode(qid: str, judgements: list[float], correct: bool) -> EpisodeResult:
    """An MDP episode whose retrieves were judged; success = judgement >= 0.5."""
    result = EpisodeResult(qid, "mdp", 0, "ok", correct=correct)
    result.steps = [StepRecord("retrieve", success=j >= 0.5, judgement=j) for j in judgements]
    result.steps.append(StepRecord("terminate"))
    return result


def test_calibrate_estimates_p_s_from_observed_judgements(sqlite_url: str) -> None:
    judgements = [[0.9, 0.2], [0.7], [0.4, 0.6, 0.8], [0.1], [0.95, 0.3]]
    episodes = [judged_episode(f"q{i}", js, correct=i % 2 == 0) for i, js in enumerate(judgements)]
    run_id = store_run(sqlite_url, ["mdp"], episodes)
    flat = [j for js in judgements for j in js]

    def calibrate(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(
            cli, ["--database-url", sqlite_url, "mdp", "calibrate", str(run_id), "--json", *args]
        )
        assert result.exit_code == 0, result.output
        payload: dict[str, Any] = json.loads(result.output)
        return payload

    payload = calibrate()
    # The success rate: judgements at or above the default threshold 0.5.
    assert (payload["p_s"]["successes"], payload["p_s"]["trials"]) == (5, 9)
    assert payload["judge_threshold"] == 0.5 and payload["p_s_from"] == "rate"
    low, high = stats.t.interval(0.95, len(flat) - 1, loc=np.mean(flat), scale=stats.sem(flat))
    judgement = payload["judgement"]
    assert judgement["n"] == 9
    assert judgement["estimate"] == pytest.approx(np.mean(flat))
    assert (judgement["low"], judgement["high"]) == pytest.approx((low, high))
    assert payload["calibrated_params"]["p_s"] == pytest.approx(5 / 9)
    expected = solve(PRESETS["early"].with_overrides(**payload["calibrated_params"]))
    assert payload["theta_cont"]["calibrated"] == expected.theta_cont

    by_mean = calibrate("--p-s-from", "judgement")
    assert by_mean["p_s_from"] == "judgement"
    assert by_mean["calibrated_params"]["p_s"] == pytest.approx(np.mean(flat))


def test_runs_before_judgements_calibrate_from_the_success_rate(sqlite_url: str) -> None:
    run_id = store_run(sqlite_url, ["mdp"], [mdp_episode("q", [True, False], 0, True)])
    result = CliRunner().invoke(
        cli,
        [
            "--database-url",
            sqlite_url,
            "mdp",
            "calibrate",
            str(run_id),
            "--json",
            "--p-s-from",
            "judgement",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["judgement"] is None
    assert payload["calibrated_params"]["p_s"] == 0.5
    assert any("no retrieve step of this run was judged" in n for n in payload["notes"])
