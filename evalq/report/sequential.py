"""Deciding early: an anytime-valid confidence sequence for a paired mean difference.

The confidence sequence is the hedged-capital betting CS of Waudby-Smith & Ramdas (2024),
"Estimating means of bounded random variables by betting", JRSS-B 86(1):1-27
(arXiv:2010.09686), Section 4: the hedged capital process K_t^{+-} with predictable
plug-in (PrPl) bets. The maintained implementation, ``confseq``, does not build here (a
C++ extension that needs Boost), so the formulas are written out below with numpy, each
line with the paper's formula it computes (equation numbers differ between the arXiv
versions and the journal, so the formulas themselves are quoted).

A paired difference d = A - B lies in [-1, 1]; it is mapped to x = (d + 1) / 2 in [0, 1],
the CS is built for the mean of x, and mapped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from evalq.db.decisions import paired_prefix
from evalq.db.models import Run

# Candidate means m: the CS is the set of grid points whose capital stays below 1/alpha.
GRID = 1000
# Truncation of the bets (the paper's c, in (0, 1)); 1/2 is its default.
BET_CAP = 0.5
# Hedging weight theta between the bets on "mean above m" and "mean below m".
THETA = 0.5


@dataclass(frozen=True)
class Interval:
    """The CS for the mean paired difference A - B after ``questions`` observations."""

    questions: int
    estimate: float | None
    low: float
    high: float

    @property
    def width(self) -> float:
        """The interval's width: high minus low."""
        return self.high - self.low


@dataclass(frozen=True)
class Decision:
    """Why a run may stop, and at how many questions; reason None: not yet.

    ``interval`` is the CS where the rule first fired (else the latest); ``latest`` is the
    CS after every question stored so far.
    """

    reason: str | None
    interval: Interval
    latest: Interval


