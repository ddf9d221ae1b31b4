"""Paired comparison of two strategies: accuracy, F1 and EM with bootstrap intervals, tests.

Both sides are joined on (question_id, repeat), so every statistic here is paired: the same
question answered once by A and once by B. Differences are always A minus B, so a positive
accuracy difference means A answered more questions correctly than B.

Accuracy is tested with McNemar's exact test. On open-answer datasets (episodes carry token
F1 and exact match) the mean F1 and EM differences are tested with a paired sign-flip
permutation test of the mean difference: it tests the very statistic whose interval is
reported, needs no assumption on the shape of the F1 differences (many are exactly 0 or
+-1), and is exact whenever 2**n is at most the number of resamples.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from rich.table import Table
from scipy import stats
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalq.db.models import Episode, Run
from evalq.errors import UserError

BootstrapMethod = Literal["BCa", "percentile"]

OK_STATUS = "ok"
# An attempted episode was run: ok, or failed on the way (error). Invalid ones never ran.
ERROR_STATUS = "error"
ATTEMPTED_STATUSES = (OK_STATUS, ERROR_STATUS)
UNKNOWN_DIFFICULTY = "unknown"
# Known difficulties first, in their natural order; any others follow alphabetically.
DIFFICULTY_ORDER = ("easy", "medium", "hard")
# Resamples evaluated at once: bounds bootstrap memory at about batch * n floats.
BOOTSTRAP_BATCH = 256

# The per-episode quantities whose mean A - B is reported next to accuracy.
DELTA_METRICS = ("cost", "steps", "retrievals", "tokens", "latency_s")
# Per-episode answer scores of open-answer datasets (NULL on multiple choice): (key, label).
SCORE_METRICS = (("f1", "F1"), ("exact_match", "EM"))


@dataclass(frozen=True)
class Side:
    """Which episodes one side of a comparison is: a run and a strategy within it."""

    run_id: int
    strategy: str

    @property
    def label(self) -> str:
        """Short human label, e.g. ``run 3 mdp``."""
        return f"run {self.run_id} {self.strategy}"


@dataclass(frozen=True)
class SideCounts:
    """What happened to one side's episodes on the way to the paired set.

    Attributes:
        total: Episodes of this side in the database.
        ok: Episodes with status ``ok``.
        excluded: Episodes left out for their own status, by status (``invalid``, ``error``).
        unpaired: ``ok`` episodes left out because the other side has no ``ok`` episode for
            the same (question_id, repeat).
        attempted: Episodes that ran: ``ok`` plus ``error`` (``invalid`` ones never ran).
        accuracy_attempted: Correct ``ok`` episodes over ``attempted``, so an error counts
            as a wrong answer (as the official scripts count a missing prediction); None
            without attempted episodes.
        f1_attempted: The F1 of ``ok`` episodes summed over ``attempted`` (an error scores
            0); None where episodes carry no F1 (multiple choice).
    """

    total: int
    ok: int
    excluded: dict[str, int]
    unpaired: int
    attempted: int = 0
    accuracy_attempted: float | None = None
    f1_attempted: float | None = None

    @property
    def excluded_total(self) -> int:
        """Episodes left out for their own status (not ``ok``)."""
        return sum(self.excluded.values())


@dataclass(frozen=True)
class PairedData:
    """Episodes of A and B joined on (question_id, repeat), both with status ``ok``.

    Every array has one entry per pair, in the same order as ``keys``. ``tokens`` is
    prompt plus completion tokens. ``open_answer`` is true when the episodes carry F1 and
    exact match (open-answer datasets); the ``f1`` and ``exact_match`` arrays are then the
    scores (a missing one counts 0), and all zero otherwise.
    """

    a: Side
    b: Side
    counts_a: SideCounts
    counts_b: SideCounts
    keys: tuple[tuple[str, int], ...]
    difficulty: tuple[str, ...]
    metrics_a: dict[str, NDArray[np.float64]]
    metrics_b: dict[str, NDArray[np.float64]]
    open_answer: bool = False

    @property
    def n(self) -> int:
        """Number of pairs."""
        return len(self.keys)

    def subset(self, mask: NDArray[np.bool_]) -> PairedData:
        """The pairs where ``mask`` is true (counts stay those of the whole comparison)."""
        indices = np.flatnonzero(mask)
        return PairedData(
            a=self.a,
            b=self.b,
            counts_a=self.counts_a,
            counts_b=self.counts_b,
            keys=tuple(self.keys[i] for i in indices),
            difficulty=tuple(self.difficulty[i] for i in indices),
            metrics_a={name: values[indices] for name, values in self.metrics_a.items()},
            metrics_b={name: values[indices] for name, values in self.metrics_b.items()},
            open_answer=self.open_answer,
        )


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval.

    ``value`` is None when there is no data; ``interval`` is None when it cannot be
    estimated (no data, a single pair), and ``note`` then says why.
    """

    value: float | None
    interval: tuple[float, float] | None
    note: str | None = None


