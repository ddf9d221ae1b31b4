"""Paired comparison: statistics equal SciPy's on known outcomes, through the API and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from evalq.cli.main import cli
from evalq.db.models import Episode, Run
from evalq.db.session import open_store
from evalq.report.compare import (
    BootstrapMethod,
    Comparison,
    Estimate,
    compare,
    load_paired,
    paired_permutation_p,
    to_json,
    to_markdown,
    to_rich_table,
)

RESAMPLES = 2000

# Known outcomes per question: (difficulty, mdp correct, fixed:k=3 correct).
# easy: both 5, only mdp 3, only fixed 0, neither 2. hard: both 2, only mdp 2, only fixed 4, 2.
OUTCOMES: dict[str, tuple[str, bool, bool]] = {
    **{f"e{i}": ("easy", i < 8, i < 5) for i in range(10)},
    **{f"h{i}": ("hard", i < 4, i < 2 or 4 <= i < 8) for i in range(10)},
}
MDP: dict[str, float] = {
    "cost": 0.8,
    "steps": 4,
    "retrievals": 3,
    "prompt_tokens": 100,
    "completion_tokens": 20,
    "latency_s": 2.0,
}
FIXED: dict[str, float] = {
    "cost": 0.7,
    "steps": 1,
    "retrievals": 3,
    "prompt_tokens": 300,
    "completion_tokens": 10,
    "latency_s": 1.0,
}


def make_run(session: Session, strategies: list[str], model: str = "tiny") -> Run:
    run = Run(
        dataset="oran",
        difficulty="mixed",
        n=len(OUTCOMES),
        seed=0,
        model=model,
        strategies=strategies,
        config={},
        code_version="test",
    )
    session.add(run)
    session.flush()
    return run


def add_episode(
    session: Session,
    run: Run,
    question_id: str,
    strategy: str,
    correct: bool | None,
    *,
    status: str = "ok",
    difficulty: str | None = "easy",
    repeat: int = 0,
    metrics: dict[str, float] | None = None,
) -> None:
    session.add(
        Episode(
            run_id=run.id,
            question_id=question_id,
            strategy=strategy,
            repeat=repeat,
            status=status,
            difficulty=difficulty,
            correct=correct,
            **(metrics or {}),
        )
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'evalq.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_store(db_url).engine  # the schema users get: migrations
    yield engine
    engine.dispose()


@pytest.fixture
def run_id(engine: Engine) -> int:
    """A run of mdp vs fixed:k=3 with OUTCOMES, plus rows that must be left out."""
    with Session(engine) as session:
        run = make_run(session, ["mdp", "fixed:k=3"])
        for qid, (difficulty, mdp_ok, fixed_ok) in OUTCOMES.items():
            add_episode(session, run, qid, "mdp", mdp_ok, difficulty=difficulty, metrics=MDP)
            add_episode(
                session, run, qid, "fixed:k=3", fixed_ok, difficulty=difficulty, metrics=FIXED
            )
        # Left out: mdp invalid on x1, fixed error on x2, fixed never ran x3.
        add_episode(session, run, "x1", "mdp", None, status="invalid", metrics=MDP)
        add_episode(session, run, "x1", "fixed:k=3", True, metrics=FIXED)
        add_episode(session, run, "x2", "mdp", True, metrics=MDP)
        add_episode(session, run, "x2", "fixed:k=3", None, status="error", metrics=FIXED)
        add_episode(session, run, "x3", "mdp", True, metrics=MDP)
        session.commit()
        return run.id


def expected(difficulty: str | None) -> tuple[float, float, int, int]:
    """Accuracy of A and B, only-A and only-B counts, straight from OUTCOMES."""
    rows = [(a, b) for d, a, b in OUTCOMES.values() if difficulty in (None, d)]
    acc_a = sum(a for a, _ in rows) / len(rows)
    acc_b = sum(b for _, b in rows) / len(rows)
    only_a = sum(a and not b for a, b in rows)
    only_b = sum(b and not a for a, b in rows)
    return acc_a, acc_b, only_a, only_b


def contains(estimate: Estimate) -> bool:
    assert estimate.value is not None and estimate.interval is not None
    low, high = estimate.interval
    return low <= estimate.value <= high and low < high


def run_compare(
    engine: Engine, run_id: int, *, seed: int = 0, method: BootstrapMethod = "BCa"
) -> Comparison:
    with Session(engine) as session:
        paired = load_paired(session, run_id, "mdp", run_id, "fixed:k=3")
    return compare(paired, n_resamples=RESAMPLES, seed=seed, method=method)


def test_accuracy_and_mcnemar_equal_scipy_overall_and_per_difficulty(
    engine: Engine, run_id: int
) -> None:
    result = run_compare(engine, run_id)
    assert [g.group for g in result.by_difficulty] == ["easy", "hard"]
    for group in result.groups:
        acc_a, acc_b, only_a, only_b = expected(None if group.group == "overall" else group.group)
        assert group.n == (20 if group.group == "overall" else 10)
        assert group.accuracy_a.value == pytest.approx(acc_a)
        assert group.accuracy_b.value == pytest.approx(acc_b)
        assert group.accuracy_diff.value == pytest.approx(acc_a - acc_b)
        assert (group.only_a_correct, group.only_b_correct) == (only_a, only_b)
        scipy_p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
        assert group.mcnemar_p == pytest.approx(scipy_p, rel=1e-12)
        for estimate in (group.accuracy_a, group.accuracy_b, group.accuracy_diff):
            assert contains(estimate)


def test_invalid_error_and_unpaired_episodes_are_left_out_and_counted(
    engine: Engine, run_id: int
) -> None:
    with Session(engine) as session:
        paired = load_paired(session, run_id, "mdp", run_id, "fixed:k=3")
    assert paired.n == 20
    assert not {"x1", "x2", "x3"} & {qid for qid, _ in paired.keys}
    assert paired.counts_a.excluded == {"invalid": 1}
    assert (paired.counts_a.total, paired.counts_a.ok, paired.counts_a.unpaired) == (23, 22, 2)
    assert paired.counts_b.excluded == {"error": 1}
    assert (paired.counts_b.total, paired.counts_b.ok, paired.counts_b.unpaired) == (22, 21, 1)


def test_mean_deltas_are_a_minus_b(engine: Engine, run_id: int) -> None:
    deltas = {d.name: d.delta for d in run_compare(engine, run_id).overall.deltas}
    assert deltas["cost"] == pytest.approx(0.8 - 0.7)
    assert deltas["steps"] == pytest.approx(3)
    assert deltas["retrievals"] == pytest.approx(0)
    assert deltas["tokens"] == pytest.approx(120 - 310)
    assert deltas["latency_s"] == pytest.approx(1.0)


def test_same_seed_gives_same_intervals(engine: Engine, run_id: int) -> None:
    first = run_compare(engine, run_id, seed=7).overall.accuracy_diff
    again = run_compare(engine, run_id, seed=7).overall.accuracy_diff
    assert first == again


def test_percentile_method_also_contains_point_estimates(engine: Engine, run_id: int) -> None:
    overall = run_compare(engine, run_id, method="percentile").overall
    assert contains(overall.accuracy_a) and contains(overall.accuracy_diff)


def test_two_runs_compare_on_shared_questions(engine: Engine) -> None:
    with Session(engine) as session:
        small, large = make_run(session, ["mdp"], "small"), make_run(session, ["mdp"], "large")
        for i in range(6):
            add_episode(session, small, f"q{i}", "mdp", i < 2)
        for i in range(2, 8):  # shares q2..q5 with the small model
            add_episode(session, large, f"q{i}", "mdp", True)
        session.commit()
        paired = load_paired(session, small.id, "mdp", large.id, "mdp")
    result = compare(paired, n_resamples=RESAMPLES)
    assert result.overall.n == 4
    assert result.overall.accuracy_a.value == 0.0
    assert result.overall.accuracy_b.value == 1.0
    assert result.overall.mcnemar_p == pytest.approx(stats.binomtest(0, 4, 0.5).pvalue)
    assert result.counts_a.unpaired == 2 and result.counts_b.unpaired == 2


@pytest.mark.parametrize("n", [0, 1, 3])
def test_degenerate_data_gives_notes_not_crashes(engine: Engine, n: int) -> None:
    with Session(engine) as session:
        run = make_run(session, ["mdp", "fixed:k=3"])
        for i in range(n):  # every answer correct on both sides
            add_episode(session, run, f"q{i}", "mdp", True)
            add_episode(session, run, f"q{i}", "fixed:k=3", True)
        add_episode(session, run, "bad", "mdp", None, status="error")
        add_episode(session, run, "bad", "fixed:k=3", None, status="error")
        session.commit()
        paired = load_paired(session, run.id, "mdp", run.id, "fixed:k=3")
    result = compare(paired, n_resamples=RESAMPLES)
    overall = result.overall
    assert overall.n == n
    assert overall.mcnemar_p == 1.0
    if n == 0:
        assert overall.accuracy_a.value is None and overall.accuracy_a.interval is None
        assert result.by_difficulty == ()
    elif n == 1:
        assert overall.accuracy_a.value == 1.0 and overall.accuracy_a.interval is None
    else:
        assert overall.accuracy_a.interval == (1.0, 1.0)
        assert overall.accuracy_diff.interval == (0.0, 0.0)
    assert overall.accuracy_a.note and overall.accuracy_diff.note
    json.dumps(to_json(result))
    assert "overall" in to_markdown(result)
    to_rich_table(result)


def test_json_and_markdown_name_the_direction_and_the_exclusions(
    engine: Engine, run_id: int
) -> None:
    result = run_compare(engine, run_id)
    data = to_json(result)
    assert data["difference"] == "a_minus_b"
    assert data["a"]["excluded"] == {"invalid": 1}
    assert [g["group"] for g in data["by_difficulty"]] == ["easy", "hard"]
    markdown = to_markdown(result)
    assert "A = run 1 mdp, B = run 1 fixed:k=3" in markdown
    assert "excluded invalid 1" in markdown and "excluded error 1" in markdown


def invoke(db_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", db_url, "compare", *args])
    return result.exit_code, result.output


def test_cli_json_equals_scipy_and_infers_the_two_strategies(db_url: str, run_id: int) -> None:
    code, output = invoke(db_url, str(run_id), "--format", "json", "--resamples", "500")
    assert code == 0, output
    data = json.loads(output)
    assert (data["a"]["strategy"], data["b"]["strategy"]) == ("mdp", "fixed:k=3")
    acc_a, acc_b, only_a, only_b = expected(None)
    overall = data["overall"]
    assert overall["accuracy_a"]["value"] == pytest.approx(acc_a)
    assert overall["accuracy_b"]["value"] == pytest.approx(acc_b)
    assert overall["mcnemar_exact_p"] == pytest.approx(
        stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    )
    low, high = (
        overall["accuracy_diff_a_minus_b"]["low"],
        overall["accuracy_diff_a_minus_b"]["high"],
    )
    assert low <= acc_a - acc_b <= high


def test_cli_swaps_sides_when_asked(db_url: str, run_id: int) -> None:
    args = ["--a", "fixed:k=3", "--format", "json", "--method", "percentile"]
    code, output = invoke(db_url, str(run_id), *args)
    assert code == 0, output
    data = json.loads(output)
    assert (data["a"]["strategy"], data["b"]["strategy"]) == ("fixed:k=3", "mdp")
    acc_a, acc_b, _, _ = expected(None)
    assert data["overall"]["accuracy_diff_a_minus_b"]["value"] == pytest.approx(acc_b - acc_a)
    assert data["bootstrap"]["method"] == "percentile"


@pytest.mark.parametrize("output_format", ["table", "markdown"])
def test_cli_table_and_markdown_show_every_group(
    db_url: str, run_id: int, output_format: str
) -> None:
    code, output = invoke(db_url, str(run_id), "--format", output_format, "--resamples", "500")
    assert code == 0, output
    for word in ("overall", "easy", "hard", "McNemar"):
        assert word in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["99"], "run 99 does not exist"),
        (["1", "--a", "mdp", "--b", "fixed:k=9"], "no episodes for strategy 'fixed:k=9'"),
        (["1", "--a", "mdp", "--b", "mdp"], "same episodes"),
    ],
)
def test_cli_user_errors_are_one_line_and_exit_2(
    db_url: str, run_id: int, args: list[str], message: str
) -> None:
    assert run_id == 1
    code, output = invoke(db_url, *args)
    assert code == 2
    assert message in output
    assert len(output.strip().splitlines()) == 1


def test_cli_needs_a_and_b_when_the_run_has_more_than_two_strategies(
    engine: Engine, db_url: str
) -> None:
    with Session(engine) as session:
        run = make_run(session, ["mdp", "fixed:k=0", "fixed:k=3"])
        for strategy in ("mdp", "fixed:k=0", "fixed:k=3"):
            add_episode(session, run, "q0", strategy, True)
        session.commit()
        run_id = run.id
    code, output = invoke(db_url, str(run_id))
    assert code == 2
    assert "choose two with --a and --b" in output
    code, output = invoke(db_url, str(run_id), "--a", "fixed:k=0", "--b", "mdp", "--format", "json")
    assert code == 0, output


def test_cli_takes_a_strategy_by_a_short_spec(engine: Engine, db_url: str) -> None:
    """Episodes carry every option of their spec; ``--a ircot`` means the run's ircot."""
    stored = ["ircot:k=2,steps=4", "flare:k=2,theta=0.5,beta=0.4,steps=4", "fixed:k=3"]
    with Session(engine) as session:
        run = make_run(session, stored)
        for strategy in stored:
            add_episode(session, run, "q0", strategy, True)
        session.commit()
        run_id = run.id
    args = ["--a", "ircot", "--b", "flare:theta=0.50", "--format", "json"]
    code, output = invoke(db_url, str(run_id), *args)
    assert code == 0, output
    data = json.loads(output)
    assert (data["a"]["strategy"], data["b"]["strategy"]) == tuple(stored[:2])
    code, output = invoke(db_url, str(run_id), "--a", "flare", "--b", "fixed:k=3")
    assert code == 2 and "no episodes for strategy 'flare'" in output, "not this run's flare"


