"""Deciding early: the confidence sequence's error rate under the null, and early stops."""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.stats import binomtest

from evalq.report.sequential import decide, paired_intervals

ALPHA = 0.05
N = 400  # questions a run would have without stopping


def _run(rng: np.random.Generator, effect: float) -> tuple[np.ndarray, np.ndarray]:
    """One simulated run: per-question accuracies p_q, A correct with p_q + effect, B with p_q."""
    p = rng.uniform(0.2, 0.7, N)
    a = rng.random(N) < p + effect
    b = rng.random(N) < p
    return a, b


def _mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """McNemar's exact test at the fixed n: the discordant pairs against Binomial(., 1/2)."""
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def test_type_one_error_at_most_alpha() -> None:
    """200 runs with no difference: the rule declares one in at most alpha + 3 s.e."""
    rng = np.random.default_rng(17)
    reps = 200
    sequential = fixed = 0
    for _ in range(reps):
        a, b = _run(rng, 0.0)
        decision = decide(a.astype(float) - b, ALPHA, 0.0)
        sequential += decision.reason in ("a_better", "b_better")
        fixed += _mcnemar_p(a, b) < ALPHA
    bound = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)
    print(
        f"null, {reps} runs of {N} questions: sequential type-I error {sequential / reps:.3f}, "
        f"fixed-n McNemar {fixed / reps:.3f} (bound {bound:.3f})"
    )
    assert sequential / reps <= bound


def test_large_effect_stops_early() -> None:
    """A 30-point effect is decided for A long before N questions, in almost every run."""
    rng = np.random.default_rng(18)
    stops: list[int] = []
    for _ in range(50):
        a, b = _run(rng, 0.3)
        decision = decide(a.astype(float) - b, ALPHA, 0.02)
        assert decision.reason == "a_better", decision
        stops.append(decision.interval.questions)
        assert decision.interval.low > 0
    a, b = _run(rng, 0.3)
    print(
        f"effect +30 pp: stopped at median {int(np.median(stops))} questions "
        f"(max {max(stops)}) of {N}; fixed-n McNemar at {N}: p = {_mcnemar_p(a, b):.2g}"
    )
    assert np.median(stops) < N / 4


def test_no_effect_stops_when_interval_is_narrower_than_min_effect() -> None:
    """Identical answers: the interval shrinks around 0 and the run stops as 'no effect'."""
    diffs = np.zeros(2000)
    decision = decide(diffs, ALPHA, 0.2)
    assert decision.reason == "no_effect_of_min_size"
    assert decision.interval.low <= 0 <= decision.interval.high
    assert decision.interval.width < 0.2
    assert decision.interval.questions < 2000


def test_intervals_only_narrow() -> None:
    """The running intersection: a later interval lies inside every earlier one."""
    rng = np.random.default_rng(3)
    a, b = _run(rng, 0.1)
    intervals = paired_intervals(a.astype(float) - b, ALPHA)
    for before, after in itertools.pairwise(intervals):
        assert before.low <= after.low and after.high <= before.high
    assert intervals[0].low >= -1 and intervals[0].high <= 1


def test_undecided_on_no_data() -> None:
    """No questions yet: nothing decided, the whole range open."""
    decision = decide(np.zeros(0), ALPHA, 0.02)
    assert decision.reason is None
    assert (decision.latest.low, decision.latest.high) == (-1.0, 1.0)
