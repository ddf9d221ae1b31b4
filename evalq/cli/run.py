"""``submit``, ``status``, ``results``, ``resume`` and ``cancel``: a run's life from the CLI."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from datetime import UTC, datetime

import click
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from evalq.cli.seed_flags import with_seed_flags
from evalq.config import Settings
from evalq.db import queries
from evalq.db.models import Run
from evalq.db.queries import StrategyProgress, StrategyResult
from evalq.db.session import open_store
from evalq.errors import UserError
from evalq.fleet.gpus import GPU_MODES, gpu_request
from evalq.rag.strategies import GenerationConfig
from evalq.report.sequential import describe, live_decision
from evalq.scheduler.defaults import RUN_DEFAULTS
from evalq.scheduler.submit import RunRequest, UntilDecided, resume, submit


@click.command("submit")
@click.option(
    "--dataset", default=RUN_DEFAULTS.dataset, show_default=True, help="See `evalq datasets`."
)
@click.option("--difficulty", default=None, help="Dataset difficulty (default: all of it).")
@click.option("--n", "n", type=int, required=True, help="Number of questions to sample.")
@click.option(
    "--seed", type=int, default=RUN_DEFAULTS.seed, show_default=True, help="Same seed, same sample."
)
@click.option("--model", required=True, help="Model name; shards go to this model's queue.")
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    default=RUN_DEFAULTS.strategies,
    show_default=True,
    help="Repeatable: fixed:k=N (k=0 closed-book), mdp, ircot, iter-retgen or flare "
    "(options: docs/baselines.md).",
)
@click.option(
    "--repeats",
    type=int,
    default=RUN_DEFAULTS.repeats,
    show_default=True,
    help="Episodes per question.",
)
@click.option(
    "--shard-size",
    type=int,
    default=RUN_DEFAULTS.shard_size,
    show_default=True,
    help="Questions a shard.",
)
@click.option("--name", default=None, help="A label for the run.")
@click.option(
    "--max-tokens",
    type=int,
    default=RUN_DEFAULTS.max_tokens,
    show_default=True,
    help="Answer length cap.",
)
@click.option("--temperature", type=float, default=RUN_DEFAULTS.temperature, show_default=True)
@click.option("--ignore-eos", is_flag=True, help="Fixed output lengths (benchmarks only).")
@click.option(
    "--mdp-preset",
    default=RUN_DEFAULTS.mdp_preset,
    show_default=True,
    help="base, multi_gpu, early (base's solved policy never retrieves; see docs/mdp.md), "
    "or a set saved by `evalq mdp calibrate --save` (see `evalq mdp presets`).",
)
@click.option(
    "--mdp-set", "mdp_set", multiple=True, metavar="KEY=VALUE", help="Override an MDP parameter."
)
@click.option(
    "--k-step",
    type=int,
    default=RUN_DEFAULTS.k_step,
    show_default=True,
    help="Passages per retrieve.",
)
@click.option(
    "--max-steps", type=int, default=RUN_DEFAULTS.max_steps, show_default=True, help="MDP step cap."
)
@click.option(
    "--corpus",
    default=None,
    help="Corpus to retrieve from, for jsonl: and oran-bench (see `evalq corpus list`).",
)
@click.option(
    "--retriever",
    type=click.Choice(["bm25", "dense"]),
    default=RUN_DEFAULTS.retriever,
    show_default=True,
    help="dense needs the 'dense' extra.",
)
# The seed's GPU flags, as rewritten by evalq.cli.seed_flags.
@click.option("--gpu-mode", "gpu_mode", type=click.Choice(list(GPU_MODES)), hidden=True)
@click.option("--gpu-ids", "gpu_ids", hidden=True)
@click.option(
    "--until-decided",
    is_flag=True,
    help="Stop once --a vs --b is decided (anytime-valid; see docs/analysis.md).",
)
@click.option("--a", "strategy_a", help="With --until-decided: strategy A.")
@click.option("--b", "strategy_b", help="With --until-decided: strategy B.")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Error level.")
@click.option(
    "--min-effect",
    type=float,
    default=0.02,
    show_default=True,
    help="Stop too once the interval for A - B is narrower than this.",
)
@click.option(
    "--metric", type=click.Choice(["accuracy", "f1"]), default="accuracy", show_default=True
)
@click.pass_obj
def submit_cmd(
    settings: Settings,
    dataset: str,
    difficulty: str | None,
    n: int,
    seed: int,
    model: str,
    strategies: tuple[str, ...],
    repeats: int,
    shard_size: int,
    name: str | None,
    max_tokens: int,
    temperature: float,
    ignore_eos: bool,
    mdp_preset: str,
    mdp_set: tuple[str, ...],
    k_step: int,
    max_steps: int,
    corpus: str | None,
    retriever: str,
    gpu_mode: str | None,
    gpu_ids: str | None,
    until_decided: bool,
    strategy_a: str | None,
    strategy_b: str | None,
    alpha: float,
    min_effect: float,
    metric: str,
) -> int:
    """Sample questions, write the run and its shards, and enqueue them; returns the run id."""
    from evalq.data.registry import DATASETS

    rule = None
    if until_decided:
        if not strategy_a or not strategy_b:
            raise UserError("--until-decided needs --a and --b, two of the run's strategies")
        rule = UntilDecided(strategy_a, strategy_b, alpha, min_effect, metric)
    elif strategy_a or strategy_b:
        raise UserError("--a and --b go with --until-decided")

    # Checked before submitting: a bad GPU request leaves no run behind.
    asked = gpu_mode is not None or gpu_ids is not None
    requested = gpu_request(model, gpu_mode, gpu_ids) if asked else None

    info = DATASETS.get(dataset)
    req = RunRequest(
        dataset=dataset,
        model=model,
        strategies=strategies,
        n=n,
        difficulty=difficulty or (info.every_question if info else "all"),
        seed=seed,
        repeats=repeats,
        shard_size=shard_size,
        name=name,
        generation=GenerationConfig(
            answer_tokens=max_tokens, temperature=temperature, seed=seed, ignore_eos=ignore_eos
        ),
        mdp_preset=mdp_preset,
        mdp_overrides=parse_assignments(mdp_set),
        k_step=k_step,
        max_steps=max_steps,
        corpus=corpus,
        retriever=retriever,
        requested_gpus=requested,
        until_decided=rule,
    )
    run_id = submit(settings, req)
    click.echo(f"run {run_id}: {n} questions x {len(strategies)} strategies queued for {model}")
    if requested is not None:
        click.echo(f"workers choose their GPUs; to serve this request run: {requested['fleet']}")
    return run_id


def parse_assignments(items: tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` pairs; values are converted and checked by ``MDPParams``."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--mdp-set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def progress_table(run: Run, progress: list[StrategyProgress]) -> Table:
    """Per strategy: done/total, invalid, failed, episodes/s and ETA."""
    table = Table(
        title=f"run {run.id} · {run.dataset}/{run.difficulty} · {run.model} · {run.status}"
    )
    for col in ("strategy", "done/total", "invalid", "failed", "episodes/s", "ETA"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    now = datetime.now(UTC)
    for p in progress:
        rate = None
        if p.first_at is not None and p.done:
            end = p.last_at if p.done >= p.total and p.last_at else now
            span = (_aware(end) - _aware(p.first_at)).total_seconds()
            rate = p.done / span if span > 0 else None
        left = p.total - p.done
        eta = "done" if left <= 0 else (f"{left / rate:.0f} s" if rate else "-")
        table.add_row(
            p.strategy,
            f"{p.done}/{p.total}",
            str(p.invalid),
            str(p.failed),
            f"{rate:.2f}" if rate else "-",
            eta,
        )
    return table


def _aware(t: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@click.command("status")
@click.argument("run_id", type=int, required=False)
@click.option("--watch", is_flag=True, help="Redraw progress and workers live (Ctrl-C to leave).")
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between redraws."
)
@click.pass_obj
def status_cmd(settings: Settings, run_id: int | None, watch: bool, interval: float) -> None:
    """Progress of one run, or of the latest runs, and the fleet's workers."""
    from evalq.cli.watch import watch_status, workers_view

    if interval <= 0:
        raise UserError(f"--interval must be positive, got {interval}")
    if watch:
        watch_status(settings, run_id, interval)
        return
    store = open_store(settings.database_url)
    console = Console()
    with store.session() as s:
        runs = [queries.get_run(s, run_id)] if run_id is not None else queries.latest_runs(s, 5)
        if not runs:
            click.echo("no runs yet: start one with `evalq submit`")
        for run in runs:
            console.print(progress_table(run, queries.run_progress(s, run)))
            counts = queries.shard_counts(s, run.id)
            console.print("shards: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            for line in problem_lines(s, run.id) + decision_lines(s, run):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
        console.print(workers_view(s))


def problem_lines(session: Session, run_id: int) -> list[str]:
    """Failed shards with their reasons, and the commonest episode errors."""
    lines = [
        f"shard {sh.index} failed after {sh.attempts} deliveries: {sh.error}"
        for sh in queries.failed_shards(session, run_id)
    ]
    lines += [f"{n} episodes failed: {why}" for why, n in queries.episode_errors(session, run_id)]
    return lines


def decision_lines(session: Session, run: Run) -> list[str]:
    """For an ``--until-decided`` run: the live interval and the decision."""
    live = live_decision(session, run)
    return [] if live is None else [describe(run, *live)]


def _fmt(v: float | None, pct: bool = False, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.{digits}f}"


def _tokens(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else str(n)


def results_table(run: Run, results: list[StrategyResult]) -> Table:
    """Accuracy, F1, recall, cost, steps, retrievals and tokens per strategy.

    Accuracy is exact match for short answers and the option number for multiple choice;
    unparsed answers count as wrong and are counted. JSON and CSV carry every field.
    """
    table = Table(
        title=f"results of run {run.id} · {run.dataset}/{run.difficulty} · {run.model}",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        caption="inv: invalid rows · err: errors · unp: unparsed answers (scored wrong) · "
        "(att): over ok + error episodes, errors scored 0",
    )
    table.add_column("strategy", no_wrap=True)
    columns = ("n", "inv", "err", "unp", "accuracy", "acc(att)", "F1", "F1(att)", "recall")
    for col in (*columns, "cost", "steps", "retr"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True, min_width=6)
    for r in results:
        table.add_row(
            r.strategy,
            str(r.episodes),
            str(r.invalid),
            str(r.errors),
            str(r.unparsed),
            _fmt(r.accuracy, True),
            _fmt(r.accuracy_attempted, True),
            _fmt(r.f1, True),
            _fmt(r.f1_attempted, True),
            _fmt(r.retrieval_recall, True),
            _fmt(r.mean_cost, digits=2),
            _fmt(r.mean_steps, digits=1),
            _fmt(r.mean_retrievals, digits=1),
            _tokens(r.prompt_tokens + r.completion_tokens),
        )
    return table


@click.command("results")
@click.argument("run_id", type=int)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@click.pass_obj
def results_cmd(settings: Settings, run_id: int, fmt: str) -> None:
    """Accuracy, cost and tokens per strategy of a run."""
    store = open_store(settings.database_url)
    with store.session() as s:
        run = queries.get_run(s, run_id)
        results = queries.run_results(s, run)
        if fmt == "table":
            Console().print(results_table(run, results))
            return
    rows = [asdict(r) for r in results]
    if fmt == "json":
        click.echo(json.dumps({"run": run_id, "strategies": rows}, indent=2))
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(StrategyResult.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buf.getvalue(), nl=False)


@click.command("resume")
@click.argument("run_id", type=int)
@click.pass_obj
def resume_cmd(settings: Settings, run_id: int) -> None:
    """Re-enqueue every unfinished shard of a run (stored episodes are never redone)."""
    n = resume(settings, run_id)
    click.echo(f"run {run_id}: {n} unfinished shards re-enqueued")


@click.command("cancel")
@click.argument("run_id", type=int)
@click.pass_obj
def cancel_cmd(settings: Settings, run_id: int) -> None:
    """Stop a run: queued shards are skipped, running ones stop at the next check."""
    store = open_store(settings.database_url)
    with store.session() as s:
        run = queries.get_run(s, run_id)
        run.status = "cancelled"
    click.echo(f"run {run_id} cancelled; `evalq resume {run_id}` continues it")


COMMANDS = [with_seed_flags(submit_cmd), status_cmd, results_cmd, resume_cmd, cancel_cmd]
