"""Running one shard: skip what is stored, run the rest concurrently, store as they finish."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
from kombu.utils.functional import retry_over_time
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from evalq.data.question import Question
from evalq.data.registry import load_questions
from evalq.db import decisions, queries
from evalq.db.models import Run
from evalq.db.session import Store
from evalq.models.base import Engine
from evalq.rag.episode import EpisodeResult
from evalq.rag.retrieval import CorpusRetrievers
from evalq.rag.runner import Driver, PendingEpisode, run_episodes
from evalq.rag.strategies import EpisodeContext, GenerationConfig, Strategy, parse_strategy
from evalq.rag.strategies.base import new_result
from evalq.report.sequential import decide

log = logging.getLogger(__name__)

# Stored episodes are flushed in groups: one transaction per episode would cap the rate.
FLUSH_EVERY = 64
FLUSH_SECONDS = 2.0
CANCEL_CHECK_SECONDS = 5.0
# A database that is restarting, unreachable or locked by another writer is waited for:
# every transaction is retried, 0.5 s apart at first, 1 s longer each time up to 10 s, for
# at most DB_RETRY_SECONDS. Retrying is safe: episodes are written once (upsert), a shard's
# claim and finish are idempotent. Past that, the shard fails (resumable) rather than hang.
DB_RETRY_SECONDS = 180.0
DB_RETRYABLE = (OperationalError, InterfaceError)

T = TypeVar("T")


@dataclass(frozen=True)
class ShardOutcome:
    """What one delivery of a shard did."""

    shard_id: int
    status: str  # done / skipped / cancelled
    stored: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class _RunView:
    id: int
    dataset: str
    difficulty: str
    strategies: list[str]
    repeats: int
    config: dict[str, Any]


class ShardExecutor:
    """Runs shards against one engine and one retriever cache for the life of a worker."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        *,
        worker: str,
        concurrency: int = 256,
        driver: Driver = run_episodes,
        max_deliveries: int = queries.DEFAULT_MAX_DELIVERIES,
        db_retry_seconds: float = DB_RETRY_SECONDS,
    ) -> None:
        """Hold the worker's long-lived parts: store, engine, retrievers, driver."""
        self.store = store
        self.engine = engine
        self.worker = worker
        self.concurrency = concurrency
        self.driver = driver
        self.max_deliveries = max_deliveries
        self.db_retry_seconds = db_retry_seconds
        self.retrievers = CorpusRetrievers()

    def run(self, shard_id: int) -> ShardOutcome:
        """Run a shard to completion; a redelivered shard only does what is missing."""

        def claim(s: Session) -> tuple[_RunView, list[str], set[queries.EpisodeKey]] | None:
            claimed = queries.claim_shard(s, shard_id, self.worker, self.max_deliveries)
            if claimed is None:
                return None
            run, shard = claimed
            question_ids = [str(q) for q in shard.question_ids]
            return _view(run), question_ids, queries.stored_keys(s, run.id, question_ids)

        claimed = self.transact(claim)
        if claimed is None:
            return ShardOutcome(shard_id, "skipped")
        view, question_ids, done = claimed
        try:
            stored, cancelled = self._run_episodes(view, shard_id, question_ids, done)
            if cancelled:
                self.transact(lambda s: queries.stop_shard(s, shard_id))
                return ShardOutcome(shard_id, "cancelled", stored, len(done))
            self.transact(lambda s: queries.finish_shard(s, shard_id))
            return ShardOutcome(shard_id, "done", stored, len(done))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            try:
                self.transact(lambda s: queries.fail_shard(s, shard_id, reason))
            except DB_RETRYABLE:
                log.exception("shard %d: could not record its failure", shard_id)
            raise

    def transact(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction, retried with backoff while the database is away."""

        def attempt() -> T:
            with self.store.session() as s:
                return work(s)

        def waiting(exc: Exception, intervals: Iterator[float], retries: int) -> float:
            pause = next(intervals)
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            log.warning("database unavailable (%s); retry %d in %.1f s", reason, retries + 1, pause)
            return pause

        result: T = retry_over_time(  # type: ignore[no-untyped-call]
            attempt,
            DB_RETRYABLE,
            errback=waiting,
            interval_start=0.5,
            interval_step=1.0,
            interval_max=10.0,
            timeout=self.db_retry_seconds,
        )
        return result

    def _run_episodes(
        self, run: _RunView, shard_id: int, question_ids: list[str], done: set[queries.EpisodeKey]
    ) -> tuple[int, bool]:
        questions = {
            q.id: q for q in load_questions(run.dataset, run.difficulty, run.config.get("corpus"))
        }
        strategies = [parse_strategy(spec, run.config.get("mdp", {})) for spec in run.strategies]
        generation = GenerationConfig.from_json(run.config.get("generation", {}))
        costs = run.config.get("mdp", {})
        buffer: list[EpisodeResult] = []
        stored = 0
        last_flush = time.monotonic()
        cancel = _CancelCheck(self.transact, run.id)

        def pending() -> Iterator[PendingEpisode]:
            for qid in question_ids:
                q = questions.get(qid)
                for strategy in strategies:
                    for rep in range(run.repeats):
                        if (qid, strategy.name, rep) in done:
                            continue
                        if q is None or q.invalid is not None:
                            buffer.append(_unrunnable(qid, q, strategy.name, rep))
                            continue
                        ctx = EpisodeContext(
                            generation=generation,
                            c_r=float(costs["c_r"]),
                            c_p=float(costs["c_p"]),
                            passage=self.retrievers.passage,
                            repeat=rep,
                        )
                        yield PendingEpisode(
                            strategy.episode(q, ctx), _error_factory(q, strategy, rep)
                        )

        results = self.driver(
            pending(),
            self.engine,
            self.retrievers.using(run.config.get("retriever", "bm25")),
            concurrency=self.concurrency,
            should_stop=cancel,
        )
        for result in results:
            buffer.append(result)
            if len(buffer) >= FLUSH_EVERY or time.monotonic() - last_flush > FLUSH_SECONDS:
                stored += self._flush(run.id, shard_id, buffer)
                last_flush = time.monotonic()
                cancel.cancelled |= self._decided(run)
        stored += self._flush(run.id, shard_id, buffer)
        # Every episode of the shard ran, so it is done even if this decides the run.
        self._decided(run)
        return stored, cancel.cancelled

    def _decided(self, run: _RunView) -> bool:
        """For ``--until-decided`` runs: True when the stored prefix decides it (now stopped).

        Checked after every flush. The rule is anytime-valid, so checking this often (or
        more, or less) keeps its error rate; see docs/analysis.md, "Deciding early".
        """
        rule = run.config.get("until_decided")
        if not rule or "decision" in run.config:
            return False

        def check(s: Session) -> bool:
            stored = queries.get_run(s, run.id)
            if "decision" in stored.config:  # another worker decided, or it was resumed
                return False
            diffs = decisions.paired_prefix(s, stored, rule)
            decision = decide(np.array(diffs), float(rule["alpha"]), float(rule["min_effect"]))
            if decision.reason is None:
                return False
            record = {"reason": decision.reason, **asdict(decision.interval)}
            if decisions.record_decision(s, run.id, record):
                log.info("run %d decided: %s", run.id, record)
                return True
            return False

        return self.transact(check)

    def _flush(self, run_id: int, shard_id: int, buffer: list[EpisodeResult]) -> int:
        if not buffer:
            return 0

        def write(s: Session) -> int:
            return queries.write_episodes(s, run_id, shard_id, buffer, self.worker)

        n = self.transact(write)
        buffer.clear()
        return n


class _CancelCheck:
    """Polls the run's status now and then, so a cancel stops new episodes."""

    def __init__(self, transact: Callable[[Callable[[Session], str]], str], run_id: int) -> None:
        self.transact = transact
        self.run_id = run_id
        self.cancelled = False
        self._last = time.monotonic()

    def __call__(self) -> bool:
        if not self.cancelled and time.monotonic() - self._last > CANCEL_CHECK_SECONDS:
            self._last = time.monotonic()
            status = self.transact(lambda s: queries.get_run(s, self.run_id).status)
            self.cancelled = status == "cancelled"
        return self.cancelled


def _view(run: Run) -> _RunView:
    return _RunView(
        id=run.id,
        dataset=run.dataset,
        difficulty=run.difficulty,
        strategies=[str(s) for s in run.strategies],
        repeats=run.repeats,
        config=dict(run.config),
    )


def _unrunnable(qid: str, q: Question | None, strategy: str, rep: int) -> EpisodeResult:
    """An invalid row (or a vanished question) is stored with its reason, never dropped."""
    if q is None:
        result = EpisodeResult(qid, strategy, rep, status="error")
        result.error = "question not found in the dataset (was the dataset file changed?)"
        return result
    result = new_result(q, strategy, rep, status="invalid")
    result.error = q.invalid
    return result


def _error_factory(q: Question, strategy: Strategy, rep: int) -> Any:
    def on_error(reason: str) -> EpisodeResult:
        result = new_result(q, strategy.name, rep, status="error")
        result.error = reason
        return result

    return on_error
