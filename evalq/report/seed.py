"""Export a run as JSON in the layout of the seed project (ARGO, ``mdp_rag_multi_gpu.py``).

Two kinds of file, under ``<out>/results/``, with the seed's names and fields:

- ``multi_gpu/{model}_{difficulty}_{n}q.json``: the MDP strategy alone (``metrics`` with
  accuracy, avg_cost, avg_iterations; ``results`` with one entry per episode and its history).
- ``multi_gpu_comparison/{model}_{difficulty}_{n}q_mdp_vs_fixed_k{k}.json``: MDP against one
  fixed-k strategy (``mdp_strategy``, ``fixed_strategy``, ``improvement``), one file per k.

Fields evalq does not have (the seed's ``confidence``) are null; fields evalq adds (run id,
status, repeat, passages' scores) sit beside the seed's. Averages are over ``ok`` episodes,
as ``evalq results`` computes them; ``invalid`` and ``error`` episodes are listed and counted.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from evalq.db.models import Episode, Run, Step
from evalq.errors import UserError
from evalq.rag.strategies import parse_strategy
from evalq.rag.strategies.fixed import FixedK
from evalq.report.compare import OK_STATUS, run_strategies

MDP_STRATEGY = "mdp"
SINGLE_DIR = Path("results") / "multi_gpu"
COMPARISON_DIR = Path("results") / "multi_gpu_comparison"
# Actions that end an episode with the answer: mdp's terminate, fixed-k's answer.
ANSWER_ACTIONS = ("terminate", "answer")
# (c_r, c_p) of the run, or None where its config does not say.
Costs = tuple[float, float] | None


@dataclass(frozen=True)
class SeedFile:
    """One file written: its kind (multi_gpu / multi_gpu_comparison), path and result count."""

    kind: str
    path: Path
    results: int


def file_stem(run: Run) -> str:
    """``{model}_{difficulty}_{n}q`` with every ``/`` of the model name made ``_``."""
    return f"{run.model.replace('/', '_')}_{run.difficulty}_{run.n}q"


def fixed_k(strategy: str) -> int | None:
    """The k of a ``fixed:k=N`` strategy; None for any other strategy."""
    if not strategy.startswith("fixed:"):
        return None
    parsed = parse_strategy(strategy)
    return parsed.k if isinstance(parsed, FixedK) else None


def _step_cost(k: int | None, action: str, c_r: float, c_p: float) -> float:
    """What one stored step cost: a fixed-k retrieve fetches k passages in one step."""
    if action == "retrieve":
        return c_r * (1 if k is None else k)
    return c_p  # reason, and the answer call (charged c_p by every strategy)


def _history(
    steps: list[Step], episode: Episode, k: int | None, costs: Costs, u_max: float
) -> list[dict[str, Any]]:
    """The seed's per-iteration history from evalq's stored steps (iteration counts from 1)."""
    history = []
    total = 0.0
    for step in steps:
        if costs is not None:
            total += _step_cost(k, step.action, *costs)
        answers = step.action in ANSWER_ACTIONS
        history.append(
            {
                "iteration": step.index + 1,
                "action": step.action,
                "subquery": step.query,
                "retrieved_docs": list(step.passage_ids or []),
                "retrieval_scores": list(step.scores or []),
                "retrieval_success": step.success if step.action == "retrieve" else None,
                "response": step.text,
                "intermediate_answer": episode.answer if answers else None,
                "confidence": None,
                "uncertainty": None if step.u_after is None else 1.0 - step.u_after / u_max,
                "cost": total if costs is not None else None,
                "U_before": step.u_before,
                "U_after": step.u_after,
                "prompt_tokens": step.prompt_tokens,
                "completion_tokens": step.completion_tokens,
                "latency_s": step.latency_s,
            }
        )
    return history


def _result(
    episode: Episode, steps: list[Step], k: int | None, costs: Costs, u_max: float
) -> dict[str, Any]:
    """One episode as the seed's per-question result."""
    return {
        "question_id": episode.question_id,
        "repeat": episode.repeat,
        "status": episode.status,
        "difficulty": episode.difficulty,
        "predicted": episode.answer,
        "correct": episode.gold,
        "is_correct": bool(episode.correct),
        "iterations": episode.steps,
        "num_retrievals": episode.retrievals,
        "num_reasons": sum(1 for s in steps if s.action == "reason"),
        "total_cost": episode.cost,
        "error": episode.error,
        "history": _history(steps, episode, k, costs, u_max),
    }


