"""``evalq mdp``: solve the MDP-RAG decision model, show or plot its policy, calibrate it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from evalq.cli.analysis import adaptivity_command
from evalq.config import Settings
from evalq.db import queries
from evalq.db.session import open_store
from evalq.errors import UserError
from evalq.rag.calibrate import (
    P_S_SOURCES,
    Calibration,
    Proportion,
    base_preset,
    calibrate_run,
)
from evalq.rag.mdp_solver import (
    ACTIONS,
    PRESETS,
    QUALITY_NAMES,
    Action,
    MDPParams,
    MDPSolution,
    lookup_preset,
    param_hash,
    solve,
)
from evalq.report.adaptivity import calibration_traces

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


def saved_param_sets(settings: Settings) -> dict[str, dict[str, Any]]:
    """Saved parameter sets' names to their parameters, from the settings' database."""
    with open_store(settings.database_url).session() as s:
        return {row.name: dict(row.params) for row in queries.param_sets(s)}


def _params_from_options(preset: str, overrides: tuple[str, ...]) -> MDPParams:
    """The preset (built-in or saved) with ``--set`` overrides applied; an error is one line."""
    values = dict(_parse_override(item) for item in overrides)
    # The database is opened only for a name that is not built in.
    saved = {} if preset in PRESETS else saved_param_sets(_current_settings())
    try:
        return lookup_preset(preset, saved).with_overrides(**values)
    except UserError as error:
        raise OneLineUsageError(str(error)) from None


def _current_settings() -> Settings:
    """The settings the main group put on the context, else those of the environment."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(Settings) if ctx is not None else None
    return obj if obj is not None else Settings.from_env()


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
    default="base",
    show_default=True,
    help=f"Parameter set to start from: {', '.join(PRESETS)}, or a saved one (mdp presets).",
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
    """Solve the MDP-RAG decision model: thresholds, policy, calibration from a run."""


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


@mdp.command("presets")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
@click.pass_obj
def presets_command(settings: Settings, as_json: bool) -> None:
    """List the built-in presets and the parameter sets saved with `mdp calibrate --save`."""
    with open_store(settings.database_url).session() as s:
        saved = [
            {
                "name": row.name,
                "kind": "saved",
                "params": dict(row.params),
                "base_preset": row.base_preset,
                "source_run": row.source_run_id,
                "created_at": row.created_at.isoformat(timespec="seconds"),
            }
            for row in queries.param_sets(s)
        ]
    entries: list[dict[str, Any]] = [
        {
            "name": name,
            "kind": "built-in",
            "params": params.to_json(),
            "base_preset": name,
            "source_run": None,
            "created_at": None,
        }
        for name, params in PRESETS.items()
    ] + saved
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    table = Table(title="MDP parameter sets (evalq submit --mdp-preset NAME)")
    for column in ("name", "kind", "p_s", "delta_r", "delta_p", "c_r", "c_p", "from"):
        table.add_column(column)
    for entry in entries:
        p = entry["params"]
        origin = "-" if entry["source_run"] is None else f"run {entry['source_run']}"
        if entry["created_at"]:
            origin += f", {entry['created_at']}"
        table.add_row(
            str(entry["name"]),
            str(entry["kind"]),
            *(f"{float(p[key]):.3f}" for key in ("p_s", "delta_r", "delta_p", "c_r", "c_p")),
            origin,
        )
    Console().print(table)


