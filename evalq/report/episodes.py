"""One run's episodes as arrays, per strategy: what the report's tables and plots are built from."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalq.db.models import Episode, Run, Step
from evalq.errors import UserError
from evalq.report.compare import OK_STATUS, UNKNOWN_DIFFICULTY, run_strategies

# The action that ends an MDP episode: its u_after is the progress the policy stopped at.
TERMINATE = "terminate"


@dataclass(frozen=True)
class RunInfo:
    """The run's identity and settings, detached from the session."""

    id: int
    name: str | None
    dataset: str
    difficulty: str
    n: int
    seed: int
    model: str
    repeats: int
    status: str
    code_version: str
    created_at: datetime
    finished_at: datetime | None
    config: dict[str, Any]

    @classmethod
    def of(cls, run: Run) -> RunInfo:
        """Copy the columns of a Run row."""
        return cls(
            id=run.id,
            name=run.name,
            dataset=run.dataset,
            difficulty=run.difficulty,
            n=run.n,
            seed=run.seed,
            model=run.model,
            repeats=run.repeats,
            status=run.status,
            code_version=run.code_version,
            created_at=run.created_at,
            finished_at=run.finished_at,
            config=dict(run.config or {}),
        )


@dataclass(frozen=True)
class StrategyEpisodes:
    """One strategy's episodes: status counts over all of them, arrays over the ``ok`` ones.

    Every array has one entry per ``ok`` episode, in the same order as ``difficulty``.
    ``final_u`` holds the progress U at which ``ok`` episodes terminated, for strategies
    that track U (MDP); it is empty for the others.
    """

    strategy: str
    statuses: dict[str, int]
    difficulty: tuple[str, ...]
    correct: NDArray[np.float64]
    cost: NDArray[np.float64]
    steps: NDArray[np.float64]
    retrievals: NDArray[np.float64]
    tokens: NDArray[np.float64]
    latency_s: NDArray[np.float64]
    final_u: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @property
    def total(self) -> int:
        """Episodes of this strategy, whatever their status."""
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        """Episodes with status ``ok``: the ones every statistic is computed over."""
        return len(self.difficulty)

    @property
    def excluded(self) -> dict[str, int]:
        """Episodes left out, by status (``invalid``, ``error``)."""
        return {s: c for s, c in self.statuses.items() if s != OK_STATUS}


@dataclass(frozen=True)
class RunEpisodes:
    """A run and its episodes, one entry per strategy in the run's order."""

    run: RunInfo
    strategies: tuple[StrategyEpisodes, ...]

    def strategy(self, name: str) -> StrategyEpisodes | None:
        """The named strategy's episodes, or None if the run has none."""
        return next((s for s in self.strategies if s.strategy == name), None)


def _final_u(session: Session, run_id: int) -> dict[int, float]:
    """Episode id to the U its terminate step ended at, for episodes that have one."""
    query = (
        select(Step.episode_id, Step.u_after)
        .join(Episode, Episode.id == Step.episode_id)
        .where(Episode.run_id == run_id, Step.action == TERMINATE, Step.u_after.is_not(None))
    )
    return {int(row.episode_id): float(row.u_after) for row in session.execute(query)}


def load_run_episodes(session: Session, run_id: int) -> RunEpisodes:
    """Read a run's episodes (no text columns) and group them by strategy.

    Raises:
        UserError: The run does not exist.
    """
    order = run_strategies(session, run_id)  # raises when the run does not exist
    run = session.get(Run, run_id)
    if run is None:  # pragma: no cover - run_strategies has checked
        raise UserError(f"run {run_id} does not exist")
    query = (
        select(
            Episode.id,
            Episode.strategy,
            Episode.status,
            Episode.difficulty,
            Episode.correct,
            Episode.cost,
            Episode.steps,
            Episode.retrievals,
            Episode.prompt_tokens,
            Episode.completion_tokens,
            Episode.latency_s,
        )
        .where(Episode.run_id == run_id)
        .order_by(Episode.strategy, Episode.question_id, Episode.repeat)
    )
    rows: dict[str, list[Any]] = defaultdict(list)
    for row in session.execute(query):
        rows[row.strategy].append(row)
    final_u = _final_u(session, run_id)
    return RunEpisodes(
        run=RunInfo.of(run),
        strategies=tuple(_strategy_episodes(name, rows[name], final_u) for name in order),
    )


def _strategy_episodes(
    strategy: str, rows: list[Any], final_u: dict[int, float]
) -> StrategyEpisodes:
    """Arrays over one strategy's ok rows, and the status counts of all its rows."""
    ok = [r for r in rows if r.status == OK_STATUS]

    def column(values: list[float]) -> NDArray[np.float64]:
        return np.array(values, dtype=np.float64)

    return StrategyEpisodes(
        strategy=strategy,
        statuses=dict(sorted(Counter(str(r.status) for r in rows).items())),
        difficulty=tuple(str(r.difficulty or UNKNOWN_DIFFICULTY) for r in ok),
        correct=column([1.0 if r.correct else 0.0 for r in ok]),
        cost=column([float(r.cost or 0.0) for r in ok]),
        steps=column([float(r.steps or 0) for r in ok]),
        retrievals=column([float(r.retrievals or 0) for r in ok]),
        tokens=column([float((r.prompt_tokens or 0) + (r.completion_tokens or 0)) for r in ok]),
        latency_s=column([float(r.latency_s or 0.0) for r in ok]),
        final_u=column([final_u[r.id] for r in ok if r.id in final_u]),
    )