@dataclass(frozen=True)
class MetricDelta:
    """Mean of one per-episode quantity on each side, and A - B."""

    name: str
    mean_a: float | None
    mean_b: float | None

    @property
    def delta(self) -> float | None:
        """Mean A minus mean B; None without data."""
        if self.mean_a is None or self.mean_b is None:
            return None
        return self.mean_a - self.mean_b


@dataclass(frozen=True)
class ScoreComparison:
    """One per-episode answer score (F1 or EM) on each side, and the paired A - B difference.

    Attributes:
        name: ``f1`` or ``exact_match``.
        mean_a: Mean score of A with its bootstrap interval.
        mean_b: Mean score of B with its bootstrap interval.
        diff: Mean of A minus mean of B, paired bootstrap interval.
        permutation_p: Two-sided p-value of the paired sign-flip permutation test of the
            mean difference (1.0 when every pair scores the same on both sides); None
            without pairs.
    """

    name: str
    mean_a: Estimate
    mean_b: Estimate
    diff: Estimate
    permutation_p: float | None


@dataclass(frozen=True)
class GroupComparison:
    """The comparison over one group of pairs: all of them, or one difficulty.

    Attributes:
        group: ``overall`` or a difficulty name.
        n: Number of pairs.
        accuracy_a: Accuracy of A with its bootstrap interval.
        accuracy_b: Accuracy of B with its bootstrap interval.
        accuracy_diff: Accuracy of A minus accuracy of B, paired bootstrap interval.
        both_correct: Pairs both sides answered correctly.
        only_a_correct: Discordant pairs where only A was correct.
        only_b_correct: Discordant pairs where only B was correct.
        neither_correct: Pairs neither side answered correctly.
        mcnemar_p: Two-sided exact McNemar p-value (1.0 without discordant pairs).
        deltas: Mean cost, steps, retrievals, tokens and latency on each side.
        scores: F1 then EM (open-answer datasets only; empty for multiple choice).
        notes: Why an interval or test is degenerate, where one is.
    """

    group: str
    n: int
    accuracy_a: Estimate
    accuracy_b: Estimate
    accuracy_diff: Estimate
    both_correct: int
    only_a_correct: int
    only_b_correct: int
    neither_correct: int
    mcnemar_p: float
    deltas: tuple[MetricDelta, ...]
    scores: tuple[ScoreComparison, ...] = ()
    notes: tuple[str, ...] = ()

    def score(self, name: str) -> ScoreComparison | None:
        """The named score (``f1``, ``exact_match``), None on multiple choice."""
        return next((s for s in self.scores if s.name == name), None)


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of A and B, overall and per difficulty (differences are A - B)."""

    a: Side
    b: Side
    counts_a: SideCounts
    counts_b: SideCounts
    confidence: float
    n_resamples: int
    method: BootstrapMethod
    seed: int
    overall: GroupComparison
    by_difficulty: tuple[GroupComparison, ...] = field(default_factory=tuple)

    @property
    def groups(self) -> tuple[GroupComparison, ...]:
        """Overall first, then each difficulty."""
        return (self.overall, *self.by_difficulty)


# --------------------------------------------------------------------------- loading


def run_strategies(session: Session, run_id: int) -> list[str]:
    """The strategies a run has episodes for, in the run's submission order where known.

    Raises:
        UserError: The run does not exist.
    """
    run = session.get(Run, run_id)
    if run is None:
        raise UserError(f"run {run_id} does not exist")
    present = set(
        session.scalars(select(Episode.strategy).where(Episode.run_id == run_id).distinct())
    )
    submitted = [s for s in (run.strategies or []) if isinstance(s, str) and s in present]
    return submitted + sorted(present - set(submitted))


def _side_rows(session: Session, side: Side) -> list[Any]:
    """The columns a comparison needs, for one side's episodes (no text columns)."""
    query = select(
        Episode.question_id,
        Episode.repeat,
        Episode.status,
        Episode.difficulty,
        Episode.correct,
        Episode.f1,
        Episode.exact_match,
        Episode.cost,
        Episode.steps,
        Episode.retrievals,
        Episode.prompt_tokens,
        Episode.completion_tokens,
        Episode.latency_s,
    ).where(Episode.run_id == side.run_id, Episode.strategy == side.strategy)
    return list(session.execute(query))