def test_cli_on_an_empty_database_says_the_run_is_missing(tmp_path: Path) -> None:
    code, output = invoke(f"sqlite:///{tmp_path / 'empty.db'}", "1")
    assert code == 2
    assert "run 1 does not exist" in output
    assert len(output.strip().splitlines()) == 1


def test_rows_without_difficulty_group_as_unknown(engine: Engine) -> None:
    with Session(engine) as session:
        run = make_run(session, ["mdp", "fixed:k=3"])
        for i in range(4):
            add_episode(session, run, f"q{i}", "mdp", i % 2 == 0, difficulty=None)
            add_episode(session, run, f"q{i}", "fixed:k=3", True, difficulty=None)
        session.commit()
        paired = load_paired(session, run.id, "mdp", run.id, "fixed:k=3")
    result = compare(paired, n_resamples=RESAMPLES)
    assert [g.group for g in result.by_difficulty] == ["unknown"]
    assert np.isclose(result.overall.accuracy_diff.value or 0.0, -0.5)


def add_scored(
    session: Session,
    run: Run,
    question_id: str,
    strategy: str,
    f1: float | None,
    *,
    status: str = "ok",
    difficulty: str = "easy",
) -> None:
    """An open-answer episode: correct is exact match, as the answer scorer sets it."""
    exact = None if f1 is None else float(f1 == 1.0)
    session.add(
        Episode(
            run_id=run.id,
            question_id=question_id,
            strategy=strategy,
            status=status,
            difficulty=difficulty,
            correct=None if exact is None else exact == 1.0,
            exact_match=exact,
            f1=f1,
        )
    )


