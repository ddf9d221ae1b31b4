"""Planning a run: sample questions, write the run and its shards, enqueue one task each."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import evalq
from evalq.config import Settings
from evalq.data.question import Question
from evalq.data.registry import load_questions
from evalq.db import queries
from evalq.db.models import Run, Shard
from evalq.db.session import mask_url, open_store
from evalq.db.thresholds import thresholds_for
from evalq.errors import UserError
from evalq.rag.mdp_solver import PRESETS, MDPParams
from evalq.rag.strategies import GenerationConfig, parse_strategy
from evalq.rag.strategies.fixed import FixedK
from evalq.worker.app import RUN_SHARD, make_app, queue_for

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class RunRequest:
    """Everything ``evalq submit`` asks for."""

    dataset: str
    model: str
    strategies: tuple[str, ...]
    n: int
    difficulty: str = "all"
    seed: int = 0
    repeats: int = 1
    shard_size: int = 50
    name: str | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    mdp_preset: str = "base"
    mdp_overrides: dict[str, Any] = field(default_factory=dict)
    k_step: int = 3
    max_steps: int = 10


def mdp_params(req: RunRequest) -> MDPParams:
    """The run's decision model: a preset with overrides. Its costs apply to every strategy."""
    if req.mdp_preset not in PRESETS:
        raise UserError(f"unknown MDP preset {req.mdp_preset!r}: choose {', '.join(PRESETS)}")
    return PRESETS[req.mdp_preset].with_overrides(**req.mdp_overrides)


def sample_questions(questions: Sequence[Question], n: int, seed: int) -> list[Question]:
    """``n`` distinct questions, the same for the same seed."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(questions), size=n, replace=False)
    return [questions[int(i)] for i in picked]


def plan_shards(question_ids: Sequence[str], shard_size: int) -> list[list[str]]:
    """Consecutive slices of ``shard_size`` question ids."""
    return [list(question_ids[i : i + shard_size]) for i in range(0, len(question_ids), shard_size)]


def check_broker(broker_url: str) -> None:
    """Fail fast, with one line, when the broker does not answer."""
    try:
        app = make_app(Settings(broker_url=broker_url))
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
    except Exception as exc:
        raise UserError(f"broker {mask_url(broker_url)} is unreachable: {exc}") from exc


def code_version() -> str:
    """The evalq version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(evalq.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{evalq.__version__}+{sha}" if sha else evalq.__version__


def _validate(req: RunRequest) -> list[Question]:
    if req.n < 1:
        raise UserError(f"--n must be at least 1, got {req.n}")
    if req.repeats < 1 or req.shard_size < 1:
        raise UserError("--repeats and --shard-size must be at least 1")
    if not req.strategies:
        raise UserError("name at least one --strategy (e.g. fixed:k=3, fixed:k=0, mdp)")
    if req.k_step < 1 or req.max_steps < 0:
        raise UserError("--k-step must be at least 1 and --max-steps at least 0")
    mdp_params(req)
    strategies = [parse_strategy(s) for s in req.strategies]
    if len({s.name for s in strategies}) != len(strategies):
        raise UserError("the same strategy is named twice")
    questions = load_questions(req.dataset, req.difficulty)
    if req.n > len(questions):
        raise UserError(
            f"--n {req.n} is larger than {req.dataset} ({req.difficulty}): "
            f"{len(questions)} questions"
        )
    retrieving = [s.name for s in strategies if not (isinstance(s, FixedK) and s.k == 0)]
    if retrieving and all(q.corpus is None for q in questions):
        raise UserError(
            f"{req.dataset} ships no corpus, so {', '.join(retrieving)} cannot retrieve; "
            "use fixed:k=0 (closed-book) or a dataset with a corpus"
        )
    return questions


def submit(settings: Settings, req: RunRequest) -> int:
    """Plan and enqueue a run; returns its id.

    The run and its shards are written in one transaction. If enqueueing then fails, the
    run is deleted again: a failed submit leaves nothing half-made.
    """
    questions = _validate(req)
    check_broker(settings.broker_url)
    sample = sample_questions(questions, req.n, req.seed)
    shards = plan_shards([q.id for q in sample], req.shard_size)
    store = open_store(settings.database_url)
    names = [parse_strategy(s).name for s in req.strategies]
    params = mdp_params(req)
    with store.session() as s:
        theta_cont, theta_star = thresholds_for(s, params)
        mdp = {
            "preset": req.mdp_preset,
            **params.to_json(),
            "theta_cont": theta_cont,
            "theta_star": theta_star,
            "k_step": req.k_step,
            "max_steps": req.max_steps,
        }
        run = queries.create_run(
            s,
            Run(
                name=req.name,
                dataset=req.dataset,
                difficulty=req.difficulty,
                n=req.n,
                seed=req.seed,
                model=req.model,
                strategies=names,
                repeats=req.repeats,
                config={"generation": asdict(req.generation), "mdp": mdp},
                code_version=code_version(),
                status="queued",
            ),
            shards,
        )
        run_id = run.id
        shard_ids = [sh.id for sh in run.shards]
    try:
        enqueue(settings, req.model, shard_ids)
    except Exception as exc:
        with store.session() as s:
            queries.delete_run(s, run_id)
        raise UserError(f"could not enqueue run on {mask_url(settings.broker_url)}: {exc}") from exc
    log.info("run %d: %d questions in %d shards", run_id, req.n, len(shard_ids))
    return run_id


def enqueue(settings: Settings, model: str, shard_ids: Sequence[int]) -> None:
    """One Celery message per shard on the model's queue, over one connection."""
    app = make_app(settings)
    queue = queue_for(model)
    with app.connection_for_write() as conn, app.producer_or_acquire() as producer:
        conn.ensure_connection(max_retries=1)
        for shard_id in shard_ids:
            app.send_task(RUN_SHARD, args=[shard_id], queue=queue, producer=producer, retry=False)


def resume(settings: Settings, run_id: int) -> int:
    """Re-enqueue every shard the database says is unfinished; returns how many.

    The database is the truth: whatever the broker lost (a restart, a flush, a cancel)
    is rebuilt from it. A shard enqueued twice is harmless: stored episodes are skipped.
    """
    check_broker(settings.broker_url)
    store = open_store(settings.database_url)
    with store.session() as s:
        run = queries.get_run(s, run_id)
        pending: list[Shard] = queries.unfinished_shards(s, run_id)
        if run.status in ("cancelled", "failed") or (pending and run.status == "done"):
            run.status = "running"
        model = run.model
        shard_ids = [sh.id for sh in pending]
    enqueue(settings, model, shard_ids)
    return len(shard_ids)
