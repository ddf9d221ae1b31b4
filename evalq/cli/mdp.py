"""``evalq mdp``: solve the MDP-RAG decision model and show or plot its policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from evalq.errors import UserError
from evalq.rag.mdp_solver import (
    ACTIONS,
    PRESETS,
    QUALITY_NAMES,
    Action,
    MDPParams,
    MDPSolution,
    param_hash,
    solve,
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class OneLineUsageError(click.ClickException):
    """A bad option value: printed as one ``Error: ...`` line, exit code 2 like a usage error."""

    exit_code = 2


def _parse_override(item: str) -> tuple[str, Any]:
    """One ``KEY=VALUE`` from ``--set``, with VALUE converted to the field's type."""
    key, sep, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    # Fields are coerced on construction, so a preset's values carry each field's type.
    types = {name: type(value) for name, value in PRESETS["base"].to_json().items()}
    if not sep or not key:
        raise OneLineUsageError(f"--set expects KEY=VALUE, got {item!r}")
    if key not in types:
        raise OneLineUsageError(
            f"--set: unknown MDP parameter {key!r}; known: {', '.join(sorted(types))}"
        )
    kind = types[key]
    if kind is bool:
        if raw.lower() not in _TRUE | _FALSE:
            raise OneLineUsageError(f"--set {key}: expected true or false, got {raw!r}")
        return key, raw.lower() in _TRUE
    if kind is str:
        if raw not in QUALITY_NAMES:
            raise OneLineUsageError(
                f"--set {key}: expected one of {', '.join(QUALITY_NAMES)}, got {raw!r}"
            )
        return key, raw
    try:
        number = float(raw)
    except ValueError:
        raise OneLineUsageError(f"--set {key}: expected a number, got {raw!r}") from None
    if kind is int:
        if not number.is_integer():
            raise OneLineUsageError(f"--set {key}: expected an integer, got {raw!r}")
        return key, int(number)
    return key, number


def _params_from_options(preset: str, overrides: tuple[str, ...]) -> MDPParams:
    """The preset with ``--set`` overrides applied; an invalid result is a usage error."""
    values = dict(_parse_override(item) for item in overrides)
    try:
        return PRESETS[preset].with_overrides(**values)
    except UserError as error:
        raise OneLineUsageError(str(error)) from None


def policy_ranges(
    theta_cont: float, theta_star: float, u_max: float
) -> list[tuple[Action, float, float]]:
    """The threshold policy as ``(action, start, end)`` ranges over [0, u_max], empty ones dropped.

    Retrieve and reason cover half-open ranges ``[start, end)``; terminate covers
    ``[theta_star, u_max]``.

    Args:
        theta_cont: Retrieve below this.
        theta_star: Terminate at or above this.
        u_max: Upper end of the progress scale.

    Returns:
        The non-empty ranges in order of U.
    """
    bounds: list[tuple[Action, float, float]] = [
        ("retrieve", 0.0, theta_cont),
        ("reason", theta_cont, theta_star),
        ("terminate", theta_star, u_max),
    ]
    return [
        (action, start, end)
        for action, start, end in bounds
        if end > start or action == "terminate"
    ]


def _range_text(action: Action, start: float, end: float) -> str:
    closing = "]" if action == "terminate" else ")"
    return f"U in [{start:.2f}, {end:.2f}{closing}"


preset_option = click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default="base",
    show_default=True,
    help="Named parameter set to start from.",
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one parameter, e.g. --set delta_r=0.2 (repeatable).",
)


@click.group("mdp")
def mdp() -> None:
    """Solve the MDP-RAG decision model: thresholds and policy."""


@mdp.command("solve")
@preset_option
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def solve_command(preset: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Solve by value iteration and print theta_cont, theta_star and the policy over U."""
    params = _params_from_options(preset, overrides)
    solution = solve(params)
    ranges = policy_ranges(solution.theta_cont, solution.theta_star, params.u_max)
    if as_json:
        payload = {
            "preset": preset,
            "params": params.to_json(),
            "param_hash": param_hash(params),
            "theta_cont": solution.theta_cont,
            "theta_star": solution.theta_star,
            "iterations": solution.iterations,
            "converged": solution.converged,
            "policy": [{"action": a, "from": s, "to": e} for a, s, e in ranges],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    _print_solution(preset, params, solution, ranges)


def _print_solution(
    preset: str,
    params: MDPParams,
    solution: MDPSolution,
    ranges: list[tuple[Action, float, float]],
) -> None:
    console = Console()
    settings = ", ".join(f"{k}={v}" for k, v in params.to_json().items())
    console.print(f"preset {preset} (hash {param_hash(params)[:12]}): {settings}", highlight=False)
    summary = Table(show_header=False, box=None)
    summary.add_row("theta_cont", f"{solution.theta_cont:.4f}")
    summary.add_row("theta_star", f"{solution.theta_star:.4f}")
    status = "converged" if solution.converged else "NOT converged"
    summary.add_row("iterations", f"{solution.iterations} ({status})")
    console.print(summary)
    policy = Table(title="Policy over U")
    policy.add_column("action")
    policy.add_column("progress")
    for action, start, end in ranges:
        policy.add_row(action, _range_text(action, start, end))
    console.print(policy)
    if solution.theta_cont == solution.theta_star:
        console.print("note: theta_cont == theta_star, so the policy never reasons")
    if not solution.converged:
        console.print(
            "[yellow]warning: value iteration hit max_iterations; thresholds may be off[/]"
        )


@mdp.command("plot")
@preset_option
@set_option
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Image file to write (format from the suffix, e.g. .png).",
)
def plot_command(preset: str, overrides: tuple[str, ...], out: Path) -> None:
    """Plot Q(U, a) for the three actions with the thresholds marked."""
    params = _params_from_options(preset, overrides)
    solution = solve(params)
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("evalq mdp plot needs matplotlib: pip install matplotlib") from None

    # A bare Figure renders through Agg without touching pyplot's global state or a display.
    figure = Figure(figsize=(8, 5))
    supported = figure.canvas.get_supported_filetypes()
    suffix = out.suffix.lstrip(".").lower()
    if suffix not in supported:
        raise OneLineUsageError(
            f"--out: unsupported image type {out.suffix!r}; use one of "
            + ", ".join(f".{s}" for s in sorted(supported))
        )
    axes = figure.add_subplot()
    for column, action in enumerate(ACTIONS):
        axes.plot(solution.u_grid, solution.q[:, column], label=f"Q(U, {action})")
    cont_label = f"theta_cont = {solution.theta_cont:.2f}"
    star_label = f"theta_star = {solution.theta_star:.2f}"
    axes.axvline(solution.theta_cont, color="tab:gray", linestyle="--", label=cont_label)
    axes.axvline(solution.theta_star, color="black", linestyle=":", label=star_label)
    axes.set_xlabel("information progress U")
    axes.set_ylabel("action value Q(U, a)")
    axes.set_title(f"MDP-RAG action values (preset {preset}, hash {param_hash(params)[:12]})")
    axes.legend(loc="best")
    figure.tight_layout()
    try:
        figure.savefig(out, format=suffix)
    except OSError as error:
        raise UserError(f"cannot write {out}: {error.strerror or error}") from None
    click.echo(f"wrote {out}")
