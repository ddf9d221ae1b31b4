"""The MDP solver: limiting cases, an independent Bellman check, parameters, hashing, caching."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

import evalq.db.thresholds as thresholds_module
from evalq.db.base import Base
from evalq.db.models import Threshold
from evalq.db.thresholds import thresholds_for
from evalq.errors import UserError
from evalq.rag.mdp_solver import (
    PRESETS,
    MDPParams,
    MDPSolution,
    param_hash,
    policy_action,
    quality,
    solve,
)

SPEC_PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(delta_r=0.15, delta_p=0.08, p_s=0.7, c_r=0.2, c_p=0.1, mu=0.6, gamma=1.0),
    "multi_gpu": dict(delta_r=0.15, delta_p=0.03, p_s=0.8, c_r=0.12, c_p=0.06, mu=0.6, gamma=0.98),
    "early": dict(delta_r=0.25, delta_p=0.08, p_s=0.8, c_r=0.05, c_p=0.02, mu=0.6, gamma=0.98),
}
TIE = 1e-9


def brute_force_thresholds(params: MDPParams) -> tuple[float, float]:
    """Independent Bellman solution: plain loops over states, nearest grid point by search."""
    n = params.grid_size
    grid = [params.u_max * i / (n - 1) for i in range(n)]

    def sigma(u: float) -> float:
        x = u / params.u_max
        k = params.quality_k
        if params.quality == "linear":
            return x
        if params.quality == "sqrt":
            return math.sqrt(x)
        if params.quality == "saturating":
            return 1.0 - math.exp(-k * x)
        return 1.0 / (1.0 + math.exp(-k * (x - 0.5)))

    def nearest(u: float) -> int:
        return min(range(n), key=lambda j: abs(grid[j] - u))

    def phi(u: float) -> float:
        return params.k_phi * u if params.shaping else 0.0

    def q_values(values: list[float], i: int) -> tuple[float, float, float]:
        u = grid[i]
        up_r = nearest(min(u + params.delta_r, params.u_max))
        up_p = nearest(min(u + params.delta_p, params.u_max))
        g = params.gamma
        shaping_r = params.p_s * (g * phi(grid[up_r]) - phi(u)) + (1 - params.p_s) * (
            g * phi(u) - phi(u)
        )
        q_r = -params.mu * params.c_r + shaping_r
        q_r += g * (params.p_s * values[up_r] + (1 - params.p_s) * values[i])
        q_p = -params.mu * params.c_p + g * phi(grid[up_p]) - phi(u) + g * values[up_p]
        return q_r, q_p, sigma(u)

    values = [0.0] * n
    for _ in range(100_000):
        new = [max(q_values(values, i)) for i in range(n)]
        change = max(abs(a - b) for a, b in zip(new, values, strict=True))
        values = new
        if change < 1e-12:
            break
    q = [q_values(values, i) for i in range(n)]

    theta_star = params.u_max
    star = n
    for i in range(n):
        if q[i][2] >= max(q[i][0], q[i][1]) - TIE:
            theta_star, star = grid[i], i
            break
    theta_cont = theta_star
    for i in range(star):
        if q[i][1] > q[i][0] + TIE:
            theta_cont = grid[i]
            break
    return theta_cont, theta_star


def params(**overrides: Any) -> MDPParams:
    return PRESETS["base"].with_overrides(**overrides)


# --- presets and the independent check ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPEC_PRESETS))
def test_presets_carry_the_spec_values(name: str) -> None:
    assert PRESETS[name] == MDPParams(**SPEC_PRESETS[name])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_matches_an_independent_bellman_solution(name: str) -> None:
    solution = solve(PRESETS[name])
    assert solution.converged
    expected = brute_force_thresholds(PRESETS[name])
    assert (solution.theta_cont, solution.theta_star) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    "overrides",
    [
        {"quality": "sqrt"},
        {"quality": "saturating", "quality_k": 3.0},
        {"quality": "sigmoid", "quality_k": 8.0, "gamma": 0.95},
        {"shaping": True, "k_phi": 0.5, "gamma": 0.9},
        {"grid_size": 41, "p_s": 0.4, "c_r": 0.05},
        {"u_max": 2.0, "delta_r": 0.3, "delta_p": 0.16},
    ],
)
def test_other_parameter_sets_match_the_independent_solution(overrides: dict[str, Any]) -> None:
    p = params(**overrides)
    solution = solve(p)
    assert (solution.theta_cont, solution.theta_star) == pytest.approx(
        brute_force_thresholds(p), abs=1e-9
    )


# --- limiting cases -------------------------------------------------------------------------


def test_free_steps_with_linear_quality_never_terminate_before_u_max() -> None:
    # Progress is free and quality keeps rising, so stopping early always leaves value behind.
    solution = solve(params(c_r=0.0, c_p=0.0, gamma=1.0))
    assert solution.theta_star == 1.0
    before_max = solution.u_grid[:-1]
    actions = {policy_action(u, solution.theta_cont, solution.theta_star) for u in before_max}
    assert "terminate" not in actions


def test_steps_dearer_than_all_quality_terminate_at_once() -> None:
    # Any step costs more than the whole quality range can repay.
    solution = solve(params(mu=1.0, c_r=1.5, c_p=1.2))
    assert solution.theta_star == 0.0
    assert solution.theta_cont == 0.0
    assert policy_action(0.0, solution.theta_cont, solution.theta_star) == "terminate"


def test_equal_thresholds_give_a_policy_that_never_reasons() -> None:
    # Reasoning costs far more than retrieving for little progress: retrieve, then stop.
    solution = solve(params(c_p=1.0, c_r=0.05, p_s=1.0))
    assert solution.theta_cont == solution.theta_star
    assert 0.0 < solution.theta_star <= 1.0
    actions = {policy_action(u, solution.theta_cont, solution.theta_star) for u in solution.u_grid}
    assert actions == {"retrieve", "terminate"}


def test_cheap_reasoning_reasons_from_the_start() -> None:
    solution = solve(PRESETS["base"])
    assert solution.theta_cont == 0.0
    assert policy_action(0.0, solution.theta_cont, solution.theta_star) == "reason"


def test_solution_shapes_and_values() -> None:
    solution = solve(PRESETS["early"])
    assert solution.u_grid.shape == (101,)
    assert solution.q.shape == (101, 3)
    np.testing.assert_allclose(solution.v, solution.q.max(axis=1))
    np.testing.assert_allclose(solution.q[:, 2], solution.u_grid)  # terminate pays sigma(U)
    assert solution.u_grid[0] == 0.0 and solution.u_grid[-1] == 1.0


def test_iteration_cap_reports_not_converged() -> None:
    solution = solve(params(max_iterations=1))
    assert solution.iterations == 1
    assert not solution.converged


def test_policy_action_boundaries() -> None:
    assert policy_action(0.1, 0.2, 0.8) == "retrieve"
    assert policy_action(0.2, 0.2, 0.8) == "reason"
    assert policy_action(0.79, 0.2, 0.8) == "reason"
    assert policy_action(0.8, 0.2, 0.8) == "terminate"
    assert policy_action(0.5, 0.8, 0.8) == "retrieve"


# --- quality ----------------------------------------------------------------------------------


def test_quality_functions() -> None:
    u = np.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(quality(u, params(quality="linear")), u)
    np.testing.assert_allclose(quality(u, params(quality="sqrt")), [0.0, 0.5, math.sqrt(0.5), 1])
    np.testing.assert_allclose(
        quality(u, params(quality="saturating", quality_k=2.0)), 1 - np.exp(-2.0 * u)
    )
    sigmoid = quality(u, params(quality="sigmoid", quality_k=4.0))
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-4.0 * (u - 0.5))))
    assert sigmoid[2] == pytest.approx(0.5)
    # x = U / u_max
    halfway = quality(np.array([1.0]), params(u_max=2.0, quality="sqrt"))
    np.testing.assert_allclose(halfway, [math.sqrt(0.5)])


@pytest.mark.parametrize("name", ["linear", "sqrt", "saturating", "sigmoid"])
def test_each_quality_is_increasing_and_solvable(name: str) -> None:
    p = params(quality=name)
    values = quality(np.linspace(0, 1, 11), p)
    assert np.all(np.diff(values) > 0)
    solution = solve(p)
    assert solution.converged
    assert 0.0 <= solution.theta_cont <= solution.theta_star <= 1.0


# --- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"p_s": 1.5}, "p_s"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": 1.1}, "gamma"),
        ({"c_r": -0.1}, "c_r"),
        ({"grid_size": 1}, "grid_size"),
        ({"quality": "cubic"}, "quality"),
        ({"delta_p": 0.001}, "delta_p"),
        ({"mu": float("nan")}, "mu"),
        ({"nonsense": 1.0}, "nonsense"),
    ],
)
def test_invalid_parameters_raise_user_error(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        params(**overrides)


def test_json_round_trip_and_int_coercion() -> None:
    p = params(quality="sigmoid", shaping=True)
    assert MDPParams.from_json(p.to_json()) == p
    assert params(gamma=1) == params(gamma=1.0)
    with pytest.raises(UserError, match="unknown"):
        MDPParams.from_json({**p.to_json(), "extra": 1})
    with pytest.raises(UserError, match="missing"):
        MDPParams.from_json({"delta_r": 0.1})


def test_hash_is_stable_and_sensitive() -> None:
    base = PRESETS["base"]
    assert param_hash(base) == param_hash(MDPParams(**SPEC_PRESETS["base"]))
    assert param_hash(base) == param_hash(params(gamma=1))
    # Pinned: a change here silently invalidates every cached threshold; bump SOLVER_VERSION.
    assert param_hash(base) == "fae8590c166c" + param_hash(base)[12:]
    assert len(param_hash(base)) == 64
    assert param_hash(params(delta_r=0.151)) != param_hash(base)
    assert param_hash(params(grid_size=201)) != param_hash(base)
    assert param_hash(params(quality="sigmoid")) != param_hash(base)


def test_hash_ignores_parameters_that_cannot_matter() -> None:
    base = PRESETS["base"]
    assert param_hash(params(k_phi=3.0)) == param_hash(base)  # shaping is off
    assert param_hash(params(quality_k=9.0)) == param_hash(base)  # linear quality
    assert param_hash(params(shaping=True, k_phi=3.0)) != param_hash(params(shaping=True))


# --- the database cache -----------------------------------------------------------------------


def counting_solve(monkeypatch: pytest.MonkeyPatch) -> list[MDPParams]:
    calls: list[MDPParams] = []

    def wrapped(p: MDPParams) -> MDPSolution:
        calls.append(p)
        return solve(p)

    monkeypatch.setattr(thresholds_module, "solve", wrapped)
    return calls


def test_thresholds_for_solves_once_then_hits_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_solve(monkeypatch)
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    p = PRESETS["early"]
    expected = solve(p)
    with Session(engine) as session:
        first = thresholds_for(session, p)
        session.commit()
    with Session(engine) as session:
        second = thresholds_for(session, p)
        row = session.scalars(select(Threshold)).one()
    assert first == second == (expected.theta_cont, expected.theta_star)
    assert len(calls) == 1
    assert row.param_hash == param_hash(p)
    assert MDPParams.from_json(row.params) == p
    assert row.iterations == expected.iterations


def test_thresholds_for_reads_back_a_row_another_worker_inserted_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'race.db'}")
    Base.metadata.create_all(engine)
    p = PRESETS["multi_gpu"]

    def solve_while_another_worker_wins(q: MDPParams) -> MDPSolution:
        # The other worker inserts and commits between our cache miss and our insert.
        with Session(engine) as other:
            winner = Threshold(
                param_hash=param_hash(q),
                params=q.to_json(),
                theta_cont=0.25,
                theta_star=0.75,
                iterations=7,
            )
            other.add(winner)
            other.commit()
        return solve(q)

    monkeypatch.setattr(thresholds_module, "solve", solve_while_another_worker_wins)
    with Session(engine) as session:
        assert thresholds_for(session, p) == (0.25, 0.75)
        session.commit()
        assert session.scalars(select(Threshold)).one().iterations == 7


def test_thresholds_for_refuses_to_cache_an_unconverged_solution() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session, pytest.raises(UserError, match="converge"):
        thresholds_for(session, params(max_iterations=1))
