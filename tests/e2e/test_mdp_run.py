"""MDP and fixed-k runs through a real worker process, as a user drives them from the CLI.

One worker (the passage engine: it answers only from gold passages in its prompt) serves
every run of this module, on its private Redis and a SQLite file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from support import RedisServer, Worker, wait_for_run

from evalq.cli.corpus import COMMANDS as CORPUS_COMMANDS
from evalq.cli.main import cli
from evalq.data.registry import load_corpus, load_questions
from evalq.db.models import Episode, Run, Step
from evalq.db.session import open_store
from evalq.scheduler.submit import sample_questions

# Until evalq/cli/main.py registers them (add_command is idempotent).
for _command in CORPUS_COMMANDS:
    cli.add_command(_command)

MODEL = "test/passage"


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[str, str]]:
    """(database URL, broker URL) with one passage-engine worker consuming."""
    redis_server.flush()
    tmp = tmp_path_factory.mktemp("mdp-run")
    db_url = f"sqlite:///{tmp / 'evalq.db'}"
    worker = Worker(
        db_url, redis_server.url, tmp / "worker.log", model=MODEL, engine="engines:passage_engine"
    )
    try:
        worker.wait_ready(timeout=120)
        yield db_url, redis_server.url
    finally:
        worker.stop()


def evalq(service: tuple[str, str], *args: str) -> str:
    db_url, broker_url = service
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "--broker-url", broker_url, *args], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def submit_and_wait(service: tuple[str, str], *args: str) -> int:
    output = evalq(service, "submit", "--model", MODEL, *args)
    match = re.match(r"run (\d+):", output)
    assert match, output
    run_id = int(match.group(1))
    wait_for_run(service[0], run_id, [], timeout=180)
    return run_id


def results(service: tuple[str, str], run_id: int) -> dict[str, dict[str, Any]]:
    payload = json.loads(evalq(service, "results", str(run_id), "--format", "json"))
    return {row["strategy"]: row for row in payload["strategies"]}


def episodes_with_steps(
    db_url: str, run_id: int, strategy: str
) -> list[tuple[Episode, list[Step]]]:
    with open_store(db_url).session() as s:
        episodes = list(
            s.scalars(select(Episode).where(Episode.run_id == run_id, Episode.strategy == strategy))
        )
        out = []
        for episode in episodes:
            steps = list(
                s.scalars(select(Step).where(Step.episode_id == episode.id).order_by(Step.index))
            )
            s.expunge_all()
            out.append((episode, steps))
        return out


def assert_mdp_invariants(
    db_url: str, run_id: int, n: int, max_steps: int
) -> list[tuple[Episode, list[Step]]]:
    stored = episodes_with_steps(db_url, run_id, "mdp")
    assert len(stored) == n
    for episode, steps in stored:
        assert episode.status == "ok", episode.error
        actions = [step.action for step in steps]
        assert actions.count("terminate") == 1 and actions[-1] == "terminate", actions
        assert len(steps) <= max_steps + 1 and episode.steps == len(steps)
        u = 0.0
        for step in steps:
            assert step.u_before == u and step.u_after is not None and step.u_after >= u
            u = step.u_after
        assert episode.answer is not None and episode.raw_output == steps[-1].text
    return stored


def test_mdp_and_fixed_k_on_hotpotqa(service: tuple[str, str]) -> None:
    db_url = service[0]
    run_id = submit_and_wait(
        service,
        *("--dataset", "hotpotqa", "--n", "40", "--seed", "1", "--shard-size", "20"),
        *("--strategy", "mdp", "--strategy", "fixed:k=3", "--strategy", "fixed:k=0"),
        *("--mdp-preset", "early", "--max-steps", "6"),
    )

    stored = assert_mdp_invariants(db_url, run_id, 40, 6)
    retrieves = [step for _, steps in stored for step in steps if step.action == "retrieve"]
    assert retrieves, "the early preset retrieves first"
    for step in retrieves:
        assert step.query and step.passage_ids and len(step.scores) == len(step.passage_ids)
        assert step.prompt_tokens > 0 and step.completion_tokens > 0
        # Judged in one token; only passages judged useful get a note.
        assert step.judgement is not None and step.success == (step.judgement >= 0.5)
        assert bool(step.text) == step.success
        gain = 0.25 if step.success else 0.0
        assert step.u_after == pytest.approx(min((step.u_before or 0.0) + gain, 1.0))
    reasons = [step for _, steps in stored for step in steps if step.action == "reason"]
    assert reasons and all(s.text and s.prompt_tokens > 0 for s in reasons)

    table = evalq(service, "results", str(run_id)).splitlines()
    header = next(line.split() for line in table if "accuracy" in line)
    for column in ("accuracy", "recall", "cost", "steps", "tokens"):
        assert column in header
    rows = {line.split()[0]: line.split() for line in table if line.split()[:1] != []}
    for strategy in ("mdp", "fixed:k=3", "fixed:k=0"):
        assert len(rows[strategy]) == len(header)

    by_strategy = results(service, run_id)
    closed, fixed, mdp = by_strategy["fixed:k=0"], by_strategy["fixed:k=3"], by_strategy["mdp"]
    assert all(r["episodes"] == 40 and r["errors"] == 0 for r in by_strategy.values())
    # Retrieved text reaches the model: closed-book knows nothing, top-3 finds gold passages.
    assert closed["accuracy"] == 0.0
    assert fixed["accuracy"] > 0.5 and fixed["retrieval_recall"] > 0.3
    assert mdp["accuracy"] > 0.5 and mdp["retrieval_recall"] > 0.3
    assert fixed["mean_steps"] == 2 and fixed["mean_retrievals"] == 1
    assert mdp["mean_retrievals"] >= 1 and 1 < mdp["mean_steps"] <= 7
    assert mdp["prompt_tokens"] > fixed["prompt_tokens"] > closed["prompt_tokens"] > 0
    assert fixed["mean_cost"] == pytest.approx(3 * 0.05 + 0.02)

    calibration = json.loads(evalq(service, "mdp", "calibrate", str(run_id), "--json"))
    p_s = calibration["p_s"]
    assert p_s["trials"] == len(retrieves)
    assert p_s["successes"] == sum(bool(step.success) for step in retrieves)
    assert p_s["low"] <= p_s["estimate"] <= p_s["high"]


def test_theta_cont_equal_theta_star_answers_every_question(service: tuple[str, str]) -> None:
    run_id = submit_and_wait(
        service,
        *("--dataset", "hotpotqa", "--n", "20", "--seed", "2", "--strategy", "mdp"),
        *("--mdp-preset", "multi_gpu", "--max-steps", "5"),
    )
    with open_store(service[0]).session() as s:
        mdp = s.get_one(Run, run_id).config["mdp"]
    assert mdp["theta_cont"] == mdp["theta_star"]
    stored = assert_mdp_invariants(service[0], run_id, 20, 5)
    assert not any(step.action == "reason" for _, steps in stored for step in steps)


def test_malformed_oran_rows_are_stored_invalid_with_user_corpus(
    service: tuple[str, str], tmp_path: Path
) -> None:
    docs = tmp_path / "specs"
    docs.mkdir()
    (docs / "fronthaul.md").write_text(
        "# Fronthaul\n\nThe O-RAN fronthaul between O-DU and O-RU uses split option 7.2x.\n\n"
        "The management plane configures the O-RU over NETCONF.\n",
        encoding="utf-8",
    )
    (docs / "near-rt-ric.txt").write_text(
        "The near-RT RIC hosts xApps and controls RAN elements over the E2 interface "
        "within 10 ms to 1 s control loops.\n",
        encoding="utf-8",
    )
    evalq(service, "corpus", "add", "oran-specs-e2e", str(docs))

    # The worker samples as submit does: find a seed whose sample holds both kinds of bad row.
    questions = load_questions("oran-bench", "hard")
    seed = next(
        seed
        for seed in range(10_000)
        if {"no options", "expected 4 options, found 5"}
        <= {q.invalid for q in sample_questions(questions, 30, seed)}
    )
    sample = {q.id: q for q in sample_questions(questions, 30, seed)}
    run_id = submit_and_wait(
        service,
        *("--dataset", "oran-bench", "--difficulty", "hard", "--n", "30", "--seed", str(seed)),
        *("--corpus", "oran-specs-e2e", "--strategy", "fixed:k=0", "--strategy", "fixed:k=2"),
    )
    with open_store(service[0]).session() as s:
        run = s.get_one(Run, run_id)
        assert run.config["corpus"] == "oran-specs-e2e" and run.config["retriever"] == "bm25"
        episodes = list(s.scalars(select(Episode).where(Episode.run_id == run_id)))
        retrieve_steps = list(
            s.scalars(
                select(Step)
                .join(Episode, Step.episode_id == Episode.id)
                .where(Episode.run_id == run_id, Step.action == "retrieve")
            )
        )
    assert len(episodes) == 60
    for episode in episodes:
        question = sample[episode.question_id]
        if question.invalid is None:
            assert episode.status == "ok", episode.error
        else:
            assert episode.status == "invalid" and episode.error == question.invalid
    reasons = {e.error for e in episodes if e.status == "invalid"}
    assert {"no options", "expected 4 options, found 5"} <= reasons
    valid = sum(q.invalid is None for q in sample.values())
    assert len(retrieve_steps) == valid, "one retrieve per valid fixed:k=2 episode"
    assert all(p.startswith("oran-specs-e2e:") for step in retrieve_steps for p in step.passage_ids)
    by_strategy = results(service, run_id)
    assert by_strategy["fixed:k=2"]["invalid"] == 30 - valid


def test_jsonl_questions_with_a_user_corpus(service: tuple[str, str], tmp_path: Path) -> None:
    """The user's own questions and documents: gold passages found, recall and accuracy."""
    hotpot = load_corpus("hotpotqa")
    questions = load_questions("hotpotqa", "all")[:30]
    gold = {p for q in questions for p in q.gold_passages}
    distractors = [p.id for p in hotpot.passages if p.id not in gold][:300]
    passages = tmp_path / "passages.jsonl"
    passages.write_text(
        "".join(
            json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n"
            for p in hotpot.passages
            if p.id in gold or p.id in distractors
        ),
        encoding="utf-8",
    )
    evalq(service, "corpus", "add", "my-wiki-e2e", str(passages))
    file = tmp_path / "questions.jsonl"
    file.write_text(
        "".join(
            json.dumps(
                {
                    "id": q.id,
                    "question": q.text,
                    "answer": q.gold,
                    "gold_passages": list(q.gold_passages),
                }
            )
            + "\n"
            for q in questions
        ),
        encoding="utf-8",
    )
    run_id = submit_and_wait(
        service,
        *("--dataset", f"jsonl:{file}", "--corpus", "my-wiki-e2e", "--n", "30"),
        *("--strategy", "fixed:k=0", "--strategy", "fixed:k=3"),
    )
    by_strategy = results(service, run_id)
    assert by_strategy["fixed:k=0"]["accuracy"] == 0.0
    assert by_strategy["fixed:k=3"]["accuracy"] > 0.5
    assert by_strategy["fixed:k=3"]["retrieval_recall"] > 0.3