def open_answer_run(engine: Engine, f1_a: list[float], f1_b: list[float]) -> int:
    """mdp vs fixed:k=3 with the given F1 per question, alternately easy and hard."""
    with Session(engine) as session:
        run = make_run(session, ["mdp", "fixed:k=3"])
        for i, (a, b) in enumerate(zip(f1_a, f1_b, strict=True)):
            difficulty = ("easy", "hard")[i % 2]
            add_scored(session, run, f"q{i}", "mdp", a, difficulty=difficulty)
            add_scored(session, run, f"q{i}", "fixed:k=3", b, difficulty=difficulty)
        session.commit()
        return run.id


# Partial credit only: no answer is an exact match, so accuracy and EM tie at 0 on both.
PARTIAL_A = [0.5 + 0.01 * i for i in range(30)]
PARTIAL_B = [0.2 + 0.01 * (i % 7) for i in range(30)]


def test_f1_better_on_every_question_gives_a_positive_interval_and_small_p(
    engine: Engine,
) -> None:
    run_id = open_answer_run(engine, PARTIAL_A, PARTIAL_B)
    with Session(engine) as session:
        paired = load_paired(session, run_id, "mdp", run_id, "fixed:k=3")
    result = compare(paired, n_resamples=RESAMPLES)
    overall = result.overall
    assert overall.mcnemar_p == 1.0  # what accuracy alone said
    f1 = overall.score("f1")
    assert f1 is not None
    assert f1.diff.value == pytest.approx(np.mean(PARTIAL_A) - np.mean(PARTIAL_B))
    assert f1.mean_a.value == pytest.approx(np.mean(PARTIAL_A))
    assert f1.diff.interval is not None and f1.diff.interval[0] > 0
    assert contains(f1.mean_a) and contains(f1.diff)
    # Every sign-flip but the identity lowers the mean difference: p = 2 / (resamples + 1).
    assert f1.permutation_p is not None and f1.permutation_p < 0.01
    for group in result.by_difficulty:  # 15 pairs each, every one A > B
        score = group.score("f1")
        assert score is not None and score.diff.interval is not None
        assert score.diff.interval[0] > 0 and (score.permutation_p or 1.0) < 0.01
    exact = overall.score("exact_match")
    assert exact is not None and exact.diff.value == 0.0 and exact.permutation_p == 1.0


