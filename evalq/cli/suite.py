"""``evalq suite run SUITE.yaml``: submit a list of runs, wait, print one summary table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from evalq.config import Settings
from evalq.scheduler.suite import (
    Suite,
    SummaryRow,
    fleet_commands,
    load_suite,
    parse_overrides,
    submit_suite,
    summarise,
    wait_for_runs,
)


def summary_table(suite: Suite, rows: list[SummaryRow]) -> Table:
    """One row per run and strategy: dataset, n, episodes, accuracy and mean cost.

    The model goes in the title when every run shares it, else in a column of its own.
    """
    models = sorted({r.model for r in rows})
    one_model = len(models) == 1
    title = f"suite {suite.name}" + (f" · {models[0]}" if one_model else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, caption="failed: invalid or error episodes")
    columns = ["run", "id", "dataset", *([] if one_model else ["model"]), "n", "strategy"]
    columns += ["episodes", "failed", "accuracy", "cost"]
    for col in columns:
        left = col in ("run", "dataset", "model", "strategy")
        table.add_column(col, justify="left" if left else "right", no_wrap=True)
    for r in rows:
        accuracy = "-" if r.accuracy is None else f"{100 * r.accuracy:.1f}%"
        cost = "-" if r.mean_cost is None else f"{r.mean_cost:.2f}"
        table.add_row(
            r.run,
            str(r.run_id),
            r.dataset,
            *([] if one_model else [r.model]),
            str(r.n),
            r.strategy,
            str(r.episodes),
            str(r.failed),
            accuracy,
            cost,
        )
    return table


class _Fleets:
    """The ``evalq fleet`` processes ``--start-workers`` runs, stopped on the way out."""

    def __init__(self, settings: Settings, commands: list[list[str]], extra: tuple[str, ...]):
        env = {
            **os.environ,
            "EVALQ_DATABASE_URL": settings.database_url,
            "EVALQ_BROKER_URL": settings.broker_url,
        }
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "evalq", *cmd, *extra], env=env)
            for cmd in commands
        ]

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=180)
            except subprocess.TimeoutExpired:
                p.kill()


@click.group("suite")
def suite() -> None:
    """Suites: several runs from one YAML file, with one summary (examples/suites/)."""


@suite.command("run")
@click.argument("path", metavar="SUITE.yaml", type=click.Path(path_type=Path))
@click.option("--model", default=None, help="Run every run on this model instead.")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a run setting in every run (e.g. n=5, corpus=my-docs).",
)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait, then summarise.")
@click.option(
    "--start-workers",
    is_flag=True,
    help="Start an `evalq fleet` per model on this machine (on the GPUs the runs ask for) "
    "and stop it when the suite is done.",
)
@click.option(
    "--worker-arg",
    "worker_args",
    multiple=True,
    help="An extra argument for each started fleet (repeatable, e.g. --worker-arg=--dtype "
    "--worker-arg=float16).",
)
@click.option("--timeout", type=float, default=None, help="Seconds to wait at most.")
@click.pass_obj
def run_command(
    settings: Settings,
    path: Path,
    model: str | None,
    assignments: tuple[str, ...],
    wait: bool,
    start_workers: bool,
    worker_args: tuple[str, ...],
    timeout: float | None,
) -> None:
    """Submit every run of SUITE.yaml, wait for them, and print one summary table."""
    overrides = parse_overrides(assignments)
    if model is not None:
        overrides["model"] = model
    loaded = load_suite(path, overrides)
    commands = fleet_commands(loaded)
    run_ids = submit_suite(settings, loaded)
    for run, run_id in zip(loaded.runs, run_ids, strict=True):
        req = run.request
        click.echo(
            f"run {run_id} ({run.name}): {req.dataset}/{req.difficulty}, {req.n} questions x "
            f"{', '.join(req.strategies)} on {req.model}"
        )
    if not start_workers:
        for cmd in commands:
            click.echo("serve it with: evalq " + " ".join(cmd))
    if not wait:
        return
    fleets = _Fleets(settings, commands, worker_args) if start_workers else None
    console = Console(stderr=True)
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as bar:
            tasks = {i: bar.add_task(f"run {i}", total=None) for i in run_ids}

            def show(progress: dict[int, tuple[int, int]]) -> None:
                for run_id, (done, total) in progress.items():
                    bar.update(tasks[run_id], completed=done, total=total)

            wait_for_runs(
                settings,
                run_ids,
                timeout=timeout,
                on_progress=show,
                alive=None if fleets is None else fleets.alive,
            )
    finally:
        if fleets is not None:
            fleets.stop()
    Console().print(summary_table(loaded, summarise(settings, loaded, run_ids)))