def _strategy_block(results: list[dict[str, Any]]) -> dict[str, Any]:
    """accuracy, avg_cost, avg_iterations (over ok episodes), and the results themselves."""
    ok = [r for r in results if r["status"] == OK_STATUS]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "accuracy": mean([1.0 if r["is_correct"] else 0.0 for r in ok]),
        "avg_cost": mean([float(r["total_cost"]) for r in ok]),
        "avg_iterations": mean([float(r["iterations"]) for r in ok]),
        "total_retrievals": sum(int(r["num_retrievals"]) for r in ok),
        "total_reasons": sum(int(r["num_reasons"]) for r in ok),
        "episodes": len(results),
        "ok": len(ok),
        "results": results,
    }


def _strategy_results(session: Session, run: Run, strategy: str) -> list[dict[str, Any]]:
    """Every episode of one strategy, with its steps, as seed results (ordered by question)."""
    episodes = list(
        session.scalars(
            select(Episode)
            .where(Episode.run_id == run.id, Episode.strategy == strategy)
            .order_by(Episode.question_id, Episode.repeat)
        )
    )
    steps: dict[int, list[Step]] = defaultdict(list)
    query = (
        select(Step)
        .join(Episode, Episode.id == Step.episode_id)
        .where(Episode.run_id == run.id, Episode.strategy == strategy)
        .order_by(Step.episode_id, Step.index)
    )
    for step in session.scalars(query):
        steps[step.episode_id].append(step)
    mdp = (run.config or {}).get("mdp") or {}
    costs = (float(mdp["c_r"]), float(mdp["c_p"])) if "c_r" in mdp and "c_p" in mdp else None
    u_max = float(mdp.get("u_max", 1.0))
    k = fixed_k(strategy)
    return [_result(e, steps[e.id], k, costs, u_max) for e in episodes]


def _header(run: Run, workers: list[str]) -> dict[str, Any]:
    """The seed's top-level fields; GPUs are the workers' business, so gpu_* are null."""
    stamp = run.finished_at or run.created_at
    return {
        "timestamp": stamp.isoformat() if stamp else None,
        "model": run.model,
        "gpu_mode": None,
        "gpu_ids": None,
        "workers": workers,
        "run_id": run.id,
        "dataset": run.dataset,
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_seed(session: Session, run_id: int, out_dir: Path) -> list[SeedFile]:
    """Write the run's MDP results, and MDP against each fixed-k, in the seed's layout.

    Raises:
        UserError: The run does not exist or has no ``mdp`` episodes (the seed's files are
            all about MDP).
    """
    strategies = run_strategies(session, run_id)
    run = session.get(Run, run_id)
    assert run is not None  # run_strategies raised otherwise
    if MDP_STRATEGY not in strategies:
        known = ", ".join(strategies) or "none"
        raise UserError(
            f"run {run_id} has no mdp episodes (it has: {known}); the seed layout holds MDP "
            "results: use --format csv, jsonl or parquet"
        )
    workers = sorted(
        w
        for w in session.scalars(select(Episode.worker).where(Episode.run_id == run_id).distinct())
        if w
    )
    base = {"n_questions": run.n, "difficulty": run.difficulty, "seed": run.seed}
    evalq_config = {"repeats": run.repeats, "strategies": list(run.strategies), **run.config}
    mdp = _strategy_block(_strategy_results(session, run, MDP_STRATEGY))
    stem = file_stem(run)
    written = []

    single = out_dir / SINGLE_DIR / f"{stem}.json"
    _write(
        single,
        {
            **_header(run, workers),
            "config": {**base, "strategy": MDP_STRATEGY, "evalq": evalq_config},
            "metrics": {k: mdp[k] for k in ("accuracy", "avg_cost", "avg_iterations")},
            "results": mdp["results"],
        },
    )
    written.append(SeedFile("multi_gpu", single, len(mdp["results"])))

    for name in strategies:
        k = fixed_k(name)
        if k is None:
            continue
        fixed = _strategy_block(_strategy_results(session, run, name))
        path = out_dir / COMPARISON_DIR / f"{stem}_mdp_vs_fixed_k{k}.json"
        _write(
            path,
            {
                **_header(run, workers),
                "config": {**base, "fixed_k": k, "evalq": evalq_config},
                "mdp_strategy": mdp,
                "fixed_strategy": fixed,
                "improvement": {
                    "accuracy": _difference(mdp["accuracy"], fixed["accuracy"]),
                    "cost": _difference(mdp["avg_cost"], fixed["avg_cost"]),
                },
            },
        )
        written.append(
            SeedFile("multi_gpu_comparison", path, len(mdp["results"]) + len(fixed["results"]))
        )
    return written


def _difference(a: float | None, b: float | None) -> float | None:
    """MDP minus fixed, as the seed's ``improvement`` reports it; None without data."""
    return None if a is None or b is None else a - b
