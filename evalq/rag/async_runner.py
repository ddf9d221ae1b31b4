"""Drive many episodes against an asynchronous engine, each at its own pace.

The step-synchronous driver (``evalq.rag.runner``) waits every round for the slowest
request, and MDP episodes take different numbers of steps, so its batches thin out. Here
every episode is an asyncio task: the moment one generation finishes, that episode's next
request goes to the engine, which therefore always holds as many requests as there are
episodes in flight. Retrievals are micro-batched: the requests arriving within one loop tick
(and while the previous search runs) are answered by one search per corpus.

The tasks run on the engine's own event loop (a thread); the caller's thread keeps what
the ``Driver`` protocol promises: it pulls episodes from the source, polls ``should_stop``
and receives each result over a queue, in whatever thread it calls from.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from evalq.models.async_engine import AsyncEngine, BatchedAsyncEngine, LoopThread, MicroBatcher
from evalq.models.base import Engine, GenerationRequest
from evalq.rag.episode import EpisodeResult, RetrievalRequest, Retrieved
from evalq.rag.retrievers import Hit
from evalq.rag.runner import PendingEpisode, Retrievers, _advance

log = logging.getLogger(__name__)

# How long a shard with no episode under way waits for a free slot before it checks again
# whether it should stop.
SLOT_WAIT_S = 1.0
# Searches served at once: a wave of a thousand episodes retrieving together (every episode
# starts with a search) gets its first passages after one slice, not after all of them, so
# the engine has prompts while the rest are searched.
SEARCH_BATCH = 128


class _Searches:
    """Micro-batched retrieval: one ``Retrievers.search`` per (corpus, k) per batch."""

    def __init__(
        self,
        retrievers: Retrievers,
        loop: asyncio.AbstractEventLoop,
        executor: concurrent.futures.Executor,
    ) -> None:
        self.retrievers = retrievers
        self.batcher: MicroBatcher[RetrievalRequest, Retrieved] = MicroBatcher(
            loop,
            self._serve,
            key=lambda r: (r.corpus, r.k),
            executor=executor,
            max_batch=SEARCH_BATCH,
        )

    def _serve(self, key: tuple[str, int], reqs: list[RetrievalRequest]) -> list[Retrieved]:
        corpus, k = key
        t0 = time.perf_counter()
        hits: list[list[Hit]] = self.retrievers.search(
            corpus, [r.query for r in reqs], k, [r.exclude for r in reqs]
        )
        per = (time.perf_counter() - t0) / len(reqs)
        return [Retrieved(h, per) for h in hits]


class AsyncDriver:
    """The ``Driver`` that runs every episode as a task on the engine's event loop.

    One instance lives as long as its worker. All its searches run on one thread of its own,
    so shards that run at the same time never build or query an index concurrently. A plain
    batch engine is wrapped in ``BatchedAsyncEngine`` on a loop of the driver's own.

    ``max_in_flight`` bounds the episodes under way across all the shards the driver runs at
    once (each call's ``concurrency`` bounds its own): the engine stays as full as this
    allows whether the shards are large or small, and never holds more than it can batch.
    """

    def __init__(self, max_in_flight: int | None = None) -> None:
        """Start the search thread; a loop is made only if a plain engine is ever driven."""
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._slots = threading.BoundedSemaphore(max_in_flight) if max_in_flight else None
        self._lock = threading.Lock()
        # Episodes are numbered as they start, across all shards the driver runs: an engine
        # that schedules by priority then serves the oldest episodes first.
        self._started = itertools.count()
        self._search_thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="evalq-search"
        )
        self._wrapped: dict[int, tuple[Engine, BatchedAsyncEngine]] = {}
        self._own_loop: LoopThread | None = None

    def close(self) -> None:
        """Release the search thread and the driver's own loop, if it made one."""
        with self._lock:
            self._search_thread.shutdown(wait=False, cancel_futures=True)
            for _, wrapped in self._wrapped.values():
                wrapped.close()
            self._wrapped.clear()
            if self._own_loop is not None:
                self._own_loop.stop()
                self._own_loop = None

    def async_engine(self, engine: Engine) -> AsyncEngine:
        """``engine`` itself when it is asynchronous, else a batching wrapper around it."""
        if isinstance(engine, AsyncEngine):
            return engine
        with self._lock:
            held = self._wrapped.get(id(engine))
            if held is None or held[0] is not engine:
                if self._own_loop is None:
                    self._own_loop = LoopThread("evalq-driver")
                held = (engine, BatchedAsyncEngine(engine, self._own_loop.loop))
                self._wrapped[id(engine)] = held
            return held[1]

    def __call__(
        self,
        episodes: Iterable[PendingEpisode],
        engine: Engine,
        retrievers: Retrievers,
        *,
        concurrency: int,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[EpisodeResult]:
        """Run ``episodes`` with at most ``concurrency`` in flight; yield each as it finishes.

        Semantics match ``run_episodes``: an episode whose own code raises, or whose request
        the engine refuses, becomes an error result; an engine or retrieval failure
        propagates (and cancels the rest).
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        aengine = self.async_engine(engine)
        loop = aengine.loop
        searches = _Searches(retrievers, loop, self._search_thread)
        done: queue.SimpleQueue[asyncio.Task[EpisodeResult]] = queue.SimpleQueue()
        tasks: set[asyncio.Task[EpisodeResult]] = set()

        def start(batch: list[PendingEpisode]) -> None:  # on the loop
            for pending in batch:
                task = loop.create_task(_drive(pending, aengine, searches, next(self._started)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(done.put)

        source = iter(episodes)
        in_flight = 0
        held = 0  # slots taken for episodes not started yet
        exhausted = False
        try:
            while True:
                batch: list[PendingEpisode] = []
                while not exhausted and in_flight + len(batch) < concurrency and not should_stop():
                    # A call with nothing under way waits for a slot; others take free ones.
                    if not self._take_slot(wait=in_flight + len(batch) == 0):
                        break
                    held += 1
                    pending = next(source, None)
                    if pending is None:
                        self._give_slots(1)
                        held -= 1
                        exhausted = True
                    else:
                        batch.append(pending)
                if batch:
                    loop.call_soon_threadsafe(start, batch)
                    in_flight += len(batch)
                    held = 0
                if in_flight == 0:
                    if exhausted or should_stop():
                        return
                    continue  # every slot is taken by other shards: wait again
                finished = done.get()
                in_flight -= 1
                self._give_slots(1)
                yield finished.result()
        finally:
            # Whatever ends the call (a failure of the source or of should_stop included),
            # the worker gets back every slot this call holds.
            self._give_slots(held)
            if in_flight:
                _cancel_all(loop, tasks)
                self._give_slots(in_flight)

    def _take_slot(self, *, wait: bool) -> bool:
        """One slot of ``max_in_flight`` (always granted without a bound)."""
        if self._slots is None:
            return True
        return self._slots.acquire(timeout=SLOT_WAIT_S) if wait else self._slots.acquire(False)

    def _give_slots(self, n: int) -> None:
        if self._slots is not None:
            for _ in range(n):
                self._slots.release()


async def _drive(
    pending: PendingEpisode, engine: AsyncEngine, searches: _Searches, priority: int
) -> EpisodeResult:
    """Step one episode: answer each action as soon as it is asked, at its priority."""
    reply: Any = None
    first = True
    while True:
        action = _advance(pending, reply, first=first)
        first = False
        if isinstance(action, EpisodeResult):
            return action
        if isinstance(action, GenerationRequest):
            reply = await engine.agenerate(replace(action, priority=priority))
        elif isinstance(action, RetrievalRequest):
            reply = await searches.batcher.submit(action)
        else:
            raise TypeError(f"episode yielded {type(action).__name__}, not an action")


def _cancel_all(loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[EpisodeResult]]) -> None:
    """Cancel the episodes still running (their engine requests are aborted) and wait."""

    async def cancel() -> None:
        live = list(tasks)
        for task in live:
            task.cancel()
        await asyncio.gather(*live, return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(cancel(), loop).result(timeout=60)
    except (concurrent.futures.TimeoutError, RuntimeError):
        log.warning("episodes still running after cancel; leaving them to the engine")


def run_episodes_async(
    episodes: Iterable[PendingEpisode],
    engine: Engine,
    retrievers: Retrievers,
    *,
    concurrency: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[EpisodeResult]:
    """One-off ``AsyncDriver`` call (a worker keeps one driver instead)."""
    driver = AsyncDriver()
    try:
        yield from driver(
            episodes, engine, retrievers, concurrency=concurrency, should_stop=should_stop
        )
    finally:
        driver.close()