def test_equal_f1_gives_p_1_and_an_interval_containing_0(engine: Engine) -> None:
    run_id = open_answer_run(engine, PARTIAL_A, PARTIAL_A)
    with Session(engine) as session:
        paired = load_paired(session, run_id, "mdp", run_id, "fixed:k=3")
    f1 = compare(paired, n_resamples=RESAMPLES).overall.score("f1")
    assert f1 is not None and f1.permutation_p == 1.0
    assert f1.diff.interval is not None and f1.diff.interval[0] <= 0 <= f1.diff.interval[1]


def test_f1_permutation_p_is_exact_on_few_pairs() -> None:
    """Four pairs, 16 sign flips: the two-sided exact p is 2/16 when A wins every pair."""
    a = np.array([0.9, 0.8, 0.7, 0.6])
    b = np.array([0.1, 0.2, 0.3, 0.4])
    assert paired_permutation_p(a, b, n_resamples=RESAMPLES) == pytest.approx(2 / 16)
    assert paired_permutation_p(a[:0], b[:0]) is None


def test_f1_in_json_markdown_rows_and_attempted_accuracy_counts_errors(
    engine: Engine, db_url: str
) -> None:
    run_id = open_answer_run(engine, PARTIAL_A, PARTIAL_B)
    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        # A fails two more questions (errors, scored 0); B has one invalid (left out).
        add_scored(session, run, "e1", "mdp", None, status="error")
        add_scored(session, run, "e2", "mdp", None, status="error")
        add_scored(session, run, "e1", "fixed:k=3", 1.0)
        add_scored(session, run, "e2", "fixed:k=3", None, status="invalid")
        session.commit()
    code, output = invoke(db_url, str(run_id), "--format", "json", "--resamples", "500")
    assert code == 0, output
    data = json.loads(output)
    for group in (data["overall"], *data["by_difficulty"]):
        for name in ("f1", "exact_match"):
            assert set(group[name]) == {"a", "b", "diff_a_minus_b", "permutation_p"}
    assert data["overall"]["f1"]["diff_a_minus_b"]["low"] > 0
    side_a, side_b = data["a"], data["b"]
    assert (side_a["attempted"], side_a["accuracy_attempted"]) == (32, 0.0)
    assert side_a["f1_attempted"] == pytest.approx(sum(PARTIAL_A) / 32)
    assert (side_b["attempted"], side_b["accuracy_attempted"]) == (31, pytest.approx(1 / 31))
    assert side_b["f1_attempted"] == pytest.approx((sum(PARTIAL_B) + 1.0) / 31)
    code, output = invoke(db_url, str(run_id), "--format", "markdown", "--resamples", "500")
    assert code == 0, output
    for text in ("| F1 A - B |", "| F1 permutation p |", "| EM A |", "over 32 attempted"):
        assert text in output
    code, output = invoke(db_url, str(run_id), "--resamples", "500")
    assert code == 0 and "F1 permutation p" in output


def test_multiple_choice_comparisons_have_no_f1_rows(engine: Engine, run_id: int) -> None:
    result = run_compare(engine, run_id)
    assert all(g.scores == () for g in result.groups)
    assert "F1" not in to_markdown(result)
    data = to_json(result)
    assert data["overall"]["f1"] is None and data["overall"]["exact_match"] is None
    assert data["a"]["f1_attempted"] is None
    # mdp: 22 ok (OUTCOMES, and x2 and x3 right), no error; x1 is invalid and left out.
    right_a = sum(a for _, a, _ in OUTCOMES.values()) + 2
    assert data["a"]["attempted"] == 22
    assert data["a"]["accuracy_attempted"] == pytest.approx(right_a / 22)
    # fixed:k=3: 21 ok (x1 right) and one error (x2), scored wrong.
    right_b = sum(b for _, _, b in OUTCOMES.values()) + 1
    assert data["b"]["accuracy_attempted"] == pytest.approx(right_b / 22)
