"""``evalq mdp`` as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evalq.cli.main import cli
from evalq.cli.mdp import mdp
from evalq.rag.mdp_solver import PRESETS, solve


def test_solve_prints_both_thresholds_and_the_policy() -> None:
    result = CliRunner().invoke(cli, ["mdp", "solve", "--preset", "early"])
    assert result.exit_code == 0, result.output
    expected = solve(PRESETS["early"])
    assert "theta_cont" in result.output and f"{expected.theta_cont:.4f}" in result.output
    assert "theta_star" in result.output and f"{expected.theta_star:.4f}" in result.output
    assert f"U in [0.00, {expected.theta_cont:.2f})" in result.output
    assert f"U in [{expected.theta_star:.2f}, 1.00]" in result.output


def test_solve_says_when_the_policy_never_reasons() -> None:
    result = CliRunner().invoke(cli, ["mdp", "solve", "--preset", "multi_gpu"])
    assert result.exit_code == 0, result.output
    assert "never reasons" in result.output
    assert "reason  " not in result.output


def test_solve_json_applies_overrides() -> None:
    result = CliRunner().invoke(
        mdp,
        ["solve", "--preset", "base", "--set", "delta_r=0.2", "--set", "grid_size=51", "--json"],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    expected = solve(PRESETS["base"].with_overrides(delta_r=0.2, grid_size=51))
    assert payload["params"]["delta_r"] == 0.2
    assert payload["params"]["grid_size"] == 51
    assert (payload["theta_cont"], payload["theta_star"]) == (
        expected.theta_cont,
        expected.theta_star,
    )
    assert payload["iterations"] == expected.iterations
    assert [part["action"] for part in payload["policy"]][-1] == "terminate"


@pytest.mark.parametrize(
    "setting",
    ["nonsense=1", "delta_r=abc", "delta_r", "p_s=1.5", "quality=cubic", "grid_size=10.5"],
)
def test_bad_set_exits_2_with_one_line(setting: str) -> None:
    result = CliRunner().invoke(cli, ["mdp", "solve", "--set", setting])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error:")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "q.png"
    result = CliRunner().invoke(cli, ["mdp", "plot", "--preset", "early", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_plot_rejects_an_unknown_image_type(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["mdp", "plot", "--out", str(tmp_path / "q.docx")])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