def betting_cs(
    x: NDArray[np.float64], alpha: float, grid: int = GRID
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lower and upper bounds, after each observation, of the hedged-capital CS for E[x].

    Returned bounds are of the running intersection (a bound never loosens), which the
    CS's time-uniform guarantee allows: P(exists t: mean outside CS_t) <= alpha.

    Args:
        x: Observations in [0, 1], in the order they arrived (a random order).
        alpha: Error level; the CS covers the mean at every time with 1 - alpha.
        grid: Number of candidate means.
    """
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    n = len(x)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    t = np.arange(1, n + 1, dtype=np.float64)
    # Plug-in mean and variance, regularised: mu_hat_t = (1/2 + sum_{i<=t} x_i) / (t + 1),
    # sigma2_hat_t = (1/4 + sum_{i<=t} (x_i - mu_hat_i)^2) / (t + 1).
    mu_hat = (0.5 + np.cumsum(x)) / (t + 1)
    sigma2_hat = (0.25 + np.cumsum((x - mu_hat) ** 2)) / (t + 1)
    # Predictable: bet t uses sigma2_hat_{t-1} (sigma2_hat_0 = 1/4).
    sigma2_prev = np.concatenate(([0.25], sigma2_hat[:-1]))
    # lambda_t^PrPl = sqrt(2 log(2/alpha) / (sigma2_hat_{t-1} t log(1 + t))).
    lam = np.sqrt(2 * np.log(2 / alpha) / (sigma2_prev * t * np.log1p(t)))
    m = (np.arange(grid) + 0.5) / grid
    # K_t^+(m) = prod (1 + lambda_i^+(m) (x_i - m)), lambda^+ = min(lambda, c / m);
    # K_t^-(m) = prod (1 - lambda_i^-(m) (x_i - m)), lambda^- = min(lambda, c / (1 - m)).
    lam_up = np.minimum(lam[:, None], BET_CAP / m[None, :])
    lam_down = np.minimum(lam[:, None], BET_CAP / (1 - m)[None, :])
    dev = x[:, None] - m[None, :]
    log_up = np.cumsum(np.log1p(lam_up * dev), axis=0)
    log_down = np.cumsum(np.log1p(-lam_down * dev), axis=0)
    # K_t^{+-}(m) = max(theta K_t^+(m), (1 - theta) K_t^-(m)); m is in C_t iff K < 1/alpha.
    log_hedged = np.maximum(np.log(THETA) + log_up, np.log(1 - THETA) + log_down)
    # Running intersection: m leaves the CS for good once its capital reached 1/alpha.
    kept = np.maximum.accumulate(log_hedged, axis=0) < np.log(1 / alpha)
    step = 1.0 / grid
    any_kept = kept.any(axis=1)
    first = np.argmax(kept, axis=1)
    last = grid - 1 - np.argmax(kept[:, ::-1], axis=1)
    # Half a grid step beyond the outermost kept points: the CS is an interval in m.
    low = np.where(any_kept, m[first] - step / 2, mu_hat)
    high = np.where(any_kept, m[last] + step / 2, mu_hat)
    return np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)


def paired_intervals(diffs: NDArray[np.float64], alpha: float) -> list[Interval]:
    """The CS for the mean of paired differences in [-1, 1], after each question."""
    d = np.asarray(diffs, dtype=np.float64)
    low, high = betting_cs((d + 1) / 2, alpha)
    means = np.cumsum(d) / np.arange(1, len(d) + 1)
    return [
        Interval(i + 1, float(means[i]), float(2 * low[i] - 1), float(2 * high[i] - 1))
        for i in range(len(d))
    ]


def decide(diffs: NDArray[np.float64], alpha: float, min_effect: float) -> Decision:
    """The first question at which the CS excludes 0 or is narrower than ``min_effect``.

    Reasons: ``a_better`` (low > 0), ``b_better`` (high < 0), ``no_effect_of_min_size``
    (0 inside an interval narrower than ``min_effect``: any difference is smaller than it).
    Checking the whole prefix, rather than only the newest point, makes the rule the same
    however often it is looked at.
    """
    intervals = paired_intervals(diffs, alpha)
    last = intervals[-1] if intervals else Interval(0, None, -1.0, 1.0)
    for interval in intervals:
        reason = _reason(interval, min_effect)
        if reason is not None:
            return Decision(reason, interval, last)
    return Decision(None, last, last)


def _reason(interval: Interval, min_effect: float) -> str | None:
    if interval.low > 0:
        return "a_better"
    if interval.high < 0:
        return "b_better"
    if interval.width < min_effect:
        return "no_effect_of_min_size"
    return None


def live_decision(session: Session, run: Run) -> tuple[Decision, dict[str, Any] | None] | None:
    """For an ``--until-decided`` run: the CS over the stored prefix, and the recorded stop.

    None for other runs. The live decision is recomputed from the database, so it is what
    the workers see; the recorded one (None until the run stopped) says why and when.
    """
    rule = run.config.get("until_decided")
    if not rule:
        return None
    diffs = np.array(paired_prefix(session, run, rule), dtype=np.float64)
    return decide(diffs, float(rule["alpha"]), float(rule["min_effect"])), run.config.get(
        "decision"
    )


def describe(run: Run, live: Decision, recorded: dict[str, Any] | None) -> str:
    """One line for ``evalq status`` and ``evalq compare``."""
    rule = run.config["until_decided"]
    iv = live.latest
    level = 100 * (1 - float(rule["alpha"]))
    est = "-" if iv.estimate is None else f"{100 * iv.estimate:+.1f}"
    line = (
        f"until decided: {rule['a']} - {rule['b']} ({rule['metric']}) = {est} pp, "
        f"{level:g}% anytime-valid interval [{100 * iv.low:+.1f}, {100 * iv.high:+.1f}] pp "
        f"after {iv.questions} questions (min effect {100 * float(rule['min_effect']):g} pp)"
    )
    if recorded is not None:
        return line + f"; stopped: {recorded['reason']} at {recorded['questions']} questions"
    if live.reason is not None:
        return line + f"; decided: {live.reason} at {live.interval.questions} questions"
    return line + "; not decided yet"
