"""``evalq compare``, ``export``, ``report``, ``mdp adaptivity``: read a run out of the store."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from evalq.config import Settings
from evalq.db import queries
from evalq.db.session import open_store
from evalq.errors import UserError
from evalq.rag.strategies import parse_strategy
from evalq.report import adaptivity
from evalq.report.compare import (
    BootstrapMethod,
    compare,
    load_paired,
    run_strategies,
    to_json,
    to_markdown,
    to_rich_table,
)
from evalq.report.export import EXPORT_FORMATS, ExportFormat, export_run
from evalq.report.html import write_report
from evalq.report.sequential import describe, live_decision
from evalq.report.summary import StatsOptions

F = TypeVar("F", bound=Callable[..., Any])


class AnalysisUsageError(click.ClickException):
    """A user error (unknown run or strategy, bad database): one ``Error:`` line, exit 2."""

    exit_code = 2


def bootstrap_options(command: F) -> F:
    """The interval options ``compare`` and ``report`` share, with one meaning in both."""
    options = [
        click.option(
            "--confidence",
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=0.95,
            show_default=True,
            help="Confidence level of the intervals.",
        ),
        click.option(
            "--resamples",
            type=click.IntRange(min=1),
            default=10_000,
            show_default=True,
            help="Bootstrap resamples per interval.",
        ),
        click.option(
            "--method",
            type=click.Choice(["BCa", "percentile"]),
            default="BCa",
            show_default=True,
            help="Bootstrap interval method (percentile is faster on large runs).",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@contextmanager
def open_session(settings: Settings) -> Iterator[Session]:
    """A session on the settings' database; the one place this module opens it."""
    with open_store(settings.database_url).session() as session:
        yield session


def _settings(ctx: click.Context) -> Settings:
    """The settings the main group put on the context, else those of the environment."""
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()


def _spelled_as_stored(session: Session, run_id: int, strategy: str | None) -> str | None:
    """A strategy as the run stored it: ``ircot`` is ``ircot:k=2,steps=4`` there.

    Episodes carry the canonical spec, every option written out; a short or reordered one
    (``flare:theta=0.5``) means that one. Anything else is left as given, for the error
    that names what the run has.
    """
    if strategy is None or strategy in run_strategies(session, run_id):
        return strategy
    try:
        canonical = parse_strategy(strategy).name
    except UserError:
        return strategy
    return canonical if canonical in run_strategies(session, run_id) else strategy


def _choose_strategies(
    session: Session,
    run_a: int,
    run_b: int,
    strategy_a: str | None,
    strategy_b: str | None,
) -> tuple[str, str]:
    """Fill in --a and --b when they can only mean one thing; otherwise say what to pass."""
    strategies_a = run_strategies(session, run_a)
    if run_a == run_b:
        if strategy_a is not None and strategy_b is not None:
            return strategy_a, strategy_b
        if len(strategies_a) != 2:
            known = ", ".join(strategies_a) or "none"
            raise UserError(
                f"run {run_a} has {len(strategies_a)} strategies ({known}); "
                "choose two with --a and --b"
            )
        first, second = strategies_a
        if strategy_a is not None:
            return strategy_a, second if strategy_a == first else first
        if strategy_b is not None:
            return (second if strategy_b == first else first), strategy_b
        return first, second
    # Two runs: the same strategy on both sides unless told otherwise.
    if strategy_a is not None or strategy_b is not None:
        chosen_a = strategy_a or strategy_b or ""
        return chosen_a, strategy_b or chosen_a
    shared = [s for s in strategies_a if s in run_strategies(session, run_b)]
    if len(shared) != 1:
        known = ", ".join(shared) or "none"
        raise UserError(
            f"runs {run_a} and {run_b} share {len(shared)} strategies ({known}); "
            "choose with --a and --b"
        )
    return shared[0], shared[0]


