"""Calibrating the MDP from a run: what its stored steps can and cannot tell about p_s and deltas.

What is observed per MDP episode: each retrieve step's success (a note was written), the
number of reason steps, and whether the final answer was correct. U itself is a modelling
device, never observed. So:

- ``p_s`` is estimated directly: the fraction of retrieve steps that succeeded, with a
  Clopper-Pearson interval. Where retrieves were judged (``steps.judgement``, the model's
  P(yes) that the passages bear on the question; success = judgement >= the run's
  ``judge_threshold``), the mean judgement is a second estimate, with a Student-t interval.
  The intervals treat retrieve steps as independent trials; they are not quite (later
  retrieves of an episode search with generated queries and skip seen passages), which is
  why the success rate is also shown per retrieve position.
- The deltas are read through the quality function. With ``quality = linear`` the model says
  ``P(correct) = sigma(U) = U / u_max``, so a step's gain in U is ``u_max`` times its lift in
  answer accuracy. The lifts are the slopes of a linear probability model
  ``correct ~ 1 + successful retrieves + reason steps`` fitted over the run's MDP episodes
  (and its closed-book ``fixed:k=0`` episodes, where present, as zero-step anchors), with
  standard errors clustered by question. They are associations under the policy that made
  the data, not causal effects: a question whose retrieves fail is often a harder one.
- ``judge_threshold`` is chosen where the dataset has gold passages: the P(yes) that best
  separates retrieve steps that found a gold passage from those that did not (Youden's J,
  TPR - FPR, over the distinct judgements). p_s is then the success rate at that threshold.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats

from evalq.errors import UserError
from evalq.rag.mdp_solver import PRESETS, MDPParams, MDPSolution, solve

MDP_STRATEGY = "mdp"
CLOSED_BOOK_STRATEGY = "fixed:k=0"
# What can become the calibrated p_s: the success fraction, or the mean judged P(yes).
P_S_SOURCES = ("rate", "judgement")
# A judged retrieve succeeds at or above the run's judge_threshold; this when it has none.
DEFAULT_JUDGE_THRESHOLD = 0.5


@dataclass(frozen=True)
class EpisodeTrace:
    """What calibration uses of one finished episode.

    Attributes:
        question_id: The question (standard errors are clustered on it).
        correct: Whether the final answer was correct.
        retrieves: Success of each retrieve step, in order.
        reasons: Number of reason steps.
        judgements: The judged P(yes) of each retrieve step that has one, in order.
        retrieve_judgements: The judged P(yes) of every retrieve step, None where it was
            not judged; empty when not loaded.
    """

    question_id: str
    correct: bool
    retrieves: tuple[bool, ...] = ()
    reasons: int = 0
    judgements: tuple[float, ...] = ()
    retrieve_judgements: tuple[float | None, ...] = ()

    @property
    def successful_retrieves(self) -> int:
        """Retrieve steps that succeeded (each moved U by delta_r)."""
        return sum(self.retrieves)

    def at_threshold(self, threshold: float) -> EpisodeTrace:
        """The trace with each retrieve's success re-read at ``threshold``.

        An unjudged retrieve fails at any threshold. Without ``retrieve_judgements`` for
        every retrieve the trace comes back unchanged.
        """
        if len(self.retrieve_judgements) != len(self.retrieves):
            return self
        return replace(
            self,
            retrieves=tuple(j is not None and j >= threshold for j in self.retrieve_judgements),
        )


@dataclass(frozen=True)
class LabelledStep:
    """A judged retrieve step of a question with gold passages.

    Attributes:
        judgement: Its judged P(yes).
        gold: Whether it retrieved at least one of the question's gold passages.
    """

    judgement: float
    gold: bool


@dataclass(frozen=True)
class ThresholdFit:
    """The judge threshold chosen from labelled steps, or why the run's was kept.

    Attributes:
        run_threshold: The run's ``judge_threshold``.
        threshold: The calibrated one (the run's when kept).
        labelled: Labelled steps used.
        gold_steps: Of those, the ones that retrieved a gold passage.
        youden_j: TPR - FPR at the threshold (None when kept).
        tpr: Share of gold steps judged at or above it.
        fpr: Share of the other steps judged at or above it.
        auc: P(a gold step's judgement > another's), ties counted half: Mann-Whitney
            U / (n1 n0).
        note: Why the run's threshold was kept, or None.
    """

    run_threshold: float
    threshold: float
    labelled: int = 0
    gold_steps: int = 0
    youden_j: float | None = None
    tpr: float | None = None
    fpr: float | None = None
    auc: float | None = None
    note: str | None = None

    @property
    def changed(self) -> bool:
        """Whether the calibrated threshold differs from the run's."""
        return self.threshold != self.run_threshold


@dataclass(frozen=True)
class RunTraces:
    """What calibration reads of one run (``evalq.db.queries.run_traces`` loads it).

    Attributes:
        run_id: The run.
        strategies: The run's strategy specs.
        config: The run's stored config (its ``mdp`` entry holds the parameters).
        mdp: The finished ``mdp`` episodes.
        closed_book: The finished ``fixed:k=0`` episodes (empty if the run has none).
        labelled: The MDP's judged retrieve steps of questions with gold passages.
        gold_note: Why no step is labelled (no gold passages in the dataset), or None.
    """

    run_id: int
    strategies: tuple[str, ...]
    config: Mapping[str, Any]
    mdp: list[EpisodeTrace] = field(default_factory=list)
    closed_book: list[EpisodeTrace] = field(default_factory=list)
    labelled: list[LabelledStep] = field(default_factory=list)
    gold_note: str | None = None


@dataclass(frozen=True)
class Proportion:
    """A success fraction with its exact (Clopper-Pearson) confidence interval."""

    successes: int
    trials: int
    low: float
    high: float

    @property
    def estimate(self) -> float:
        """``successes / trials``."""
        return self.successes / self.trials


@dataclass(frozen=True)
class Mean:
    """A mean with its Student-t confidence interval (None ends with fewer than two values)."""

    n: int
    estimate: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Coefficient:
    """One slope of the accuracy model, or why it could not be estimated.

    Attributes:
        name: What it is the coefficient of.
        estimate: The least-squares value (None when not estimable).
        std_error: Cluster-robust standard error.
        low: Lower end of the confidence interval.
        high: Upper end.
        reason: Why it is not estimable, or None.
    """

    name: str
    estimate: float | None = None
    std_error: float | None = None
    low: float | None = None
    high: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Calibration:
    """Estimates from one run and the MDP re-solved with them.

    Attributes:
        run_id: The run.
        confidence: Confidence level of every interval.
        mdp_episodes: Finished MDP episodes used.
        closed_book_episodes: Finished ``fixed:k=0`` episodes used as zero-step anchors.
        p_s: Success fraction of all retrieve steps, at the calibrated judge threshold.
        p_s_by_position: Success fraction of the 1st, 2nd, ... retrieve of an episode, likewise.
        p_s_run: Success fraction at the run's own threshold (what the run observed).
        judgement: Mean judged P(yes) of the judged retrieve steps (None if none was judged).
        judge_threshold: The run's ``judge_threshold``: a judged retrieve succeeds at or above it.
        threshold: The calibrated judge threshold and how it was chosen.
        p_s_from: Which estimate became the calibrated p_s: ``rate`` or ``judgement``.
        intercept: Accuracy with no successful retrieve and no reason step.
        retrieve_lift: Accuracy lift per successful retrieve.
        reason_lift: Accuracy lift per reason step.
        params: The run's MDP parameters.
        calibrated: The parameters with the usable estimates put in.
        notes: What was kept from the run's parameters, and why.
        before: The run's thresholds ``(theta_cont, theta_star)``.
        after: The re-solved solution.
    """

    run_id: int
    confidence: float
    mdp_episodes: int
    closed_book_episodes: int
    p_s: Proportion | None
    p_s_by_position: list[Proportion]
    p_s_run: Proportion | None
    judgement: Mean | None
    judge_threshold: float
    threshold: ThresholdFit
    p_s_from: str
    intercept: Coefficient
    retrieve_lift: Coefficient
    reason_lift: Coefficient
    params: MDPParams
    calibrated: MDPParams
    before: tuple[float, float]
    after: MDPSolution
    notes: list[str] = field(default_factory=list)


def proportion(successes: int, trials: int, confidence: float = 0.95) -> Proportion:
    """A fraction with its exact binomial interval (``scipy.stats.binomtest``).

    Raises:
        ValueError: If ``trials`` is 0.
    """
    if trials == 0:
        raise ValueError("no trials")
    interval = stats.binomtest(successes, trials).proportion_ci(confidence, method="exact")
    return Proportion(successes, trials, float(interval.low), float(interval.high))


def estimate_p_s(
    traces: Sequence[EpisodeTrace], confidence: float = 0.95
) -> tuple[Proportion | None, list[Proportion]]:
    """The success fraction of all retrieve steps, and of each retrieve position.

    Returns:
        The overall fraction (None without any retrieve step) and one fraction per
        position (1st retrieve of an episode, 2nd, ...).
    """
    by_position: defaultdict[int, list[bool]] = defaultdict(list)
    for trace in traces:
        for position, success in enumerate(trace.retrieves):
            by_position[position].append(success)
    outcomes = [s for position in sorted(by_position) for s in by_position[position]]
    if not outcomes:
        return None, []
    overall = proportion(sum(outcomes), len(outcomes), confidence)
    positions = [
        proportion(sum(by_position[p]), len(by_position[p]), confidence)
        for p in sorted(by_position)
    ]
    return overall, positions


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Mean | None:
    """The mean of ``values`` with a Student-t interval; None without values."""
    if not values:
        return None
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    if len(data) < 2:
        return Mean(1, mean, None, None)
    sem = float(stats.sem(data))
    if sem == 0.0:
        return Mean(len(data), mean, mean, mean)
    low, high = stats.t.interval(confidence, len(data) - 1, loc=mean, scale=sem)
    return Mean(len(data), mean, max(float(low), 0.0), min(float(high), 1.0))


def estimate_judgement(traces: Sequence[EpisodeTrace], confidence: float = 0.95) -> Mean | None:
    """The mean judged P(yes) over every judged retrieve step; None when none was judged.

    Like the success fraction, the interval treats retrieve steps as independent draws.
    """
    return mean_interval([j for trace in traces for j in trace.judgements], confidence)


def fit_judge_threshold(steps: Sequence[LabelledStep], run_threshold: float) -> ThresholdFit:
    """The threshold on P(yes) that best separates steps that found gold from the others.

    Every distinct judgement is a candidate ``t`` (a step succeeds at ``judgement >= t``);
    the one with the largest Youden's J = TPR - FPR wins, the lowest on a tie. The run's
    threshold is kept, with a note, without steps of both kinds or when no candidate has a
    positive J (the judgements do not rank gold steps higher).
    """
    gold = np.array([s.judgement for s in steps if s.gold], dtype=np.float64)
    other = np.array([s.judgement for s in steps if not s.gold], dtype=np.float64)
    kept = ThresholdFit(run_threshold, run_threshold, len(steps), len(gold))
    if not len(gold) or not len(other):
        missing = "no step retrieved a gold passage" if not len(gold) else "every step did"
        note = (
            f"judge_threshold kept at {run_threshold:g}: of {len(steps)} labelled steps, {missing}"
        )
        return replace(kept, note=note)
    candidates = np.unique(np.concatenate([gold, other]))
    tpr = (gold[None, :] >= candidates[:, None]).mean(axis=1)
    fpr = (other[None, :] >= candidates[:, None]).mean(axis=1)
    best = int(np.argmax(tpr - fpr))
    u = float(stats.mannwhitneyu(gold, other).statistic)
    fit = replace(
        kept,
        youden_j=float(tpr[best] - fpr[best]),
        tpr=float(tpr[best]),
        fpr=float(fpr[best]),
        auc=u / (len(gold) * len(other)),
    )
    if fit.youden_j is not None and fit.youden_j <= 0.0:
        note = (
            f"judge_threshold kept at {run_threshold:g}: no P(yes) threshold picks out gold steps"
        )
        return replace(fit, note=note)
    return replace(fit, threshold=float(candidates[best]))


def estimate_lifts(
    traces: Sequence[EpisodeTrace], confidence: float = 0.95
) -> tuple[Coefficient, Coefficient, Coefficient]:
    """Fit ``correct ~ 1 + successful retrieves + reason steps`` by least squares.

    Standard errors are cluster-robust by question (CR1), intervals from Student's t with
    (clusters - 1) degrees of freedom. A count that never varies, or that moves in lockstep
    with the other (as a threshold policy often makes them), cannot be estimated; it comes
    back with the reason. The intercept (accuracy at zero steps) is given only when every
    count left out of the fit was always zero.

    Returns:
        ``(intercept, retrieve_lift, reason_lift)``.
    """
    names = {"successful retrieves": "per successful retrieve", "reason steps": "per reason step"}
    if not traces:
        return (
            Coefficient("intercept", reason="no episodes"),
            Coefficient(names["successful retrieves"], reason="no episodes"),
            Coefficient(names["reason steps"], reason="no episodes"),
        )
    y = np.array([float(t.correct) for t in traces])
    counts = {
        "successful retrieves": np.array([float(t.successful_retrieves) for t in traces]),
        "reason steps": np.array([float(t.reasons) for t in traces]),
    }
    dropped: dict[str, str] = {}
    for count, values in counts.items():
        if np.ptp(values) == 0:
            dropped[count] = f"every episode had {values[0]:g} {count}: no variation to learn from"
    kept = [count for count in counts if count not in dropped]
    x = np.column_stack([np.ones(len(y)), *(counts[c] for c in kept)])
    if np.linalg.matrix_rank(x) < x.shape[1]:
        for count in kept:
            dropped[count] = (
                "successful retrieves and reason steps move in lockstep in this run (the "
                "policy sets one by the other): their lifts cannot be told apart"
            )
        kept = []
        x = x[:, :1]
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    covariance, groups = _cluster_covariance(x, y - x @ beta, [t.question_id for t in traces])
    df = groups - 1
    quantile = float(stats.t.ppf(0.5 + confidence / 2, df)) if df > 0 else math.nan
    fitted: dict[str, Coefficient] = {}
    for column, name in enumerate(["intercept", *(names[c] for c in kept)]):
        estimate = float(beta[column])
        if not math.isfinite(quantile):
            fitted[name] = Coefficient(name, estimate, reason="one question only: no interval")
            continue
        se = float(math.sqrt(max(covariance[column, column], 0.0)))
        fitted[name] = Coefficient(
            name, estimate, se, estimate - quantile * se, estimate + quantile * se
        )
    for count, why in dropped.items():
        fitted[names[count]] = Coefficient(names[count], reason=why)
    nonzero = [count for count in dropped if np.any(counts[count] != 0)]
    if nonzero:
        fitted["intercept"] = Coefficient(
            "intercept", reason=f"not separable from the {' and '.join(nonzero)} left out"
        )
    return (
        fitted["intercept"],
        fitted[names["successful retrieves"]],
        fitted[names["reason steps"]],
    )


def _cluster_covariance(
    x: np.ndarray[Any, np.dtype[np.float64]],
    residuals: np.ndarray[Any, np.dtype[np.float64]],
    clusters: Sequence[str],
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], int]:
    """The CR1 sandwich covariance of OLS coefficients, and the number of clusters."""
    n, p = x.shape
    bread = np.linalg.pinv(x.T @ x)
    index: dict[str, list[int]] = defaultdict(list)
    for row, cluster in enumerate(clusters):
        index[cluster].append(row)
    meat = np.zeros((p, p))
    for rows in index.values():
        score = x[rows].T @ residuals[rows]
        meat += np.outer(score, score)
    groups = len(index)
    scale = (groups / (groups - 1)) * ((n - 1) / (n - p)) if groups > 1 and n > p else 1.0
    return scale * bread @ meat @ bread, groups


