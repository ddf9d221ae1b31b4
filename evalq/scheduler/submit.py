"""Planning a run: sample questions, write the run and its shards, enqueue one task each."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import evalq
from evalq.broker import RUN_SHARD, check_broker, enqueue
from evalq.config import Settings
from evalq.data.question import Question
from evalq.data.registry import check_corpus_exists, load_questions
from evalq.db import queries
from evalq.db.models import Run
from evalq.db.session import mask_url, open_store
from evalq.db.thresholds import thresholds_for
from evalq.errors import UserError
from evalq.rag.mdp_solver import PRESETS, RUN_OPTIONS, MDPParams, lookup_preset
from evalq.rag.retrieval import check_retriever
from evalq.rag.strategies import GenerationConfig, parse_strategy
from evalq.rag.strategies.fixed import FixedK
from evalq.scheduler.defaults import RUN_DEFAULTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRequest:
    """Everything ``evalq submit`` asks for."""

    dataset: str
    model: str
    strategies: tuple[str, ...]
    n: int
    difficulty: str = "all"
    seed: int = RUN_DEFAULTS.seed
    repeats: int = RUN_DEFAULTS.repeats
    shard_size: int = RUN_DEFAULTS.shard_size
    name: str | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    mdp_preset: str = RUN_DEFAULTS.mdp_preset
    mdp_overrides: dict[str, Any] = field(default_factory=dict)
    k_step: int = RUN_DEFAULTS.k_step
    max_steps: int = RUN_DEFAULTS.max_steps
    # A shipped or user corpus for a dataset that ships none (jsonl:, oran-bench).
    corpus: str | None = None
    retriever: str = RUN_DEFAULTS.retriever
    # The GPUs asked for (``evalq.fleet.gpus.gpu_request``), stored for the record only:
    # workers choose their GPUs.
    requested_gpus: dict[str, Any] | None = None
    # ``--until-decided``: stop once the paired comparison of two strategies is decided.
    until_decided: UntilDecided | None = None


@dataclass(frozen=True)
class UntilDecided:
    """The early-stopping rule: strategies A and B, error level, smallest effect, metric."""

    a: str
    b: str
    alpha: float = 0.05
    min_effect: float = 0.02
    metric: str = "accuracy"

    def check(self, names: Sequence[str]) -> None:
        """Raise a UserError unless the rule fits a run with strategies ``names``."""
        a, b = parse_strategy(self.a).name, parse_strategy(self.b).name
        if a not in names or b not in names or a == b:
            raise UserError(f"--a and --b must be two of the run's strategies: {', '.join(names)}")
        if not 0 < self.alpha < 1:
            raise UserError(f"--alpha must be in (0, 1), got {self.alpha}")
        if not 0 <= self.min_effect <= 2:
            raise UserError(f"--min-effect must be in [0, 2], got {self.min_effect}")
        if self.metric not in ("accuracy", "f1"):
            raise UserError(f"--metric must be accuracy or f1, got {self.metric!r}")


def mdp_params(req: RunRequest, preset: MDPParams | None = None) -> MDPParams:
    """The run's decision model: a preset with overrides. Its costs apply to every strategy.

    ``preset`` is the named set as ``resolve_preset`` found it; without it the name must be
    a built-in preset.
    """
    overrides = {k: v for k, v in req.mdp_overrides.items() if k not in RUN_OPTIONS}
    return (preset or lookup_preset(req.mdp_preset)).with_overrides(**overrides)


def judge_threshold(req: RunRequest, saved: Mapping[str, Any] | None = None) -> float:
    """The P(yes) at which an MDP retrieve counts as a success.

    ``--mdp-set judge_threshold`` wins; then the saved set's (``saved``, its run options as
    ``resolve_preset`` found them: a calibrated threshold); then the default.

    Raises:
        UserError: If it is not a number in [0, 1].
    """
    default = (saved or {}).get("judge_threshold", RUN_DEFAULTS.judge_threshold)
    value = req.mdp_overrides.get("judge_threshold", default)
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise UserError(f"judge_threshold must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"judge_threshold must be in [0, 1], got {value!r}")
    return threshold


def resolve_preset(settings: Settings, name: str) -> tuple[MDPParams, str, dict[str, Any]]:
    """A built-in preset or a saved parameter set, the built-in preset a run names, run options.

    A run's config names a built-in preset as its ``preset`` (workers rebuild parameters on
    one); a saved set names the one it was derived from, and is recorded as ``param_set``.
    The run options are those a saved set stores with its parameters (``RUN_OPTIONS``: a
    calibrated ``judge_threshold``); a built-in preset has none. The database is opened
    only for a name that is not built in.

    Raises:
        UserError: If no preset or saved set has the name.
    """
    if name in PRESETS:
        return PRESETS[name], name, {}
    with open_store(settings.database_url).session() as s:
        rows = {row.name: (dict(row.params), row.base_preset) for row in queries.param_sets(s)}
    params = lookup_preset(name, {set_name: values for set_name, (values, _) in rows.items()})
    values, base = rows[name]
    return params, base, {k: v for k, v in values.items() if k in RUN_OPTIONS}


def sample_questions(questions: Sequence[Question], n: int, seed: int) -> list[Question]:
    """``n`` distinct questions, the same for the same seed, in a random order.

    The order matters to ``--until-decided``: shards are consecutive slices of it, so every
    prefix of the shards is itself a random sample of the dataset.
    """
    rng = np.random.default_rng(seed)
    # Without replacement and shuffled (numpy's default): a random order, not sorted ids.
    picked = rng.choice(len(questions), size=n, replace=False, shuffle=True)
    return [questions[int(i)] for i in picked]


def plan_shards(question_ids: Sequence[str], shard_size: int) -> list[list[str]]:
    """Consecutive slices of ``shard_size`` question ids."""
    return [list(question_ids[i : i + shard_size]) for i in range(0, len(question_ids), shard_size)]


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


def _validate(req: RunRequest, preset: MDPParams, run_options: Mapping[str, Any]) -> list[Question]:
    if req.n < 1:
        raise UserError(f"--n must be at least 1, got {req.n}")
    if req.repeats < 1 or req.shard_size < 1:
        raise UserError("--repeats and --shard-size must be at least 1")
    if not req.strategies:
        raise UserError("name at least one --strategy (e.g. fixed:k=3, fixed:k=0, mdp)")
    if req.k_step < 1 or req.max_steps < 0:
        raise UserError("--k-step must be at least 1 and --max-steps at least 0")
    mdp_params(req, preset)
    judge_threshold(req, run_options)
    strategies = [parse_strategy(s) for s in req.strategies]
    if len({s.name for s in strategies}) != len(strategies):
        raise UserError("the same strategy is named twice")
    if req.until_decided is not None:
        req.until_decided.check([s.name for s in strategies])
    check_retriever(req.retriever)
    if req.corpus is not None:
        check_corpus_exists(req.corpus)
    questions = load_questions(req.dataset, req.difficulty, req.corpus)
    if req.n > len(questions):
        raise UserError(
            f"--n {req.n} is larger than {req.dataset} ({req.difficulty}): "
            f"{len(questions)} questions"
        )
    retrieving = [s.name for s in strategies if not (isinstance(s, FixedK) and s.k == 0)]
    if retrieving and all(q.corpus is None for q in questions):
        raise UserError(
            f"{req.dataset} ships no corpus, so {', '.join(retrieving)} cannot retrieve; "
            "use fixed:k=0 (closed-book), or name one with --corpus (see `evalq corpus list`)"
        )
    return questions


def submit(settings: Settings, req: RunRequest) -> int:
    """Plan and enqueue a run; returns its id.

    The run and its shards are written in one transaction. If enqueueing then fails, the
    run is deleted again: a failed submit leaves nothing half-made.
    """
    preset, base_preset, run_options = resolve_preset(settings, req.mdp_preset)
    questions = _validate(req, preset, run_options)
    check_broker(settings.broker_url)
    sample = sample_questions(questions, req.n, req.seed)
    shards = plan_shards([q.id for q in sample], req.shard_size)
    store = open_store(settings.database_url)
    names = [parse_strategy(s).name for s in req.strategies]
    params = mdp_params(req, preset)
    with store.session() as s:
        theta_cont, theta_star = thresholds_for(s, params)
        mdp = {
            "preset": base_preset,
            # Every value is stored below, so the run stays reproducible if the set changes.
            **({"param_set": req.mdp_preset} if req.mdp_preset != base_preset else {}),
            **params.to_json(),
            "theta_cont": theta_cont,
            "theta_star": theta_star,
            "k_step": req.k_step,
            "max_steps": req.max_steps,
            "judge_threshold": judge_threshold(req, run_options),
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
                config={
                    "generation": asdict(req.generation),
                    "mdp": mdp,
                    "corpus": req.corpus,
                    "retriever": req.retriever,
                    **({"requested_gpus": req.requested_gpus} if req.requested_gpus else {}),
                    **({"until_decided": _rule_json(rule)} if (rule := req.until_decided) else {}),
                },
                code_version=code_version(),
                status="queued",
            ),
            shards,
        )
        run_id = run.id
        shard_ids = [sh.id for sh in run.shards]
    try:
        enqueue(settings, RUN_SHARD, req.model, shard_ids)
    except Exception as exc:
        with store.session() as s:
            queries.delete_run(s, run_id)
        raise UserError(f"could not enqueue run on {mask_url(settings.broker_url)}: {exc}") from exc
    log.info("run %d: %d questions in %d shards", run_id, req.n, len(shard_ids))
    return run_id


def _rule_json(rule: UntilDecided) -> dict[str, Any]:
    """The rule as stored in the run's config, strategies by their canonical names."""
    return {**asdict(rule), "a": parse_strategy(rule.a).name, "b": parse_strategy(rule.b).name}


def resume(settings: Settings, run_id: int) -> int:
    """Re-enqueue every shard the database says is unfinished; returns how many.

    The database is the truth: whatever the broker lost (a restart, a flush, a cancel)
    is rebuilt from it. Failed and cancelled shards are queued again with a fresh delivery
    count. A shard enqueued twice is harmless: stored episodes are skipped. A run stopped
    by ``--until-decided`` keeps its decision and runs to the end: it is not decided again.
    """
    check_broker(settings.broker_url)
    store = open_store(settings.database_url)
    with store.session() as s:
        run = queries.get_run(s, run_id)
        shard_ids = [sh.id for sh in queries.reopen_shards(s, run)]
        model = run.model
    enqueue(settings, RUN_SHARD, model, shard_ids)
    return len(shard_ids)
