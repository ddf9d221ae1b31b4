"""Saved MDP parameter sets: `mdp calibrate --save`, `mdp presets`, `submit --mdp-preset NAME`."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select
from support import TINY, store_mdp_run

from evalq.cli.main import cli
from evalq.db.models import Run
from evalq.db.session import open_store
from evalq.rag.episode import EpisodeResult, StepRecord
from evalq.rag.mdp_solver import PRESETS, solve


def calibration_run(db_url: str, successes: int, trials: int) -> int:
    """A done run of one MDP strategy (preset early) with one retrieve per episode."""
    episodes = []
    for i in range(trials):
        result = EpisodeResult(f"q{i}", "mdp", 0, "ok", correct=i % 2 == 0)
        judgement = 0.9 if i < successes else 0.1
        result.steps = [
            StepRecord("retrieve", success=i < successes, judgement=judgement),
            StepRecord("terminate"),
        ]
        episodes.append(result)
    return store_mdp_run(db_url, episodes)


def evalq(db_url: str, *args: str, broker_url: str | None = None) -> tuple[int, str]:
    prefix = ["--database-url", db_url] + (["--broker-url", broker_url] if broker_url else [])
    result = CliRunner().invoke(cli, [*prefix, *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def presets(db_url: str) -> dict[str, dict[str, Any]]:
    code, output = evalq(db_url, "mdp", "presets", "--json")
    assert code == 0, output
    return {entry["name"]: entry for entry in json.loads(output)}


def test_saved_set_is_listed_and_submits_with_its_values(db_url: str, redis_url: str) -> None:
    source = calibration_run(db_url, successes=3, trials=4)
    code, output = evalq(db_url, "mdp", "calibrate", str(source), "--save", "hotpot-cal")
    assert code == 0, output
    assert "saved as 'hotpot-cal'" in output

    listed = presets(db_url)
    assert {"base", "multi_gpu", "early", "hotpot-cal"} <= set(listed)
    saved = listed["hotpot-cal"]
    assert saved["kind"] == "saved" and saved["source_run"] == source
    assert saved["base_preset"] == "early" and saved["params"]["p_s"] == 0.75
    code, table = evalq(db_url, "mdp", "presets")
    assert code == 0 and "hotpot-cal" in table and f"run {source}" in table

    # The set keeps the run's judge_threshold (no gold for these questions): a run option,
    # not a parameter of the decision model.
    model_params = {k: v for k, v in saved["params"].items() if k != "judge_threshold"}
    assert saved["params"]["judge_threshold"] == 0.5
    code, solved = evalq(db_url, "mdp", "solve", "--preset", "hotpot-cal", "--json")
    assert code == 0, solved
    assert json.loads(solved)["params"] == model_params

    code, output = evalq(
        db_url,
        "submit",
        *("--dataset", "hotpotqa", "--n", "3", "--model", TINY, "--strategy", "mdp"),
        *("--mdp-preset", "hotpot-cal", "--mdp-set", "c_r=0.06"),
        broker_url=redis_url,
    )
    assert code == 0, output
    expected = PRESETS["early"].with_overrides(**{**model_params, "c_r": 0.06})
    with open_store(db_url).session() as s:
        run = s.scalars(select(Run).where(Run.id != source)).one()
        mdp = dict(run.config["mdp"])
    # The run holds every value: re-saving the set later cannot change what it ran with.
    assert mdp["param_set"] == "hotpot-cal" and mdp["preset"] == "early"
    assert {k: mdp[k] for k in expected.to_json()} == expected.to_json()
    solution = solve(expected)
    assert (mdp["theta_cont"], mdp["theta_star"]) == (solution.theta_cont, solution.theta_star)

    # A name is taken until --replace; the replaced set does not touch the run's config.
    code, output = evalq(db_url, "mdp", "calibrate", str(source), "--save", "hotpot-cal")
    assert code == 2 and output.count("\n") == 1 and "--replace" in output
    other = calibration_run(db_url, successes=1, trials=4)
    code, output = evalq(
        db_url, "mdp", "calibrate", str(other), "--save", "hotpot-cal", "--replace", "--json"
    )
    assert code == 0, output
    assert json.loads(output)["saved_as"] == "hotpot-cal"
    assert presets(db_url)["hotpot-cal"]["params"]["p_s"] == 0.25
    with open_store(db_url).session() as s:
        assert s.get(Run, run.id).config["mdp"]["p_s"] == 0.75  # type: ignore[union-attr]


def test_unknown_preset_is_one_error_line(sqlite_url: str, redis_url: str) -> None:
    code, output = evalq(
        sqlite_url,
        "submit",
        *("--dataset", "hotpotqa", "--n", "3", "--model", TINY, "--mdp-preset", "nope"),
        broker_url=redis_url,
    )
    assert code == 2, output
    assert output.count("\n") == 1 and output.startswith("Error: unknown MDP preset 'nope'")
    code, output = evalq(sqlite_url, "mdp", "solve", "--preset", "nope")
    assert code == 2 and output.count("\n") == 1 and "unknown MDP preset" in output
    with open_store(sqlite_url).session() as s:
        assert s.scalars(select(Run)).first() is None


def test_save_refuses_a_built_in_name(sqlite_url: str) -> None:
    source = calibration_run(sqlite_url, successes=1, trials=2)
    for name in ("early", "bad name"):
        code, output = evalq(sqlite_url, "mdp", "calibrate", str(source), "--save", name)
        assert code == 2 and output.count("\n") == 1 and output.startswith("Error:"), output
    assert set(presets(sqlite_url)) == set(PRESETS)
