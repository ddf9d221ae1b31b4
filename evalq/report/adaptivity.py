"""Does the policy adapt? Retrievals per episode, retrieve success, and what success picks out.

Per strategy, over ``ok`` episodes:

- the distribution of retrievals per episode (a fixed-k strategy has one bar; an adaptive
  policy that retrieves more for some questions than for others has several);
- the retrieve-step success rate (Clopper-Pearson interval) and the mean judged P(yes);
- the gold-passage recall of retrieve steps judged successful against those judged not
  (step recall: the share of the question's gold passages among the step's passages), with
  a one-sided Mann-Whitney U test that successful steps have the higher recall. Recall of
  one step takes few values (0, 1/2, 1 for HotpotQA's two gold passages), so the test must
  not assume normality and must handle many ties: Mann-Whitney compares ranks and corrects
  for ties. It treats steps as independent, which steps of one episode are not quite;
- accuracy and F1 by number of retrievals.

Gold passages are not stored with episodes; they are read from the run's dataset.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from scipy import stats
from sqlalchemy.orm import Session

from evalq.data.registry import load_questions
from evalq.db import queries
from evalq.db.models import Run
from evalq.db.queries import RetrieveStepRow
from evalq.errors import UserError
from evalq.rag.calibrate import MDP_STRATEGY, LabelledStep, RunTraces
from evalq.rag.scoring import retrieval_recall

# Said with every p-value, so a reader knows what was tested.
RECALL_TEST = "Mann-Whitney U, one-sided: successful steps have higher recall"


@dataclass(frozen=True)
class RecallComparison:
    """Step recall of successful against unsuccessful retrieve steps, and the test.

    Attributes:
        successful: Steps judged successful that have a gold-passage recall.
        unsuccessful: Steps judged not successful that have one.
        successful_mean: Their mean recall (None without steps).
        unsuccessful_mean: Likewise.
        statistic: Mann-Whitney U of the successful steps (None when not tested).
        p_value: One-sided p-value (None when not tested).
        note: Why there is no test, or None.
    """

    successful: int = 0
    unsuccessful: int = 0
    successful_mean: float | None = None
    unsuccessful_mean: float | None = None
    statistic: float | None = None
    p_value: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class RetrievalGroup:
    """The episodes that made one number of retrievals, and how well they answered."""

    retrievals: int
    episodes: int
    accuracy: float
    f1: float | None


@dataclass(frozen=True)
class StrategyAdaptivity:
    """One strategy's adaptivity figures, over its ok episodes.

    Attributes:
        strategy: The strategy.
        episodes: Its ok episodes.
        histogram: Number of retrievals to the episodes that made that many (0 to the max).
        mean_retrievals: Mean retrievals per episode.
        retrieve_steps: Retrieve steps stored.
        judged_steps: Retrieve steps with a success (True or False) stored.
        successes: Of those, the successful ones.
        success_rate: ``successes / judged_steps`` (None without judged steps).
        success_low: Lower end of its Clopper-Pearson interval.
        success_high: Upper end.
        judgements: Retrieve steps with a judged P(yes).
        mean_judgement: Their mean (None without).
        recall: Step recall of successful against unsuccessful steps.
        by_retrievals: Accuracy and F1 per number of retrievals.
    """

    strategy: str
    episodes: int
    histogram: dict[int, int]
    mean_retrievals: float | None
    retrieve_steps: int
    judged_steps: int
    successes: int
    success_rate: float | None
    success_low: float | None
    success_high: float | None
    judgements: int
    mean_judgement: float | None
    recall: RecallComparison
    by_retrievals: list[RetrievalGroup] = field(default_factory=list)


@dataclass(frozen=True)
class Adaptivity:
    """A run's adaptivity report: one entry per strategy in the run's order."""

    run_id: int
    confidence: float
    gold_note: str | None
    strategies: list[StrategyAdaptivity]


def compare_recall(successful: Sequence[float], unsuccessful: Sequence[float]) -> RecallComparison:
    """Mean step recall of both groups and a one-sided Mann-Whitney U test (``greater``).

    No test when a group is empty, or when every step has the same recall (the ranks then
    say nothing; p is reported as 1).
    """

    def mean(values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    base = RecallComparison(
        len(successful), len(unsuccessful), mean(successful), mean(unsuccessful)
    )
    if not successful or not unsuccessful:
        return RecallComparison(
            **{**asdict(base), "note": "needs successful and unsuccessful steps with gold"}
        )
    if len({*successful, *unsuccessful}) == 1:
        return RecallComparison(
            **{**asdict(base), "p_value": 1.0, "note": "every step has the same recall"}
        )
    result = stats.mannwhitneyu(successful, unsuccessful, alternative="greater")
    return RecallComparison(
        **{**asdict(base), "statistic": float(result.statistic), "p_value": float(result.pvalue)}
    )


def strategy_adaptivity(
    strategy: str,
    rows: Sequence[RetrieveStepRow],
    gold: Mapping[str, Collection[str]],
    confidence: float = 0.95,
) -> StrategyAdaptivity:
    """The figures of one strategy from its rows (one per ok episode and retrieve step)."""
    episodes: dict[int, RetrieveStepRow] = {}
    recalls: dict[bool, list[float]] = {True: [], False: []}
    retrieve_steps = 0
    outcomes: list[bool] = []
    judgements: list[float] = []
    for row in rows:
        episodes.setdefault(row.episode_id, row)
        if row.step_index is None:
            continue
        retrieve_steps += 1
        if row.judgement is not None:
            judgements.append(row.judgement)
        if row.success is None:
            continue
        outcomes.append(bool(row.success))
        recall = retrieval_recall(row.passage_ids or [], gold.get(row.question_id, ()))
        if recall is not None:
            recalls[bool(row.success)].append(recall)
    counts = [e.retrievals for e in episodes.values()]
    histogram = {r: 0 for r in range(max(counts, default=-1) + 1)}
    groups: defaultdict[int, list[RetrieveStepRow]] = defaultdict(list)
    for episode in episodes.values():
        histogram[episode.retrievals] += 1
        groups[episode.retrievals].append(episode)
    low = high = rate = None
    if outcomes:
        rate = sum(outcomes) / len(outcomes)
        interval = stats.binomtest(sum(outcomes), len(outcomes)).proportion_ci(
            confidence, method="exact"
        )
        low, high = float(interval.low), float(interval.high)
    return StrategyAdaptivity(
        strategy=strategy,
        episodes=len(episodes),
        histogram=histogram,
        mean_retrievals=sum(counts) / len(counts) if counts else None,
        retrieve_steps=retrieve_steps,
        judged_steps=len(outcomes),
        successes=sum(outcomes),
        success_rate=rate,
        success_low=low,
        success_high=high,
        judgements=len(judgements),
        mean_judgement=sum(judgements) / len(judgements) if judgements else None,
        recall=compare_recall(recalls[True], recalls[False]),
        by_retrievals=[_group(r, groups[r]) for r in sorted(groups)],
    )


def _group(retrievals: int, episodes: Sequence[RetrieveStepRow]) -> RetrievalGroup:
    f1s = [e.f1 for e in episodes if e.f1 is not None]
    return RetrievalGroup(
        retrievals=retrievals,
        episodes=len(episodes),
        accuracy=sum(1 for e in episodes if e.correct) / len(episodes),
        f1=sum(f1s) / len(f1s) if f1s else None,
    )


def gold_passages(
    dataset: str, difficulty: str, corpus: str | None
) -> tuple[dict[str, tuple[str, ...]], str | None]:
    """Question id to gold passage ids, from the run's dataset, and a note when there are none."""
    try:
        questions = load_questions(dataset, difficulty, corpus)
    except UserError as error:
        return {}, f"gold passages unavailable: {error}"
    gold = {q.id: q.gold_passages for q in questions if q.gold_passages}
    return gold, None if gold else f"{dataset} has no gold passages: no step recall"