@mdp.command("calibrate")
@click.argument("run_id", type=int)
@click.option(
    "--confidence", type=float, default=0.95, show_default=True, help="Interval confidence level."
)
@click.option(
    "--p-s-from",
    type=click.Choice(P_S_SOURCES),
    default="rate",
    show_default=True,
    help="The calibrated p_s: the retrieve success rate, or the mean judged P(yes).",
)
@click.option(
    "--save",
    "save_as",
    metavar="NAME",
    help="Save the calibrated parameters under NAME, for `evalq submit --mdp-preset NAME`.",
)
@click.option("--replace", is_flag=True, help="With --save: overwrite a saved set of that name.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.pass_obj
def calibrate_command(
    settings: Settings,
    run_id: int,
    confidence: float,
    p_s_from: str,
    save_as: str | None,
    replace: bool,
    as_json: bool,
) -> None:
    """Estimate the judge threshold, p_s and per-step gains from a run's MDP steps; re-solve.

    Where the dataset has gold passages, judge_threshold is the P(yes) that best separates
    retrieve steps that found a gold passage from the others (Youden's J). p_s is the
    success fraction of retrieve steps at that threshold (and, where retrieves were judged,
    the mean judged P(yes)). The gains are accuracy lifts per successful retrieve and per
    reason step (a linear probability model, clustered by question); with quality=linear
    they are the deltas in U. --save NAME keeps the result, judge_threshold included, as a
    parameter set. See docs/mdp.md.
    """
    if save_as is not None:
        _check_set_name(save_as)
    store = open_store(settings.database_url)
    with store.session() as s:
        run = queries.get_run(s, run_id)
        status = run.status
        result = calibrate_run(calibration_traces(s, run), confidence, p_s_from)
        if save_as is not None:
            queries.save_param_set(
                s,
                save_as,
                {**result.calibrated.to_json(), "judge_threshold": result.threshold.threshold},
                base_preset(run.config),
                run.id,
                replace=replace,
            )
    if as_json:
        click.echo(json.dumps({**_calibration_json(result, status), "saved_as": save_as}, indent=2))
        return
    _print_calibration(result, status)
    if save_as is not None:
        click.echo(f"saved as {save_as!r}: evalq submit --mdp-preset {save_as} ...")


# Names a saved set may take: they are typed on command lines and written in suite files.
_SET_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _check_set_name(name: str) -> None:
    """A saved set's name: not a built-in preset's, 1-200 of letters, digits, ``_ . -``."""
    if name in PRESETS:
        raise OneLineUsageError(f"--save {name}: that is a built-in preset; choose another name")
    if not 0 < len(name) <= 200 or not set(name) <= _SET_NAME_CHARS:
        raise OneLineUsageError(f"--save {name!r}: use 1-200 letters, digits, '_', '.' or '-'")


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def _print_calibration(result: Calibration, status: str) -> None:
    console = Console()
    level = f"{100 * result.confidence:g}%"
    console.print(
        f"run {result.run_id} ({status}): {result.mdp_episodes} mdp episodes"
        + (
            f", {result.closed_book_episodes} closed-book (fixed:k=0) episodes as anchors"
            if result.closed_book_episodes
            else ""
        ),
        highlight=False,
    )
    if status != "done":
        console.print("[yellow]note: the run is not done; these are the episodes so far[/]")
    _print_threshold(console, result)
    table = Table(title=f"Estimates ({level} intervals)")
    for column in ("quantity", "estimate", f"{level} interval", "from", "meaning"):
        table.add_column(column)
    if result.p_s is not None:
        p = result.p_s
        table.add_row(
            "p_s",
            f"{p.estimate:.3f}",
            _interval(p.low, p.high),
            f"{p.successes}/{p.trials} retrieves",
            f"retrieve steps with judgement >= {result.threshold.threshold:g} (Clopper-Pearson)"
            if result.threshold.changed
            else "retrieve steps that succeeded (Clopper-Pearson)",
        )
        for position, q in enumerate(result.p_s_by_position, 1):
            table.add_row(
                f"  retrieve #{position}",
                f"{q.estimate:.3f}",
                _interval(q.low, q.high),
                f"{q.successes}/{q.trials}",
                "success of an episode's n-th retrieve",
            )
    else:
        table.add_row("p_s", "-", "-", "0 retrieves", "the policy never retrieved")
    if result.threshold.changed and (ran := result.p_s_run) is not None:
        table.add_row(
            "p_s as run",
            f"{ran.estimate:.3f}",
            _interval(ran.low, ran.high),
            f"{ran.successes}/{ran.trials} retrieves",
            f"retrieve steps that succeeded at the run's {result.judge_threshold:g}",
        )
    if result.judgement is not None:
        j = result.judgement
        table.add_row(
            "mean judgement",
            f"{j.estimate:.3f}",
            _interval(j.low, j.high),
            f"{j.n} judged retrieves",
            f"mean P(yes) (Student t); success = judgement >= {result.judge_threshold:g}",
        )
    else:
        table.add_row("mean judgement", "-", "-", "0 judged", "no retrieve step was judged")
    meanings = {
        "intercept": "accuracy with no successful retrieve and no reason step",
        "per successful retrieve": "accuracy lift: delta_r / u_max if quality=linear",
        "per reason step": "accuracy lift: delta_p / u_max if quality=linear",
    }
    for coefficient in (result.intercept, result.retrieve_lift, result.reason_lift):
        table.add_row(
            f"accuracy {coefficient.name}",
            "-" if coefficient.estimate is None else f"{coefficient.estimate:+.3f}",
            _interval(coefficient.low, coefficient.high),
            "OLS, SE by question",
            coefficient.reason or meanings[coefficient.name],
        )
    console.print(table)
    solved = Table(title="Parameters and thresholds")
    for column in ("", "p_s", "delta_r", "delta_p", "theta_cont", "theta_star"):
        solved.add_column(column)
    old, new = result.params, result.calibrated
    solved.add_row(
        "run",
        f"{old.p_s:.3f}",
        f"{old.delta_r:.3f}",
        f"{old.delta_p:.3f}",
        f"{result.before[0]:.4f}",
        f"{result.before[1]:.4f}",
    )
    solved.add_row(
        "calibrated",
        f"{new.p_s:.3f}",
        f"{new.delta_r:.3f}",
        f"{new.delta_p:.3f}",
        f"{result.after.theta_cont:.4f}",
        f"{result.after.theta_star:.4f}",
    )
    console.print(solved)
    source = "mean judgement" if result.p_s_from == "judgement" else "success rate"
    console.print(f"calibrated p_s from the {source} (--p-s-from)", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(
        "These are associations in this run's data under its own policy, not causal effects.",
        highlight=False,
    )
    if not result.after.converged:
        console.print(
            "[yellow]warning: value iteration hit max_iterations; thresholds may be off[/]"
        )


def _print_threshold(console: Console, result: Calibration) -> None:
    """The judge threshold line: fitted to gold-labelled steps, or kept (the note says why)."""
    fit = result.threshold
    if fit.note is not None and fit.youden_j is None:
        return
    console.print(
        f"judge_threshold {fit.run_threshold:g} -> {fit.threshold:.3f}: Youden's J "
        f"{fit.youden_j:.3f} (TPR {fit.tpr:.3f}, FPR {fit.fpr:.3f}), AUC {fit.auc:.3f}, "
        f"{fit.labelled} labelled steps ({fit.gold_steps} retrieved a gold passage)",
        highlight=False,
    )


def _calibration_json(result: Calibration, status: str) -> dict[str, Any]:
    def proportion(p: Proportion | None) -> dict[str, Any] | None:
        if p is None:
            return None
        return {**asdict(p), "estimate": p.estimate}

    return {
        "run": result.run_id,
        "status": status,
        "confidence": result.confidence,
        "mdp_episodes": result.mdp_episodes,
        "closed_book_episodes": result.closed_book_episodes,
        "p_s": proportion(result.p_s),
        "p_s_by_position": [proportion(p) for p in result.p_s_by_position],
        "judgement": None if result.judgement is None else asdict(result.judgement),
        "p_s_run": proportion(result.p_s_run),
        "judge_threshold": result.judge_threshold,
        "threshold_fit": {**asdict(result.threshold), "changed": result.threshold.changed},
        "p_s_from": result.p_s_from,
        "accuracy_intercept": asdict(result.intercept),
        "accuracy_lift_per_successful_retrieve": asdict(result.retrieve_lift),
        "accuracy_lift_per_reason_step": asdict(result.reason_lift),
        "params": result.params.to_json(),
        "calibrated_params": result.calibrated.to_json(),
        "param_hash": param_hash(result.calibrated),
        "theta_cont": {"run": result.before[0], "calibrated": result.after.theta_cont},
        "theta_star": {"run": result.before[1], "calibrated": result.after.theta_star},
        "converged": result.after.converged,
        "notes": result.notes,
    }


# Reads a run like compare and report do, so it lives with them; it sits under `mdp` because
# the question it answers is whether the MDP policy adapts (fixed-k rows are the reference).
mdp.add_command(adaptivity_command)