@click.command("compare")
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--a", "strategy_a", help="Strategy A, e.g. mdp (default: inferred).")
@click.option("--b", "strategy_b", help="Strategy B, e.g. fixed:k=3 (default: inferred).")
@click.option("--run-b", "run_b", type=int, help="Take B from this run (default: RUN).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
)
@bootstrap_options
@click.pass_context
def compare_command(
    ctx: click.Context,
    run_id: int,
    strategy_a: str | None,
    strategy_b: str | None,
    run_b: int | None,
    output_format: str,
    confidence: float,
    resamples: int,
    method: str,
    seed: int,
) -> None:
    """Compare strategy A with B on the questions both answered: differences are A - B.

    Accuracy with bootstrap intervals, the paired accuracy difference, McNemar's exact
    test, and mean cost, steps, retrievals, tokens and latency, overall and per difficulty.
    On open-answer datasets also mean F1 and EM, their paired differences with intervals
    and a paired permutation test. Episodes with status invalid or error are left out of
    the pairs and counted; each side's accuracy over its attempted episodes (errors
    scored 0) is given under the table.
    """
    other_run = run_id if run_b is None else run_b
    with open_session(_settings(ctx)) as session:
        strategy_a = _spelled_as_stored(session, run_id, strategy_a)
        strategy_b = _spelled_as_stored(session, other_run, strategy_b)
        chosen_a, chosen_b = _choose_strategies(session, run_id, other_run, strategy_a, strategy_b)
        paired = load_paired(session, run_id, chosen_a, other_run, chosen_b)
        run = queries.get_run(session, run_id)
        live = live_decision(session, run) if run_b is None else None
        decision = None if live is None else describe(run, *live)
    result = compare(
        paired,
        confidence=confidence,
        n_resamples=resamples,
        seed=seed,
        method=cast(BootstrapMethod, method),
    )
    if output_format == "json":
        out = to_json(result)
        if live is not None:
            out["until_decided"] = {
                "live": asdict(live[0].latest),
                "decided": live[0].reason,
                "decided_at": asdict(live[0].interval),
                "stopped": live[1],
            }
        click.echo(json.dumps(out, indent=2))
    elif output_format == "markdown":
        click.echo(to_markdown(result), nl=False)
    else:
        Console().print(to_rich_table(result))
    if decision is not None and output_format != "json":
        click.echo(decision)


@click.command("export")
@click.argument("run_id", metavar="RUN", type=int)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(EXPORT_FORMATS),
    default="csv",
    show_default=True,
    help="parquet needs pyarrow; seed writes the ARGO seed's JSON layout under results/.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for episodes.<ext>, steps.<ext> and run.json (created if missing).",
)
@click.pass_context
def export_command(ctx: click.Context, run_id: int, output_format: str, out_dir: Path) -> None:
    """Write a run's episodes and steps tables to files, one row per database row.

    With --format seed: results/multi_gpu/{model}_{difficulty}_{n}q.json (MDP) and
    results/multi_gpu_comparison/..._mdp_vs_fixed_k{k}.json (MDP against each fixed-k).
    """
    with open_session(_settings(ctx)) as session:
        exported = export_run(session, run_id, out_dir, cast(ExportFormat, output_format))
    unit = "results" if output_format == "seed" else "rows"
    for table in exported:
        click.echo(f"{table.table}: {table.rows} {unit} -> {table.path}")


@click.command("report")
@click.argument("run_id", metavar="RUN", type=int)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for report.html and the plots as PNG files (created if missing).",
)
@bootstrap_options
@click.pass_context
def report_command(
    ctx: click.Context,
    run_id: int,
    out_dir: Path,
    confidence: float,
    resamples: int,
    method: str,
    seed: int,
) -> None:
    """Write one self-contained HTML page of a run's results, with its plots as PNG files.

    Accuracy against cost per strategy, steps per episode, accuracy per difficulty and the
    MDP policy, with the per-strategy, per-difficulty and paired-comparison tables.
    """
    options = StatsOptions(
        confidence=confidence,
        n_resamples=resamples,
        method=cast(BootstrapMethod, method),
        seed=seed,
    )
    with open_session(_settings(ctx)) as session:
        report = write_report(session, run_id, out_dir, options)
    for image in report.images:
        click.echo(f"plot: {image}")
    click.echo(f"report: {report.html}")


@click.command("adaptivity")
@click.argument("run_id", metavar="RUN", type=int)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--confidence",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
    help="Confidence level of the success-rate intervals.",
)
@click.pass_context
def adaptivity_command(
    ctx: click.Context, run_id: int, output_format: str, confidence: float
) -> None:
    """Show, per strategy, whether the policy adapts to the question.

    Retrievals per episode, retrieve success, gold-passage recall of successful against
    unsuccessful retrieves (one-sided Mann-Whitney U), and accuracy and F1 by number of
    retrievals. See docs/analysis.md.
    """
    with open_session(_settings(ctx)) as session:
        report = adaptivity.load_adaptivity(session, run_id, confidence)
    if output_format == "json":
        click.echo(json.dumps(adaptivity.to_json(report), indent=2))
        return
    console = Console()
    for (headers, rows), title in (
        (adaptivity.summary_rows(report), f"Run {run_id}: does the policy adapt?"),
        (adaptivity.by_retrievals_rows(report), "Accuracy and F1 by number of retrievals"),
    ):
        table = Table(title=title)
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    level = f"{100 * confidence:g}%"
    console.print(
        f"retrieve success: {level} Clopper-Pearson interval; recall: the share of the "
        f"question's gold passages among a step's passages; p: {adaptivity.RECALL_TEST}.",
        highlight=False,
    )
    if report.gold_note:
        console.print(f"note: {report.gold_note}", highlight=False)