def labelled_steps(
    rows: Sequence[RetrieveStepRow], gold: Mapping[str, Collection[str]]
) -> list[LabelledStep]:
    """The MDP's judged retrieve steps of questions with gold, marked by whether they found one."""
    return [
        LabelledStep(row.judgement, recall > 0.0)
        for row in rows
        if row.strategy == MDP_STRATEGY and row.judgement is not None
        if (recall := retrieval_recall(row.passage_ids or [], gold.get(row.question_id, ())))
        is not None
    ]


def calibration_traces(session: Session, run: Run) -> RunTraces:
    """What ``evalq mdp calibrate`` reads of a run: its traces and its gold-labelled steps."""
    traces = queries.run_traces(session, run)
    if MDP_STRATEGY not in traces.strategies:
        return traces
    gold, note = gold_passages(run.dataset, run.difficulty, run.config.get("corpus"))
    labelled = labelled_steps(queries.retrieve_step_rows(session, run.id), gold)
    return replace(traces, labelled=labelled, gold_note=note)


def load_adaptivity(session: Session, run_id: int, confidence: float = 0.95) -> Adaptivity:
    """The adaptivity report of a run, every strategy in the run's order.

    Raises:
        UserError: If the run does not exist or the confidence is not in (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise UserError(f"--confidence must be between 0 and 1, got {confidence}")
    run = queries.get_run(session, run_id)
    rows: defaultdict[str, list[RetrieveStepRow]] = defaultdict(list)
    for row in queries.retrieve_step_rows(session, run_id):
        rows[row.strategy].append(row)
    gold, note = gold_passages(run.dataset, run.difficulty, run.config.get("corpus"))
    return Adaptivity(
        run_id=run.id,
        confidence=confidence,
        gold_note=note,
        strategies=[
            strategy_adaptivity(name, rows[name], gold, confidence)
            for name in run.strategies
            if rows[name]
        ],
    )


def _clean(value: float | None) -> float | None:
    """JSON has no NaN: a non-finite figure is null."""
    return None if value is None or not math.isfinite(value) else value


def to_json(report: Adaptivity) -> dict[str, Any]:
    """The report as one JSON-ready object (histogram keys are retrieval counts as strings)."""
    return {
        "run": report.run_id,
        "confidence": report.confidence,
        "gold_note": report.gold_note,
        "recall_test": RECALL_TEST,
        "strategies": [
            {
                "strategy": s.strategy,
                "episodes": s.episodes,
                "retrievals_histogram": {str(k): v for k, v in s.histogram.items()},
                "mean_retrievals": s.mean_retrievals,
                "retrieve_steps": s.retrieve_steps,
                "success_rate": {
                    "successes": s.successes,
                    "trials": s.judged_steps,
                    "estimate": s.success_rate,
                    "low": s.success_low,
                    "high": s.success_high,
                },
                "mean_judgement": {"n": s.judgements, "estimate": s.mean_judgement},
                "recall": {
                    key: _clean(value) if isinstance(value, float) else value
                    for key, value in asdict(s.recall).items()
                },
                "by_retrievals": [asdict(g) for g in s.by_retrievals],
            }
            for s in report.strategies
        ],
    }


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"


def summary_rows(report: Adaptivity) -> tuple[list[str], list[list[str]]]:
    """One row per strategy for a text or HTML table: headers and cells."""
    headers = [
        "strategy",
        "episodes",
        "retrievals: episodes",
        "retrieve success",
        "mean P(yes)",
        "recall | success",
        "recall | no success",
        "p (one-sided MWU)",
    ]
    rows = []
    for s in report.strategies:
        success = "-"
        if s.success_rate is not None:
            success = (
                f"{_fraction(s.success_rate)} [{_fraction(s.success_low)}, "
                f"{_fraction(s.success_high)}] ({s.successes}/{s.judged_steps})"
            )
        r = s.recall
        rows.append(
            [
                s.strategy,
                str(s.episodes),
                " ".join(f"{k}:{v}" for k, v in s.histogram.items()) or "-",
                success,
                "-" if s.mean_judgement is None else f"{s.mean_judgement:.3f}",
                "-" if r.successful_mean is None else f"{r.successful_mean:.3f} (n={r.successful})",
                "-"
                if r.unsuccessful_mean is None
                else f"{r.unsuccessful_mean:.3f} (n={r.unsuccessful})",
                _p(r.p_value) if r.note is None else f"{_p(r.p_value)} ({r.note})",
            ]
        )
    return headers, rows


def by_retrievals_rows(report: Adaptivity) -> tuple[list[str], list[list[str]]]:
    """Accuracy and F1 per strategy and number of retrievals: headers and cells."""
    headers = ["strategy", "retrievals", "episodes", "accuracy", "F1"]
    rows = [
        [
            s.strategy,
            str(g.retrievals),
            str(g.episodes),
            _fraction(g.accuracy),
            "-" if g.f1 is None else f"{g.f1:.3f}",
        ]
        for s in report.strategies
        for g in s.by_retrievals
    ]
    return headers, rows