def _check_side(session: Session, side: Side) -> None:
    """Raise a UserError naming what exists when a side's run or strategy does not."""
    strategies = run_strategies(session, side.run_id)
    if side.strategy not in strategies:
        known = ", ".join(strategies) or "none"
        raise UserError(
            f"run {side.run_id} has no episodes for strategy {side.strategy!r} (it has: {known})"
        )


def _metric_values(row: Any) -> dict[str, float]:
    """One episode's per-episode quantities; ``correct`` None on an ok row counts as wrong."""
    return {
        "correct": 1.0 if row.correct else 0.0,
        "f1": float(row.f1 or 0.0),
        "exact_match": float(row.exact_match or 0.0),
        "cost": float(row.cost or 0.0),
        "steps": float(row.steps or 0),
        "retrievals": float(row.retrievals or 0),
        "tokens": float((row.prompt_tokens or 0) + (row.completion_tokens or 0)),
        "latency_s": float(row.latency_s or 0.0),
    }


def load_paired(
    session: Session, run_a: int, strategy_a: str, run_b: int, strategy_b: str
) -> PairedData:
    """Join A's and B's episodes on (question_id, repeat), keeping pairs both answered ``ok``.

    With ``run_a == run_b`` this compares two strategies of one run; with two runs it
    compares, e.g., two models on the questions they share.

    Raises:
        UserError: A run does not exist, has no episodes for the strategy, or A and B are
            the same episodes.
    """
    a, b = Side(run_a, strategy_a), Side(run_b, strategy_b)
    if a == b:
        raise UserError(f"A and B are the same episodes ({a.label}); name two strategies or runs")
    _check_side(session, a)
    _check_side(session, b)
    rows_a, rows_b = _side_rows(session, a), _side_rows(session, b)
    ok_a = {(r.question_id, r.repeat): r for r in rows_a if r.status == OK_STATUS}
    ok_b = {(r.question_id, r.repeat): r for r in rows_b if r.status == OK_STATUS}
    keys = sorted(ok_a.keys() & ok_b.keys())

    def counts(rows: list[Any], ok: dict[tuple[str, int], Any]) -> SideCounts:
        excluded = Counter(str(r.status) for r in rows if r.status != OK_STATUS)
        attempted = sum(1 for r in rows if r.status in ATTEMPTED_STATUSES)
        correct = sum(1 for r in ok.values() if r.correct)
        f1 = [float(r.f1) for r in ok.values() if r.f1 is not None]
        return SideCounts(
            total=len(rows),
            ok=len(ok),
            excluded=dict(sorted(excluded.items())),
            unpaired=len(ok) - len(keys),
            attempted=attempted,
            accuracy_attempted=correct / attempted if attempted else None,
            f1_attempted=sum(f1) / attempted if f1 and attempted else None,
        )

    def arrays(ok: dict[tuple[str, int], Any]) -> dict[str, NDArray[np.float64]]:
        values = [_metric_values(ok[key]) for key in keys]
        names = ("correct", *(name for name, _ in SCORE_METRICS), *DELTA_METRICS)
        return {name: np.array([v[name] for v in values], dtype=np.float64) for name in names}

    difficulty = tuple(
        str(ok_a[key].difficulty or ok_b[key].difficulty or UNKNOWN_DIFFICULTY) for key in keys
    )
    return PairedData(
        a=a,
        b=b,
        counts_a=counts(rows_a, ok_a),
        counts_b=counts(rows_b, ok_b),
        keys=tuple(keys),
        difficulty=difficulty,
        metrics_a=arrays(ok_a),
        metrics_b=arrays(ok_b),
        open_answer=any(side[key].f1 is not None for side in (ok_a, ok_b) for key in keys),
    )


