"""`evalq mdp calibrate`: the judge threshold from gold-labelled steps, saved and submitted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from support import TINY, store_mdp_run

from evalq.cli.main import cli
from evalq.db.models import Run
from evalq.db.session import open_store
from evalq.rag.calibrate import LabelledStep, fit_judge_threshold
from evalq.rag.episode import EpisodeResult, StepRecord
from evalq.report.adaptivity import gold_passages


def evalq(db_url: str, *args: str, broker_url: str | None = None) -> tuple[int, str]:
    prefix = ["--database-url", db_url] + (["--broker-url", broker_url] if broker_url else [])
    result = CliRunner().invoke(cli, [*prefix, *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def judged_run(db_url: str, dataset: str, questions: Sequence[tuple[str, Sequence[str]]]) -> int:
    """A done MDP run at judge_threshold 0.5: per question, a retrieve of its gold passage
    judged about 0.2, then one of no gold passage judged about 0.1 (no step succeeds)."""
    episodes = []
    for i, (question_id, gold) in enumerate(questions):
        result = EpisodeResult(question_id, "mdp", 0, "ok", correct=i % 2 == 0)
        jitter = (i % 5) * 0.005
        result.steps = [
            StepRecord("retrieve", success=False, judgement=0.19 + jitter, passage_ids=[gold[0]]),
            StepRecord("retrieve", success=False, judgement=0.09 + jitter, passage_ids=["x:1"]),
            StepRecord("terminate"),
        ]
        episodes.append(result)
    return store_mdp_run(db_url, episodes, dataset=dataset, mdp_extra={"judge_threshold": 0.5})


def hotpot_questions(n: int) -> list[tuple[str, tuple[str, ...]]]:
    gold, note = gold_passages("hotpotqa", "all", None)
    assert note is None
    return list(gold.items())[:n]


def calibrate(db_url: str, run_id: int, *args: str) -> dict[str, Any]:
    code, output = evalq(db_url, "mdp", "calibrate", str(run_id), "--json", *args)
    assert code == 0, output
    result: dict[str, Any] = json.loads(output)
    return result


def test_youden_threshold_separates_the_two_kinds_of_step() -> None:
    steps = [LabelledStep(0.2 + i / 1000, True) for i in range(10)]
    steps += [LabelledStep(0.1 + i / 1000, False) for i in range(10)]
    steps += [LabelledStep(0.25, False), LabelledStep(0.05, True)]
    fit = fit_judge_threshold(steps, 0.5)
    # Candidates are the distinct judgements; the smallest gold one of the cluster wins.
    assert fit.threshold == pytest.approx(0.2)
    assert (fit.tpr, fit.fpr) == pytest.approx((10 / 11, 1 / 11))
    assert fit.youden_j == pytest.approx(9 / 11)
    # Mis-ordered pairs: the gold 0.05 under all 11 others, the other 0.25 over 10 more gold.
    assert fit.auc == pytest.approx(1 - 21 / 121)
    assert (fit.labelled, fit.gold_steps, fit.note) == (22, 11, None)

    one_kind = fit_judge_threshold([LabelledStep(0.3, True)], 0.15)
    assert one_kind.threshold == 0.15 and one_kind.note and "every step did" in one_kind.note
    useless = fit_judge_threshold([LabelledStep(0.1, True), LabelledStep(0.2, False)], 0.15)
    assert useless.threshold == 0.15 and useless.youden_j == 0.0 and useless.note


def test_calibrate_fits_the_threshold_and_re_estimates_p_s(sqlite_url: str) -> None:
    run_id = judged_run(sqlite_url, "hotpotqa", hotpot_questions(20))
    result = calibrate(sqlite_url, run_id)
    fit = result["threshold_fit"]
    assert fit["run_threshold"] == 0.5 and fit["changed"]
    assert 0.11 < fit["threshold"] <= 0.19
    assert fit["youden_j"] == pytest.approx(1.0) and fit["auc"] == pytest.approx(1.0)
    assert (fit["tpr"], fit["fpr"], fit["labelled"], fit["gold_steps"]) == (1.0, 0.0, 40, 20)
    # At 0.5 nothing succeeded; at the fitted threshold every first retrieve does.
    assert result["p_s_run"]["successes"] == 0
    assert (result["p_s"]["successes"], result["p_s"]["trials"]) == (20, 40)
    assert [p["estimate"] for p in result["p_s_by_position"]] == [1.0, 0.0]
    assert result["calibrated_params"]["p_s"] == 0.5

    code, table = evalq(sqlite_url, "mdp", "calibrate", str(run_id))
    assert code == 0, table
    assert "judge_threshold 0.5 -> 0.190: Youden's J 1.000" in table
    assert "40 labelled steps (20 retrieved a gold passage)" in table


def test_without_gold_the_threshold_is_kept_with_a_note(sqlite_url: str) -> None:
    questions = [(f"q{i}", ("x:gold",)) for i in range(6)]  # not the dataset's questions
    result = calibrate(sqlite_url, judged_run(sqlite_url, "hotpotqa", questions))
    fit = result["threshold_fit"]
    assert fit["threshold"] == 0.5 and not fit["changed"] and fit["youden_j"] is None
    assert result["notes"][0].startswith("judge_threshold kept at 0.5: no judged retrieve step")
    assert result["p_s"] == result["p_s_run"] and result["p_s"]["successes"] == 0


def test_saved_threshold_is_the_submitted_runs_unless_overridden(
    sqlite_url: str, redis_url: str
) -> None:
    source = judged_run(sqlite_url, "hotpotqa", hotpot_questions(20))
    calibrated = calibrate(sqlite_url, source, "--save", "smol")["threshold_fit"]["threshold"]
    code, listed = evalq(sqlite_url, "mdp", "presets", "--json")
    assert code == 0, listed
    saved = {entry["name"]: entry for entry in json.loads(listed)}["smol"]
    assert saved["params"]["judge_threshold"] == calibrated
    code, solved = evalq(sqlite_url, "mdp", "solve", "--preset", "smol", "--json")
    assert code == 0, solved

    def submitted(*mdp_set: str) -> dict[str, Any]:
        code, output = evalq(
            sqlite_url,
            "submit",
            *("--dataset", "hotpotqa", "--n", "3", "--model", TINY, "--strategy", "mdp"),
            *("--mdp-preset", "smol", *mdp_set),
            broker_url=redis_url,
        )
        assert code == 0, output
        with open_store(sqlite_url).session() as s:
            run = s.scalars(select(Run).order_by(Run.id.desc())).first()
            assert run is not None
            return dict(run.config["mdp"])

    assert submitted()["judge_threshold"] == calibrated
    assert submitted("--mdp-set", "judge_threshold=0.3")["judge_threshold"] == 0.3
