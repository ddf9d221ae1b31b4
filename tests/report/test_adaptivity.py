"""The adaptivity report: retrievals per episode, retrieve success, and the recall it picks out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evalq.cli.main import cli
from evalq.db import queries
from evalq.db.models import Run
from evalq.db.session import open_store
from evalq.rag.episode import EpisodeResult, StepRecord
from evalq.report.adaptivity import compare_recall, load_adaptivity
from evalq.report.html import write_report
from evalq.report.summary import StatsOptions

QUESTIONS = 30


def dataset(tmp_path: Path) -> str:
    """A JSON Lines dataset whose question i has gold passages gi-a and gi-b."""
    path = tmp_path / "questions.jsonl"
    rows = [
        {
            "id": f"q{i}",
            "question": f"Q{i}?",
            "answer": "a",
            "gold_passages": [f"g{i}-a", f"g{i}-b"],
        }
        for i in range(QUESTIONS)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return f"jsonl:{path}"


def episode(i: int, steps: list[tuple[bool, list[str]]]) -> EpisodeResult:
    """An MDP episode of question i: (success, passage ids) per retrieve, then the answer."""
    result = EpisodeResult(f"q{i}", "mdp", 0, "ok", correct=len(steps) == 1, f1=0.5 * len(steps))
    result.steps = [
        StepRecord("retrieve", success=ok, judgement=0.9 if ok else 0.2, passage_ids=ids)
        for ok, ids in steps
    ]
    result.steps.append(StepRecord("terminate"))
    result.retrievals = len(steps)
    return result


def store(db_url: str, dataset_name: str, episodes: list[EpisodeResult]) -> int:
    with open_store(db_url).session() as s:
        run = queries.create_run(
            s,
            Run(
                dataset=dataset_name,
                difficulty="all",
                n=QUESTIONS,
                seed=0,
                model="test/m",
                strategies=["mdp", "fixed:k=3"],
                config={},
                code_version="test",
                status="done",
            ),
            [[f"q{i}" for i in range(QUESTIONS)]],
        )
        for result in episodes:
            queries.write_episode(s, run.id, run.shards[0].id, result, "test")
        return run.id


def informative(i: int) -> EpisodeResult:
    """Successful retrieves bring gold passages, failed ones none; every third stops at one."""
    hit = (True, [f"g{i}-a", f"g{i}-b"] if i % 2 else [f"g{i}-a", "x"])
    miss = (False, [f"x{i}", f"y{i}"])
    return episode(i, [hit] if i % 3 == 0 else [miss, hit])


def uninformative(i: int) -> EpisodeResult:
    """Success says nothing about recall: both outcomes see the same mix of gold."""
    return episode(i, [(i % 2 == 0, [f"g{i}-a", "x"]), (i % 2 == 1, [f"g{i}-a", "x"])][: 1 + i % 2])


def fixed(i: int) -> EpisodeResult:
    result = EpisodeResult(f"q{i}", "fixed:k=3", 0, "ok", correct=i % 2 == 0, f1=0.0)
    result.steps = [StepRecord("retrieve", passage_ids=["a", "b", "c"]), StepRecord("answer")]
    result.retrievals = 1
    return result


def test_successful_steps_with_more_gold_give_a_small_p(sqlite_url: str, tmp_path: Path) -> None:
    episodes = [informative(i) for i in range(QUESTIONS)] + [fixed(i) for i in range(QUESTIONS)]
    run_id = store(sqlite_url, dataset(tmp_path), episodes)
    with open_store(sqlite_url).session() as s:
        report = load_adaptivity(s, run_id)
    mdp, fixed_k = report.strategies
    assert (mdp.strategy, fixed_k.strategy) == ("mdp", "fixed:k=3")
    assert mdp.histogram == {0: 0, 1: 10, 2: 20} and fixed_k.histogram == {0: 0, 1: 30}
    assert (mdp.successes, mdp.judged_steps) == (30, 50)
    assert mdp.mean_judgement == pytest.approx((30 * 0.9 + 20 * 0.2) / 50)
    assert mdp.recall.successful == 30 and mdp.recall.unsuccessful == 20
    assert mdp.recall.successful_mean == pytest.approx(0.75) and mdp.recall.unsuccessful_mean == 0
    assert mdp.recall.p_value is not None and mdp.recall.p_value < 1e-6
    one, two = mdp.by_retrievals
    assert (one.retrievals, one.episodes, one.accuracy, one.f1) == (1, 10, 1.0, 0.5)
    assert (two.retrievals, two.episodes, two.accuracy, two.f1) == (2, 20, 0.0, 1.0)
    # Fixed-k retrieves have no success: no rate, no test, and it says why.
    assert fixed_k.success_rate is None and fixed_k.recall.note is not None


def test_success_unrelated_to_recall_gives_a_large_p(sqlite_url: str, tmp_path: Path) -> None:
    run_id = store(sqlite_url, dataset(tmp_path), [uninformative(i) for i in range(QUESTIONS)])
    with open_store(sqlite_url).session() as s:
        (mdp,) = load_adaptivity(s, run_id).strategies
    assert mdp.recall.successful_mean == mdp.recall.unsuccessful_mean == 0.5
    assert mdp.recall.p_value == 1.0 and mdp.recall.note == "every step has the same recall"
    mixed = compare_recall([0.0, 0.5, 1.0, 0.5] * 5, [0.5, 0.0, 1.0, 0.5] * 5)
    assert mixed.p_value is not None and mixed.p_value > 0.3


def test_cli_json_keys_and_table(sqlite_url: str, tmp_path: Path) -> None:
    run_id = store(sqlite_url, dataset(tmp_path), [informative(i) for i in range(QUESTIONS)])
    result = CliRunner().invoke(
        cli, ["--database-url", sqlite_url, "mdp", "adaptivity", str(run_id), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert set(payload) == {"run", "confidence", "gold_note", "recall_test", "strategies"}
    (mdp,) = payload["strategies"]
    assert set(mdp) == {
        "strategy",
        "episodes",
        "retrievals_histogram",
        "mean_retrievals",
        "retrieve_steps",
        "success_rate",
        "mean_judgement",
        "recall",
        "by_retrievals",
    }
    assert mdp["retrievals_histogram"] == {"0": 0, "1": 10, "2": 20}
    assert set(mdp["recall"]) >= {"successful_mean", "unsuccessful_mean", "p_value"}
    assert set(mdp["by_retrievals"][0]) == {"retrievals", "episodes", "accuracy", "f1"}
    table = CliRunner().invoke(
        cli,
        ["--database-url", sqlite_url, "mdp", "adaptivity", str(run_id)],
        env={"COLUMNS": "220"},
    )
    assert table.exit_code == 0, table.output
    assert "does the policy adapt" in table.output and "Mann-Whitney" in table.output
    missing = CliRunner().invoke(cli, ["--database-url", sqlite_url, "mdp", "adaptivity", "99"])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1


def test_html_report_has_the_adaptivity_section(sqlite_url: str, tmp_path: Path) -> None:
    run_id = store(sqlite_url, dataset(tmp_path), [informative(i) for i in range(QUESTIONS)])
    with open_store(sqlite_url).session() as s:
        report = write_report(s, run_id, tmp_path / "out", StatsOptions(n_resamples=50))
    page = report.html.read_text(encoding="utf-8")
    assert "Does the policy adapt?" in page and "alt='retrievals_histogram'" in page
    assert "Accuracy and F1 by number of retrievals" in page and "Mann-Whitney" in page
    assert (tmp_path / "out" / "retrievals_histogram.png").stat().st_size > 1000