# --------------------------------------------------------------------------- statistics


def _mean(values: NDArray[np.float64], axis: int = -1) -> NDArray[np.float64]:
    """Mean along ``axis``: the bootstrap statistic for one accuracy."""
    return np.asarray(np.mean(values, axis=axis), dtype=np.float64)


def _mean_difference(
    values_a: NDArray[np.float64], values_b: NDArray[np.float64], axis: int = -1
) -> NDArray[np.float64]:
    """Mean of A minus mean of B along ``axis``: the paired bootstrap statistic."""
    return np.asarray(np.mean(values_a, axis=axis) - np.mean(values_b, axis=axis))


def _bootstrap_interval(
    data: tuple[NDArray[np.float64], ...],
    statistic: Callable[..., NDArray[np.float64]],
    *,
    paired: bool,
    confidence: float,
    n_resamples: int,
    method: BootstrapMethod,
    seed: int,
) -> tuple[tuple[float, float], str | None]:
    """SciPy's bootstrap interval; falls back to percentile where BCa is undefined."""

    def run(chosen: BootstrapMethod) -> tuple[float, float]:
        with warnings.catch_warnings():
            # Degenerate BCa is detected from the NaN it returns, and handled below.
            warnings.simplefilter("ignore", category=RuntimeWarning)
            warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
            result = stats.bootstrap(
                data,
                statistic,
                n_resamples=n_resamples,
                batch=BOOTSTRAP_BATCH,
                vectorized=True,
                paired=paired,
                confidence_level=confidence,
                method=chosen,
                rng=np.random.default_rng(seed),
            )
        interval = result.confidence_interval
        return float(interval.low), float(interval.high)

    low, high = run(method)
    if method == "BCa" and (math.isnan(low) or math.isnan(high)):
        return run("percentile"), "BCa undefined for this data; percentile interval used"
    return (low, high), None


def _estimate(
    data: tuple[NDArray[np.float64], ...],
    statistic: Callable[..., NDArray[np.float64]],
    *,
    per_pair: NDArray[np.float64],
    paired: bool,
    confidence: float,
    n_resamples: int,
    method: BootstrapMethod,
    seed: int,
) -> Estimate:
    """Point estimate and interval, with the degenerate cases made explicit.

    ``per_pair`` is the per-pair quantity whose mean is the statistic: when it is constant
    every resample gives the same value, so the interval is that value.
    """
    n = len(per_pair)
    if n == 0:
        return Estimate(None, None, "no paired episodes")
    value = float(statistic(*data))
    if n == 1:
        return Estimate(value, None, "one pair: no interval")
    if np.ptp(per_pair) == 0:
        return Estimate(value, (value, value), "every pair has the same value: zero-width interval")
    interval, note = _bootstrap_interval(
        data,
        statistic,
        paired=paired,
        confidence=confidence,
        n_resamples=n_resamples,
        method=method,
        seed=seed,
    )
    return Estimate(value, interval, note)


def mean_estimate(
    values: NDArray[np.float64],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    method: BootstrapMethod = "BCa",
    seed: int = 0,
) -> Estimate:
    """Mean of one sample with its bootstrap interval: accuracy when the values are 0/1.

    The same interval machinery as the paired comparison, on one unpaired sample.
    """
    sample = np.asarray(values, dtype=np.float64)
    return _estimate(
        (sample,),
        _mean,
        per_pair=sample,
        paired=False,
        confidence=confidence,
        n_resamples=n_resamples,
        method=method,
        seed=seed,
    )