def recalibrate(
    params: MDPParams,
    p_s: Proportion | None,
    retrieve_lift: Coefficient,
    reason_lift: Coefficient,
    judgement: Mean | None = None,
    p_s_from: str = "rate",
) -> tuple[MDPParams, list[str]]:
    """The parameters with every usable estimate put in, and notes on what was kept.

    ``p_s`` becomes the success rate, or with ``p_s_from="judgement"`` the mean judgement
    (the rate when no step was judged, with a note). A lift becomes a delta only for
    ``quality = linear`` (where ``delta = u_max * lift``), and only when it is positive and
    at least half a grid cell.
    """
    notes: list[str] = []
    overrides: dict[str, float] = {}
    if p_s_from == "judgement" and judgement is not None:
        overrides["p_s"] = judgement.estimate
    elif p_s is None:
        notes.append(f"p_s kept at {params.p_s:g}: the run made no retrieve step")
    else:
        if p_s_from == "judgement":
            notes.append("p_s from the success rate: no retrieve step of this run was judged")
        overrides["p_s"] = p_s.estimate
    half_cell = params.u_max / (params.grid_size - 1) / 2
    for key, lift in (("delta_r", retrieve_lift), ("delta_p", reason_lift)):
        current = getattr(params, key)
        if params.quality != "linear":
            notes.append(
                f"{key} kept at {current:g}: lifts in accuracy equal steps in U only for "
                f"quality=linear (this run: {params.quality})"
            )
        elif lift.estimate is None:
            notes.append(f"{key} kept at {current:g}: {lift.reason}")
        elif lift.estimate * params.u_max < half_cell:
            notes.append(
                f"{key} kept at {current:g}: the estimated lift {lift.estimate:+.3f} is not a "
                "positive step on the grid"
            )
        else:
            overrides[key] = min(lift.estimate * params.u_max, params.u_max)
    return params.with_overrides(**overrides), notes


