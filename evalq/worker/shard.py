"""Running one shard: skip what is stored, run the rest concurrently, store as they finish."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from evalq.data.question import Question
from evalq.data.registry import load_questions
from evalq.db import queries
from evalq.db.models import Run
from evalq.db.session import Store
from evalq.models.base import Engine
from evalq.rag.episode import EpisodeResult
from evalq.rag.retrieval import CorpusRetrievers
from evalq.rag.runner import Driver, PendingEpisode, run_episodes
from evalq.rag.strategies import EpisodeContext, GenerationConfig, Strategy, parse_strategy
from evalq.rag.strategies.base import new_result

log = logging.getLogger(__name__)

# Stored episodes are flushed in groups: one transaction per episode would cap the rate.
FLUSH_EVERY = 64
FLUSH_SECONDS = 2.0
CANCEL_CHECK_SECONDS = 5.0


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
    ) -> None:
        """Hold the worker's long-lived parts: store, engine, retrievers, driver."""
        self.store = store
        self.engine = engine
        self.worker = worker
        self.concurrency = concurrency
        self.driver = driver
        self.retrievers = CorpusRetrievers()

    def run(self, shard_id: int) -> ShardOutcome:
        """Run a shard to completion; a redelivered shard only does what is missing."""
        with self.store.session() as s:
            claimed = queries.claim_shard(s, shard_id, self.worker)
            if claimed is None:
                return ShardOutcome(shard_id, "skipped")
            run, shard = claimed
            view = _view(run)
            question_ids = [str(q) for q in shard.question_ids]
            done = queries.stored_keys(s, view.id, question_ids)
        try:
            stored, cancelled = self._run_episodes(view, shard_id, question_ids, done)
            if cancelled:
                return ShardOutcome(shard_id, "cancelled", stored, len(done))
            with self.store.session() as s:
                queries.finish_shard(s, shard_id)
            return ShardOutcome(shard_id, "done", stored, len(done))
        except Exception as exc:
            with self.store.session() as s:
                queries.fail_shard(s, shard_id, f"{type(exc).__name__}: {exc}")
            raise

    def _run_episodes(
        self, run: _RunView, shard_id: int, question_ids: list[str], done: set[queries.EpisodeKey]
    ) -> tuple[int, bool]:
        questions = {q.id: q for q in load_questions(run.dataset, run.difficulty)}
        strategies = [parse_strategy(spec, run.config.get("mdp", {})) for spec in run.strategies]
        generation = GenerationConfig.from_json(run.config.get("generation", {}))
        costs = run.config.get("mdp", {})
        buffer: list[EpisodeResult] = []
        stored = 0
        last_flush = time.monotonic()
        cancel = _CancelCheck(self.store, run.id)

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
            self.retrievers,
            concurrency=self.concurrency,
            should_stop=cancel,
        )
        for result in results:
            buffer.append(result)
            if len(buffer) >= FLUSH_EVERY or time.monotonic() - last_flush > FLUSH_SECONDS:
                stored += self._flush(run.id, shard_id, buffer)
                last_flush = time.monotonic()
        stored += self._flush(run.id, shard_id, buffer)
        return stored, cancel.cancelled

    def _flush(self, run_id: int, shard_id: int, buffer: list[EpisodeResult]) -> int:
        if not buffer:
            return 0
        with self.store.session() as s:
            n = sum(queries.write_episode(s, run_id, shard_id, r, self.worker) for r in buffer)
        buffer.clear()
        return n


class _CancelCheck:
    """Polls the run's status now and then, so a cancel stops new episodes."""

    def __init__(self, store: Store, run_id: int) -> None:
        self.store = store
        self.run_id = run_id
        self.cancelled = False
        self._last = time.monotonic()

    def __call__(self) -> bool:
        if not self.cancelled and time.monotonic() - self._last > CANCEL_CHECK_SECONDS:
            self._last = time.monotonic()
            with self.store.session() as s:
                self.cancelled = queries.get_run(s, self.run_id).status == "cancelled"
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
