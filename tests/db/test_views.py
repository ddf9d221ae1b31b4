"""The analysis views agree with ``evalq results`` and read the same on SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session

from evalq.db import queries
from evalq.db.models import Episode, Run, Shard, Step
from evalq.db.session import MIGRATIONS, open_store
from evalq.rag.mdp_solver import PRESETS, solve

VIEWS = {"run_summary", "strategy_summary", "episode_detail"}
BIG, SMALL = "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"
PARAMS = PRESETS["early"]
SOLUTION = solve(PARAMS)

# Per question: (difficulty, mdp correct, fixed correct). q5 has no difficulty recorded.
OUTCOMES = {
    "q0": ("easy", True, True),
    "q1": ("easy", True, False),
    "q2": ("medium", True, False),
    "q3": ("medium", False, True),
    "q4": ("hard", False, False),
    "q5": (None, True, False),
}


def mdp_steps(reasons: int, failed_retrieves: int) -> list[Step]:
    """Failed retrieves, one successful one, ``reasons`` reason steps, then the answer."""
    steps: list[Step] = []
    u = 0.0
    for i in range(failed_retrieves + 1):
        success = i == failed_retrieves
        after = u + PARAMS.delta_r if success else u
        steps.append(Step(action="retrieve", u_before=u, u_after=after, success=success))
        u = after
    for _ in range(reasons):
        steps.append(Step(action="reason", u_before=u, u_after=u + PARAMS.delta_p))
        u += PARAMS.delta_p
    steps.append(Step(action="terminate", u_before=u, u_after=u, text="1"))
    for index, step in enumerate(steps):
        step.index = index
    return steps


def add_run(session: Session, model: str, questions: dict[str, tuple[Any, bool, bool]]) -> int:
    """A run of mdp and fixed:k=3 with two shards (one done, one failed) and every status."""
    run = Run(
        name=model.split("/")[-1],
        dataset="oran",
        difficulty="mixed",
        n=len(questions),
        seed=1,
        model=model,
        strategies=["mdp", "fixed:k=3"],
        config={
            "mdp": {
                "preset": "early",
                **PARAMS.to_json(),
                "theta_cont": SOLUTION.theta_cont,
                "theta_star": SOLUTION.theta_star,
            }
        },
        code_version="test",
        status="failed",
    )
    session.add(run)
    session.flush()
    ids = list(questions)
    session.add(Shard(run_id=run.id, index=0, question_ids=ids[:3], status="done"))
    session.add(Shard(run_id=run.id, index=1, question_ids=ids[3:], status="failed"))
    for n, (qid, (difficulty, mdp_ok, fixed_ok)) in enumerate(questions.items()):
        steps = mdp_steps(reasons=n % 3, failed_retrieves=n % 2)
        mdp = Episode(
            run_id=run.id,
            question_id=qid,
            strategy="mdp",
            status="ok",
            difficulty=difficulty,
            answer="1",
            gold="1" if mdp_ok else "2",
            correct=mdp_ok,
            parsed=True,
            cost=sum(PARAMS.c_r if s.action == "retrieve" else PARAMS.c_p for s in steps),
            steps=len(steps),
            retrievals=sum(s.action == "retrieve" for s in steps),
            prompt_tokens=100 * len(steps),
            completion_tokens=10 * len(steps),
            latency_s=0.5 * len(steps),
        )
        fixed = Episode(
            run_id=run.id,
            question_id=qid,
            strategy="fixed:k=3",
            status="ok",
            difficulty=difficulty,
            correct=fixed_ok,
            parsed=fixed_ok or n != 1,  # q1: the answer could not be parsed
            cost=3 * PARAMS.c_r + PARAMS.c_p,
            steps=2,
            retrievals=1,
            prompt_tokens=400,
            completion_tokens=3,
            latency_s=0.25,
        )
        session.add_all([mdp, fixed])
        session.flush()
        for step in steps:
            step.episode_id = mdp.id
        session.add_all(steps)
    session.add_all(
        [
            Episode(run_id=run.id, question_id="bad", strategy="mdp", status="invalid"),
            Episode(
                run_id=run.id, question_id="boom", strategy="fixed:k=3", status="error", error="x"
            ),
        ]
    )
    session.flush()
    return run.id


def add_runs(session: Session) -> tuple[int, int]:
    """Two runs of the same questions on two models; the small one (first) gets four of them."""
    small = add_run(session, SMALL, dict(list(OUTCOMES.items())[:4]))
    big = add_run(session, BIG, OUTCOMES)
    return big, small


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_store(db_url).engine
    yield engine
    engine.dispose()


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def test_strategy_summary_equals_evalq_results(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        run_ids = add_runs(session)
    for run_id in run_ids:
        with Session(engine) as session:
            expected = queries.run_results(session, queries.get_run(session, run_id))
        found = {
            r["strategy"]: r
            for r in rows(engine, "SELECT * FROM strategy_summary WHERE run_id = :r", r=run_id)
        }
        assert sorted(found) == sorted(e.strategy for e in expected)
        for result in expected:
            row = found[result.strategy]
            assert row["ok"] == result.episodes
            assert (row["invalid"], row["errors"]) == (result.invalid, result.errors)
            assert row["episodes"] == result.episodes + result.invalid + result.errors
            assert row["unparsed"] == result.unparsed
            assert row["prompt_tokens"] == result.prompt_tokens
            for column, value in (
                ("accuracy", result.accuracy),
                ("mean_cost", result.mean_cost),
                ("mean_steps", result.mean_steps),
                ("mean_retrievals", result.mean_retrievals),
                ("mean_latency_s", result.mean_latency_s),
            ):
                assert isinstance(row[column], float), column  # not Decimal on Postgres
                assert row[column] == pytest.approx(value), column
            assert row["attempted"] == result.attempted == result.episodes + result.errors
            assert isinstance(row["accuracy_attempted"], float)  # not Decimal, not integer
            assert row["accuracy_attempted"] == pytest.approx(result.accuracy_attempted)
            assert row["f1_attempted"] is result.f1_attempted is None  # multiple choice
    (mdp,) = rows(engine, "SELECT * FROM strategy_summary WHERE strategy = 'mdp' AND run_id = 1")
    assert (mdp["correct"], mdp["ok"], mdp["invalid"]) == (3, 4, 1)  # the small run's four
    assert mdp["accuracy"] == pytest.approx(3 / 4)
    # fixed:k=3 of the small run: 4 ok (q0, q3 right) and the error "boom", scored wrong.
    (fixed,) = rows(
        engine, "SELECT * FROM strategy_summary WHERE strategy = 'fixed:k=3' AND run_id = 1"
    )
    assert (fixed["ok"], fixed["errors"], fixed["attempted"]) == (4, 1, 5)
    assert fixed["accuracy"] == pytest.approx(2 / 4)
    assert fixed["accuracy_attempted"] == pytest.approx(2 / 5)


def test_run_summary_counts_shards_episodes_and_thresholds(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        big, _ = add_runs(session)
    (row,) = rows(engine, "SELECT * FROM run_summary WHERE run_id = :r", r=big)
    assert (row["model"], row["name"], row["status"]) == (BIG, "Qwen2.5-7B-Instruct", "failed")
    assert (row["shards"], row["shards_done"], row["shards_failed"]) == (2, 1, 1)
    assert (row["episodes"], row["ok"], row["invalid"], row["errors"]) == (14, 12, 1, 1)
    assert row["accuracy"] == pytest.approx(6 / 12)
    assert row["mdp_preset"] == "early"
    assert row["theta_cont"] == pytest.approx(SOLUTION.theta_cont)
    assert row["theta_star"] == pytest.approx(SOLUTION.theta_star)
    assert row["tokens"] == sum(
        r["tokens"]
        for r in rows(engine, "SELECT tokens FROM episode_detail WHERE run_id = :r", r=big)
    )


def test_episode_detail_has_one_row_per_episode_with_its_steps(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        big, _ = add_runs(session)
    detail = rows(engine, "SELECT * FROM episode_detail WHERE run_id = :r", r=big)
    assert len(detail) == 14
    by_key = {(r["question_id"], r["strategy"]): r for r in detail}
    q2 = by_key[("q2", "mdp")]  # n = 2: two reasons, no failed retrieve
    assert (q2["reasons"], q2["retrievals"], q2["steps"]) == (2, 1, 4)
    assert q2["final_u"] == pytest.approx(PARAMS.delta_r + 2 * PARAMS.delta_p)
    assert (q2["is_correct"], q2["model"], q2["difficulty"]) == (1, BIG, "medium")
    assert by_key[("q5", "mdp")]["difficulty"] == "unknown"
    assert by_key[("q3", "fixed:k=3")]["final_u"] is None
    assert by_key[("q3", "fixed:k=3")]["reasons"] == 0
    assert by_key[("boom", "fixed:k=3")]["error"] == "x"


def test_downgrade_drops_the_views_and_upgrade_restores_them(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(MIGRATIONS)))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    assert set(inspect(engine).get_view_names()) >= VIEWS
    command.downgrade(config, "0001")
    assert not VIEWS & set(inspect(engine).get_view_names())
    assert "episodes" in inspect(engine).get_table_names()
    command.upgrade(config, "head")
    assert set(inspect(engine).get_view_names()) >= VIEWS


def test_attempted_f1_scores_an_error_zero_and_leaves_invalid_out(engine: Engine) -> None:
    """Open answers: F1 over ok episodes, and over ok + error with the error scored 0."""
    with Session(engine) as session, session.begin():
        run = Run(
            dataset="hotpotqa",
            difficulty="mixed",
            n=4,
            seed=1,
            model=BIG,
            strategies=["mdp"],
            config={},
            code_version="test",
        )
        session.add(run)
        session.flush()
        for qid, status, f1 in (("a", "ok", 1.0), ("b", "ok", 0.5), ("c", "error", None)):
            session.add(
                Episode(
                    run_id=run.id,
                    question_id=qid,
                    strategy="mdp",
                    status=status,
                    correct=f1 == 1.0 if f1 is not None else None,
                    exact_match=float(f1 == 1.0) if f1 is not None else None,
                    f1=f1,
                )
            )
        session.add(Episode(run_id=run.id, question_id="d", strategy="mdp", status="invalid"))
        run_id = run.id
    with Session(engine) as session:
        (result,) = queries.run_results(session, queries.get_run(session, run_id))
    assert (result.episodes, result.errors, result.invalid, result.attempted) == (2, 1, 1, 3)
    assert result.accuracy == pytest.approx(1 / 2)
    assert result.accuracy_attempted == pytest.approx(1 / 3)
    assert result.f1 == pytest.approx(0.75)
    assert result.f1_attempted == pytest.approx(0.5)
    (row,) = rows(engine, "SELECT * FROM strategy_summary WHERE run_id = :r", r=run_id)
    assert row["attempted"] == 3
    assert row["accuracy_attempted"] == pytest.approx(1 / 3)
    assert row["f1_attempted"] == pytest.approx(0.5)