def run_params(config: Mapping[str, Any]) -> tuple[MDPParams, tuple[float, float]]:
    """A run's MDP parameters and stored thresholds, from its config, as the worker built them."""
    stored = dict(config.get("mdp", {}))
    known = MDPParams.__dataclass_fields__
    preset = PRESETS.get(str(stored.get("preset", "base")), PRESETS["base"])
    params = preset.with_overrides(**{k: v for k, v in stored.items() if k in known})
    before = (
        float(stored.get("theta_cont", math.nan)),
        float(stored.get("theta_star", math.nan)),
    )
    return params, before


def base_preset(config: Mapping[str, Any]) -> str:
    """The built-in preset a run's parameters (its config) were built on (``base`` if none)."""
    name = str(config.get("mdp", {}).get("preset", "base"))
    return name if name in PRESETS else "base"


def calibrate_run(run: RunTraces, confidence: float = 0.95, p_s_from: str = "rate") -> Calibration:
    """Estimate the judge threshold, p_s and the per-step lifts from a run; re-solve the MDP.

    The threshold is fitted to ``run.labelled`` (kept without it); p_s is the success rate
    at the fitted threshold. The lifts are read from the run as it ran.

    Args:
        run: The run to calibrate from: its config and episode traces.
        confidence: Level of every interval.
        p_s_from: ``rate`` (the success fraction of retrieve steps) or ``judgement`` (the
            mean judged P(yes)) becomes the calibrated p_s.

    Raises:
        UserError: If the run has no MDP strategy or no finished MDP episode yet, the
            confidence level is not in (0, 1), or ``p_s_from`` is neither.
    """
    if not 0.0 < confidence < 1.0:
        raise UserError(f"--confidence must be between 0 and 1, got {confidence}")
    if p_s_from not in P_S_SOURCES:
        raise UserError(f"--p-s-from must be one of {', '.join(P_S_SOURCES)}, got {p_s_from!r}")
    if MDP_STRATEGY not in run.strategies:
        raise UserError(
            f"run {run.run_id} has no mdp strategy ({', '.join(run.strategies)}); "
            "calibration needs MDP steps"
        )
    mdp_traces = run.mdp
    if not mdp_traces:
        raise UserError(f"run {run.run_id} has no finished mdp episode yet")
    anchors = run.closed_book
    run_threshold = float(run.config.get("mdp", {}).get("judge_threshold", DEFAULT_JUDGE_THRESHOLD))
    if run.labelled:
        threshold = fit_judge_threshold(run.labelled, run_threshold)
    else:
        why = run.gold_note or "no judged retrieve step of a question with gold passages"
        threshold = ThresholdFit(
            run_threshold, run_threshold, note=f"judge_threshold kept at {run_threshold:g}: {why}"
        )
    p_s_run, by_position = estimate_p_s(mdp_traces, confidence)
    p_s = p_s_run
    if threshold.changed:
        rethresholded = [trace.at_threshold(threshold.threshold) for trace in mdp_traces]
        p_s, by_position = estimate_p_s(rethresholded, confidence)
    judgement = estimate_judgement(mdp_traces, confidence)
    intercept, retrieve_lift, reason_lift = estimate_lifts([*mdp_traces, *anchors], confidence)
    params, before = run_params(run.config)
    calibrated, notes = recalibrate(params, p_s, retrieve_lift, reason_lift, judgement, p_s_from)
    if threshold.note is not None:
        notes.insert(0, threshold.note)
    return Calibration(
        run_id=run.run_id,
        confidence=confidence,
        mdp_episodes=len(mdp_traces),
        closed_book_episodes=len(anchors),
        p_s=p_s,
        p_s_by_position=by_position,
        p_s_run=p_s_run,
        judgement=judgement,
        judge_threshold=run_threshold,
        threshold=threshold,
        p_s_from=p_s_from,
        intercept=intercept,
        retrieve_lift=retrieve_lift,
        reason_lift=reason_lift,
        params=params,
        calibrated=calibrated,
        before=before,
        after=solve(calibrated),
        notes=notes,
    )