def mcnemar_exact_p(only_a_correct: int, only_b_correct: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts (1.0 if there are none)."""
    discordant = only_a_correct + only_b_correct
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(only_a_correct, discordant, 0.5).pvalue)


def paired_permutation_p(
    values_a: NDArray[np.float64],
    values_b: NDArray[np.float64],
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> float | None:
    """Two-sided p-value of the paired sign-flip permutation test of mean(A) - mean(B).

    Under the null hypothesis A and B are exchangeable within each pair, so each pair's
    difference is as likely to have either sign. SciPy's ``permutation_test`` with
    ``permutation_type='samples'`` swaps A and B within pairs: exactly, over all 2**n
    swaps, when that is at most ``n_resamples``; otherwise on ``n_resamples`` random ones
    (the p-value is then never below 1 / (n_resamples + 1)). None without pairs; 1.0 when
    every pair scores the same on both sides (no swap changes anything).
    """
    a = np.asarray(values_a, dtype=np.float64)
    b = np.asarray(values_b, dtype=np.float64)
    if len(a) == 0:
        return None
    if not np.any(a != b):
        return 1.0
    result = stats.permutation_test(
        (a, b),
        _mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        batch=BOOTSTRAP_BATCH,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return min(1.0, float(result.pvalue))


def _compare_score(
    name: str, paired: PairedData, options: dict[str, Any]
) -> tuple[ScoreComparison, list[str]]:
    """One answer score of one group: means, paired difference, permutation test, notes."""
    values_a, values_b = paired.metrics_a[name], paired.metrics_b[name]
    mean_a = _estimate((values_a,), _mean, per_pair=values_a, paired=False, **options)
    mean_b = _estimate((values_b,), _mean, per_pair=values_b, paired=False, **options)
    diff = _estimate(
        (values_a, values_b),
        _mean_difference,
        per_pair=values_a - values_b,
        paired=True,
        **options,
    )
    p = paired_permutation_p(
        values_a, values_b, n_resamples=options["n_resamples"], seed=options["seed"]
    )
    label = dict(SCORE_METRICS)[name]
    notes = [
        f"{label} {side}: {estimate.note}"
        for side, estimate in (("A", mean_a), ("B", mean_b), ("A - B", diff))
        if estimate.note
    ]
    if paired.n and not np.any(values_a != values_b):
        notes.append(f"{label} permutation test: every pair scores the same, p = 1")
    return ScoreComparison(name, mean_a, mean_b, diff, p), notes


def _compare_group(
    group: str,
    paired: PairedData,
    *,
    confidence: float,
    n_resamples: int,
    method: BootstrapMethod,
    seed: int,
) -> GroupComparison:
    """Every statistic of one group of pairs."""
    correct_a = paired.metrics_a["correct"]
    correct_b = paired.metrics_b["correct"]
    options: dict[str, Any] = {
        "confidence": confidence,
        "n_resamples": n_resamples,
        "method": method,
        "seed": seed,
    }
    accuracy_a = _estimate((correct_a,), _mean, per_pair=correct_a, paired=False, **options)
    accuracy_b = _estimate((correct_b,), _mean, per_pair=correct_b, paired=False, **options)
    accuracy_diff = _estimate(
        (correct_a, correct_b),
        _mean_difference,
        per_pair=correct_a - correct_b,
        paired=True,
        **options,
    )
    hit_a, hit_b = correct_a.astype(bool), correct_b.astype(bool)
    only_a = int(np.sum(hit_a & ~hit_b))
    only_b = int(np.sum(~hit_a & hit_b))
    notes = [
        f"{name}: {estimate.note}"
        for name, estimate in (
            ("accuracy A", accuracy_a),
            ("accuracy B", accuracy_b),
            ("A - B", accuracy_diff),
        )
        if estimate.note
    ]
    if paired.n and only_a + only_b == 0:
        notes.append("McNemar: no discordant pairs, p = 1")

    def mean_of(values: NDArray[np.float64]) -> float | None:
        return float(np.mean(values)) if len(values) else None

    deltas = tuple(
        MetricDelta(name, mean_of(paired.metrics_a[name]), mean_of(paired.metrics_b[name]))
        for name in DELTA_METRICS
    )
    scores: list[ScoreComparison] = []
    if paired.open_answer:
        for name, _ in SCORE_METRICS:
            score, score_notes = _compare_score(name, paired, options)
            scores.append(score)
            notes += score_notes
    return GroupComparison(
        group=group,
        n=paired.n,
        accuracy_a=accuracy_a,
        accuracy_b=accuracy_b,
        accuracy_diff=accuracy_diff,
        both_correct=int(np.sum(hit_a & hit_b)),
        only_a_correct=only_a,
        only_b_correct=only_b,
        neither_correct=int(np.sum(~hit_a & ~hit_b)),
        mcnemar_p=mcnemar_exact_p(only_a, only_b),
        deltas=deltas,
        scores=tuple(scores),
        notes=tuple(notes),
    )


def difficulty_sort_key(name: str) -> tuple[int, str]:
    """Known difficulties in their natural order, then others alphabetically, unknown last."""
    if name in DIFFICULTY_ORDER:
        return (DIFFICULTY_ORDER.index(name), name)
    return (len(DIFFICULTY_ORDER) + (name == UNKNOWN_DIFFICULTY), name)


def compare(
    paired: PairedData,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    method: BootstrapMethod = "BCa",
) -> Comparison:
    """Compare A and B over all pairs and per difficulty.

    Args:
        paired: The joined episodes, from :func:`load_paired`.
        confidence: Confidence level of every interval.
        n_resamples: Bootstrap resamples per interval.
        seed: Seed of the bootstrap's generator; the same seed gives the same intervals.
        method: SciPy bootstrap method; BCa falls back to percentile where it is undefined.

    Returns:
        Accuracies with bootstrap intervals, the paired A - B accuracy difference with its
        interval, McNemar's exact test and mean cost deltas, overall and per difficulty; on
        open-answer datasets also mean F1 and EM per side and their paired differences, with
        intervals and a paired permutation test (the same resamples and seed).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    options: dict[str, Any] = {
        "confidence": confidence,
        "n_resamples": n_resamples,
        "method": method,
        "seed": seed,
    }
    difficulty = np.array(paired.difficulty, dtype=object)
    by_difficulty = tuple(
        _compare_group(name, paired.subset(difficulty == name), **options)
        for name in sorted(set(paired.difficulty), key=difficulty_sort_key)
    )
    return Comparison(
        a=paired.a,
        b=paired.b,
        counts_a=paired.counts_a,
        counts_b=paired.counts_b,
        confidence=confidence,
        n_resamples=n_resamples,
        method=method,
        seed=seed,
        overall=_compare_group("overall", paired, **options),
        by_difficulty=by_difficulty,
    )


# --------------------------------------------------------------------------- rendering


def _estimate_json(estimate: Estimate) -> dict[str, Any]:
    """An estimate as JSON: value, low, high, note."""
    low, high = estimate.interval if estimate.interval else (None, None)
    return {"value": estimate.value, "low": low, "high": high, "note": estimate.note}


def _score_json(score: ScoreComparison | None) -> dict[str, Any] | None:
    """One answer score as JSON; None (null) on multiple-choice runs."""
    if score is None:
        return None
    return {
        "a": _estimate_json(score.mean_a),
        "b": _estimate_json(score.mean_b),
        "diff_a_minus_b": _estimate_json(score.diff),
        "permutation_p": score.permutation_p,
    }


def _group_json(group: GroupComparison) -> dict[str, Any]:
    """One group as JSON."""
    return {
        "group": group.group,
        "n": group.n,
        "accuracy_a": _estimate_json(group.accuracy_a),
        "accuracy_b": _estimate_json(group.accuracy_b),
        "accuracy_diff_a_minus_b": _estimate_json(group.accuracy_diff),
        "pairs": {
            "both_correct": group.both_correct,
            "only_a_correct": group.only_a_correct,
            "only_b_correct": group.only_b_correct,
            "neither_correct": group.neither_correct,
        },
        "mcnemar_exact_p": group.mcnemar_p,
        **{name: _score_json(group.score(name)) for name, _ in SCORE_METRICS},
        "means": {
            d.name: {"a": d.mean_a, "b": d.mean_b, "a_minus_b": d.delta} for d in group.deltas
        },
        "notes": list(group.notes),
    }


def _side_json(side: Side, counts: SideCounts) -> dict[str, Any]:
    """One side and its exclusion counts as JSON."""
    return {
        "run_id": side.run_id,
        "strategy": side.strategy,
        "episodes": counts.total,
        "ok": counts.ok,
        "excluded": dict(counts.excluded),
        "unpaired": counts.unpaired,
        "attempted": counts.attempted,
        "accuracy_attempted": counts.accuracy_attempted,
        "f1_attempted": counts.f1_attempted,
    }


def to_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as a JSON-ready dict; every difference is A minus B."""
    return {
        "a": _side_json(comparison.a, comparison.counts_a),
        "b": _side_json(comparison.b, comparison.counts_b),
        "difference": "a_minus_b",
        "confidence": comparison.confidence,
        "bootstrap": {
            "method": comparison.method,
            "n_resamples": comparison.n_resamples,
            "seed": comparison.seed,
        },
        "overall": _group_json(comparison.overall),
        "by_difficulty": [_group_json(g) for g in comparison.by_difficulty],
    }


def _format_percent(estimate: Estimate, *, signed: bool = False) -> str:
    """``78.0% [74.1, 81.9]`` for an accuracy, ``+5.2 pp [+1.0, +9.3]`` for a difference."""
    if estimate.value is None:
        return "-"
    sign = "+" if signed else ""
    unit = " pp" if signed else "%"
    text = f"{estimate.value * 100:{sign}.1f}{unit}"
    if estimate.interval is not None:
        low, high = estimate.interval
        text += f" [{low * 100:{sign}.1f}, {high * 100:{sign}.1f}]"
    return text


def _format_number(value: float, *, signed: bool = False) -> str:
    """Three significant digits, but whole numbers from 100 up (tokens read as 1,050)."""
    sign = "+" if signed else ""
    if abs(value) >= 100:
        return f"{value:{sign},.0f}"
    return f"{value:{sign}.3g}"


def _format_delta(delta: MetricDelta) -> str:
    """``0.8 vs 0.7 (+0.1)``: mean A, mean B, and A - B."""
    if delta.mean_a is None or delta.mean_b is None or delta.delta is None:
        return "-"
    return (
        f"{_format_number(delta.mean_a)} vs {_format_number(delta.mean_b)} "
        f"({_format_number(delta.delta, signed=True)})"
    )


def _format_p(p: float) -> str:
    """A p-value with enough digits to read small ones."""
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


_DELTA_LABELS = {
    "cost": "cost",
    "steps": "steps",
    "retrievals": "retrievals",
    "tokens": "tokens",
    "latency_s": "latency (s)",
}


def _rows(comparison: Comparison) -> list[tuple[str, list[str]]]:
    """The table as (metric, one cell per group): metrics down, groups across."""
    groups = comparison.groups
    rows: list[tuple[str, list[str]]] = [
        ("pairs", [str(g.n) for g in groups]),
        ("accuracy A", [_format_percent(g.accuracy_a) for g in groups]),
        ("accuracy B", [_format_percent(g.accuracy_b) for g in groups]),
        ("A - B", [_format_percent(g.accuracy_diff, signed=True) for g in groups]),
        ("only A / only B correct", [f"{g.only_a_correct} / {g.only_b_correct}" for g in groups]),
        ("McNemar exact p", [_format_p(g.mcnemar_p) if g.n else "-" for g in groups]),
    ]
    if comparison.overall.scores:
        for name, label in SCORE_METRICS:
            scores = [g.score(name) for g in groups]
            rows += [
                (f"{label} A", [_format_percent(s.mean_a) if s else "-" for s in scores]),
                (f"{label} B", [_format_percent(s.mean_b) if s else "-" for s in scores]),
                (
                    f"{label} A - B",
                    [_format_percent(s.diff, signed=True) if s else "-" for s in scores],
                ),
                (
                    f"{label} permutation p",
                    [
                        _format_p(s.permutation_p) if s and s.permutation_p is not None else "-"
                        for s in scores
                    ],
                ),
            ]
    for index, name in enumerate(DELTA_METRICS):
        rows.append((_DELTA_LABELS[name], [_format_delta(g.deltas[index]) for g in groups]))
    return rows


def _legend(comparison: Comparison) -> str:
    """How to read the cells: interval level and method, and the direction of differences."""
    return (
        f"[..] = {comparison.confidence * 100:g}% bootstrap CI ({comparison.method}, "
        f"{comparison.n_resamples} resamples, seed {comparison.seed}); "
        "cost rows are mean A vs mean B (A - B)."
    ) + (
        " F1/EM p: paired sign-flip permutation test of the mean difference."
        if comparison.overall.scores
        else ""
    )


def _exclusion_line(side: str, counts: SideCounts) -> str:
    """One side's exclusions, then its accuracy (and F1) over every attempted episode.

    ``A: 100 episodes, 97 ok, excluded invalid 2, error 1; 0 ok without an ok partner;
    over 98 attempted (ok + error, errors scored 0): accuracy 70.4%, F1 61.2%``.
    """
    excluded = ", ".join(f"{status} {count}" for status, count in counts.excluded.items())
    line = (
        f"{side}: {counts.total} episodes, {counts.ok} ok, excluded {excluded or 'none'}; "
        f"{counts.unpaired} ok without an ok partner"
    )
    if counts.accuracy_attempted is not None:
        line += (
            f"; over {counts.attempted} attempted (ok + error, errors scored 0): "
            f"accuracy {counts.accuracy_attempted * 100:.1f}%"
        )
        if counts.f1_attempted is not None:
            line += f", F1 {counts.f1_attempted * 100:.1f}%"
    return line


def _notes(comparison: Comparison) -> list[str]:
    """Exclusions, then any degenerate-statistic notes, one line each."""
    lines = [
        _exclusion_line("A", comparison.counts_a),
        _exclusion_line("B", comparison.counts_b),
    ]
    lines += [f"{g.group}: {note}" for g in comparison.groups for note in g.notes]
    return lines


def _title(comparison: Comparison) -> str:
    """``A = run 3 mdp, B = run 3 fixed:k=3 (differences are A - B)``."""
    return f"A = {comparison.a.label}, B = {comparison.b.label} (differences are A - B)"


def to_markdown(comparison: Comparison) -> str:
    """The comparison as a Markdown table (metrics down, overall and difficulties across)."""
    headers = ["metric", *(g.group for g in comparison.groups)]
    lines = [
        f"## {_title(comparison)}",
        "",
        _legend(comparison),
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    lines += ["| " + " | ".join([name, *cells]) + " |" for name, cells in _rows(comparison)]
    lines.append("")
    lines += [f"- {note}" for note in _notes(comparison)]
    return "\n".join(lines) + "\n"


def to_rows(comparison: Comparison) -> tuple[list[str], list[list[str]], list[str]]:
    """The comparison as plain cells, for any tabular rendering (HTML, spreadsheets).

    Returns:
        The header (``metric`` then one column per group), the rows (metric name then one
        cell per group), and the caption lines: the legend, exclusions, then notes.
    """
    headers = ["metric", *(g.group for g in comparison.groups)]
    rows = [[name, *cells] for name, cells in _rows(comparison)]
    return headers, rows, [_legend(comparison), *_notes(comparison)]


def title(comparison: Comparison) -> str:
    """``A = run 3 mdp, B = run 3 fixed:k=3 (differences are A - B)``."""
    return _title(comparison)


def to_rich_table(comparison: Comparison) -> Table:
    """The comparison as a rich Table, exclusions and notes in its caption."""
    table = Table(
        title=_title(comparison),
        caption="\n".join([_legend(comparison), *_notes(comparison)]),
        caption_justify="left",
    )
    table.add_column("metric", style="bold")
    for group in comparison.groups:
        table.add_column(group.group, justify="right")
    for name, cells in _rows(comparison):
        table.add_row(name, *cells)
    return table


__all__ = [
    "BootstrapMethod",
    "Comparison",
    "Estimate",
    "GroupComparison",
    "MetricDelta",
    "PairedData",
    "ScoreComparison",
    "Side",
    "SideCounts",
    "compare",
    "difficulty_sort_key",
    "load_paired",
    "mcnemar_exact_p",
    "mean_estimate",
    "paired_permutation_p",
    "run_strategies",
    "title",
    "to_json",
    "to_markdown",
    "to_rich_table",
    "to_rows",
]
