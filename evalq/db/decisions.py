"""The data and the record of deciding a run early (``evalq submit --until-decided``).

A run that asks for it carries ``config["until_decided"]`` (the two strategies, alpha,
the smallest effect, the metric); once decided it carries ``config["decision"]`` too.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from evalq.db.base import utcnow
from evalq.db.models import Episode, Run, Shard


def paired_prefix(session: Session, run: Run, rule: dict[str, Any]) -> list[float]:
    """Per-question mean difference A - B over the run's longest finished prefix.

    Questions are taken in shard order, and within a shard in its order: the sample's
    random order, fixed at submit. The prefix ends at the first question whose A and B
    episodes (every repeat) are not all stored, so the sequence never depends on which
    shard happened to finish first. A question with no pair of ``ok`` episodes adds nothing.
    """
    a, b, metric = str(rule["a"]), str(rule["b"]), str(rule.get("metric", "accuracy"))
    order = [
        str(q)
        for ids in session.scalars(
            select(Shard.question_ids).where(Shard.run_id == run.id).order_by(Shard.index)
        )
        for q in ids
    ]
    scores: dict[str, dict[tuple[str, int], float | None]] = defaultdict(dict)
    rows = session.execute(
        select(
            Episode.question_id,
            Episode.strategy,
            Episode.repeat,
            Episode.status,
            Episode.correct,
            Episode.f1,
        ).where(Episode.run_id == run.id, Episode.strategy.in_((a, b)))
    )
    for qid, strategy, rep, status, correct, f1 in rows:
        value = (f1 if metric == "f1" else (1.0 if correct else 0.0)) if status == "ok" else None
        scores[qid][(strategy, rep)] = value
    diffs: list[float] = []
    for qid in order:
        stored = scores.get(qid, {})
        if len(stored) < 2 * run.repeats:
            break
        pairs = [
            float(va) - float(vb)
            for rep in range(run.repeats)
            if (va := stored.get((a, rep))) is not None and (vb := stored.get((b, rep))) is not None
        ]
        if pairs:
            diffs.append(sum(pairs) / len(pairs))
    return diffs


def record_decision(session: Session, run_id: int, decision: dict[str, Any]) -> bool:
    """Stop a run by decision: store why and at how many questions, then cancel it.

    The run's row is locked, so two workers deciding at once record one decision. A
    cancel is the run's ordinary stop: queued shards are skipped, running ones stop.

    Returns:
        True when this call recorded it; False when the run was already decided or stopped.
    """
    run = session.get(Run, run_id, with_for_update=True, populate_existing=True)
    if run is None or "decision" in run.config or run.status not in ("queued", "running"):
        return False
    run.config = {**run.config, "decision": {**decision, "at": utcnow().isoformat()}}
    run.status = "cancelled"
    return True
