"""Per-strategy statistics of one run: accuracy and cost with bootstrap intervals, per difficulty.

Intervals come from :func:`evalq.report.compare.mean_estimate` (SciPy's bootstrap), so the
report and ``evalq compare`` compute them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from evalq.report.compare import (
    ERROR_STATUS,
    BootstrapMethod,
    Estimate,
    difficulty_sort_key,
    mean_estimate,
)
from evalq.report.episodes import RunEpisodes, StrategyEpisodes


@dataclass(frozen=True)
class StatsOptions:
    """How intervals are computed; the same names and defaults as ``evalq compare``."""

    confidence: float = 0.95
    n_resamples: int = 10_000
    method: BootstrapMethod = "BCa"
    seed: int = 0

    def estimate(self, values: NDArray[np.float64]) -> Estimate:
        """Mean of ``values`` with its bootstrap interval."""
        return mean_estimate(
            values,
            confidence=self.confidence,
            n_resamples=self.n_resamples,
            method=self.method,
            seed=self.seed,
        )


@dataclass(frozen=True)
class DifficultyAccuracy:
    """Accuracy of one strategy on the ok episodes of one difficulty."""

    difficulty: str
    n: int
    accuracy: Estimate


@dataclass(frozen=True)
class StrategySummary:
    """One strategy's results over its ok episodes; excluded ones are counted by status.

    ``accuracy_attempted`` is over every attempted episode (``attempted``: ok plus error),
    an error counting as a wrong answer; invalid episodes never ran and stay out.
    """

    strategy: str
    total: int
    ok: int
    excluded: dict[str, int]
    accuracy: Estimate
    attempted: int
    accuracy_attempted: Estimate
    cost: Estimate
    mean_steps: float | None
    mean_retrievals: float | None
    mean_tokens: float | None
    mean_latency_s: float | None
    by_difficulty: tuple[DifficultyAccuracy, ...]


def _mean(values: NDArray[np.float64]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarise_strategy(episodes: StrategyEpisodes, options: StatsOptions) -> StrategySummary:
    """Accuracy and mean cost with intervals, the other means, and accuracy per difficulty."""
    difficulty = np.array(episodes.difficulty, dtype=object)
    by_difficulty = tuple(
        DifficultyAccuracy(
            difficulty=name,
            n=int(np.sum(difficulty == name)),
            accuracy=options.estimate(episodes.correct[difficulty == name]),
        )
        for name in sorted(set(episodes.difficulty), key=difficulty_sort_key)
    )
    errors = episodes.statuses.get(ERROR_STATUS, 0)
    correct_attempted = np.concatenate([episodes.correct, np.zeros(errors)])
    return StrategySummary(
        strategy=episodes.strategy,
        total=episodes.total,
        ok=episodes.ok,
        excluded=episodes.excluded,
        accuracy=options.estimate(episodes.correct),
        attempted=len(correct_attempted),
        accuracy_attempted=options.estimate(correct_attempted),
        cost=options.estimate(episodes.cost),
        mean_steps=_mean(episodes.steps),
        mean_retrievals=_mean(episodes.retrievals),
        mean_tokens=_mean(episodes.tokens),
        mean_latency_s=_mean(episodes.latency_s),
        by_difficulty=by_difficulty,
    )


def summarise(run: RunEpisodes, options: StatsOptions) -> list[StrategySummary]:
    """A summary per strategy, in the run's order."""
    return [summarise_strategy(s, options) for s in run.strategies]
