"""``evalq export --format seed``: the ARGO seed's files, names and fields, from a stored run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sample_run import FIXED_K, MODEL, PARAMS, QUESTIONS, add_sample_run

from evalq.cli.main import cli
from evalq.db.models import Episode, Run
from evalq.db.session import open_store

STEM = f"{MODEL.replace('/', '_')}_mixed_{QUESTIONS}q"
SINGLE = Path("results/multi_gpu") / f"{STEM}.json"
# The seed's field names (ARGO/mdp_rag_multi_gpu.py and compare_mdp_vs_fixed_multigpu.py).
SEED_TOP = {"timestamp", "model", "gpu_mode", "gpu_ids", "config"}
SEED_RESULT = {
    "question_id",
    "predicted",
    "correct",
    "is_correct",
    "iterations",
    "num_retrievals",
    "num_reasons",
    "total_cost",
    "history",
}
SEED_HISTORY = {
    "iteration",
    "action",
    "subquery",
    "retrieved_docs",
    "retrieval_success",
    "response",
    "intermediate_answer",
    "confidence",
    "uncertainty",
    "cost",
    "U_before",
    "U_after",
}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'evalq.db'}"


def export(db_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", db_url, "export", *args])
    return result.exit_code, result.output


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def expected_accuracy(strategy: str) -> float:
    """Accuracy over ok episodes of the sample run's fixed pattern."""
    if strategy == "mdp":
        ok = [i for i in range(QUESTIONS) if i != 1]
        return sum(i % 4 != 3 for i in ok) / len(ok)
    ok = [i for i in range(QUESTIONS) if i != 0]
    return sum(i % 2 == 0 for i in ok) / len(ok)


def test_seed_files_have_the_seeds_names_and_fields(db_url: str, tmp_path: Path) -> None:
    with open_store(db_url).session() as session:
        run_id = add_sample_run(session)
    code, output = export(db_url, str(run_id), "--format", "seed", "--out", str(tmp_path))
    assert code == 0, output
    comparisons = {
        k: Path("results/multi_gpu_comparison") / f"{STEM}_mdp_vs_fixed_k{k}.json"
        for k in (FIXED_K, 0)
    }
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    assert written == sorted([SINGLE, *comparisons.values()])
    assert f"multi_gpu: {QUESTIONS} results -> {tmp_path / SINGLE}" in output

    single = load(tmp_path / SINGLE)
    assert single.keys() >= SEED_TOP
    assert single["model"] == MODEL
    assert (
        single["config"] | {"n_questions": QUESTIONS, "difficulty": "mixed", "seed": 7}
        == (single["config"])
    )
    assert single["metrics"]["accuracy"] == pytest.approx(expected_accuracy("mdp"))
    results = single["results"]
    assert len(results) == QUESTIONS
    ok = [r for r in results if r["status"] == "ok"]
    assert single["metrics"]["avg_cost"] == pytest.approx(
        sum(r["total_cost"] for r in ok) / len(ok)
    )
    assert single["metrics"]["avg_iterations"] == pytest.approx(
        sum(r["iterations"] for r in ok) / len(ok)
    )
    for result in ok:
        assert result.keys() >= SEED_RESULT
        history = result["history"]
        assert result["iterations"] == len(history)
        assert [h["iteration"] for h in history] == list(range(1, len(history) + 1))
        assert all(h.keys() >= SEED_HISTORY for h in history)
        # Cumulative cost per step, ending at the episode's cost; U and uncertainty agree.
        assert history[-1]["cost"] == pytest.approx(result["total_cost"])
        assert all(h["uncertainty"] == pytest.approx(1 - h["U_after"]) for h in history)
        assert history[-1]["intermediate_answer"] == result["predicted"]
        assert result["num_reasons"] == sum(h["action"] == "reason" for h in history)
        assert result["num_retrievals"] == sum(h["action"] == "retrieve" for h in history)
    assert results[0]["history"][0]["cost"] == pytest.approx(PARAMS.c_r)
    failed = next(r for r in results if r["status"] == "error")
    assert failed["question_id"] == "q01" and failed["error"] == "engine died"

    versus = load(tmp_path / comparisons[FIXED_K])
    assert versus.keys() >= SEED_TOP
    assert versus["config"]["fixed_k"] == FIXED_K
    mdp, fixed = versus["mdp_strategy"], versus["fixed_strategy"]
    for block in (mdp, fixed):
        assert {"accuracy", "avg_cost", "avg_iterations", "results"} <= block.keys()
    assert mdp["accuracy"] == pytest.approx(expected_accuracy("mdp"))
    assert fixed["accuracy"] == pytest.approx(expected_accuracy(f"fixed:k={FIXED_K}"))
    assert fixed["avg_cost"] == pytest.approx(FIXED_K * PARAMS.c_r + PARAMS.c_p)
    assert versus["improvement"]["accuracy"] == pytest.approx(mdp["accuracy"] - fixed["accuracy"])
    assert versus["improvement"]["cost"] == pytest.approx(mdp["avg_cost"] - fixed["avg_cost"])
    first_fixed = next(r for r in fixed["results"] if r["status"] == "ok")
    assert [h["action"] for h in first_fixed["history"]] == ["retrieve", "answer"]
    assert len(first_fixed["history"][0]["retrieved_docs"]) == FIXED_K
    assert first_fixed["history"][0]["cost"] == pytest.approx(FIXED_K * PARAMS.c_r)


def test_run_without_mdp_says_which_formats_fit(db_url: str, tmp_path: Path) -> None:
    with open_store(db_url).session() as session:
        run = Run(
            dataset="oran",
            difficulty="easy",
            n=1,
            seed=0,
            model="tiny",
            strategies=["fixed:k=3"],
            config={},
            code_version="test",
        )
        session.add(run)
        session.flush()
        session.add(
            Episode(run_id=run.id, question_id="q", strategy="fixed:k=3", status="ok", correct=True)
        )
        run_id = run.id
    code, output = export(db_url, str(run_id), "--format", "seed", "--out", str(tmp_path / "o"))
    assert code == 2
    assert output.strip() == (
        f"Error: run {run_id} has no mdp episodes (it has: fixed:k=3); the seed layout holds "
        "MDP results: use --format csv, jsonl or parquet"
    )
    assert not (tmp_path / "o").exists()


def test_unknown_run(db_url: str, tmp_path: Path) -> None:
    code, output = export(db_url, "7", "--format", "seed", "--out", str(tmp_path))
    assert code == 2
    assert output.strip() == "Error: run 7 does not exist"
