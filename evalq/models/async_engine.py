"""Asyncio plumbing for engines: the ``AsyncEngine`` protocol and what serves it.

An engine that serves requests one at a time, concurrently, runs on an event loop of its own
(``LoopThread``); ``MicroBatcher`` turns single calls made on that loop into batches (vLLM's
tokenizer calls, a batch engine's ``generate``), and ``BatchedAsyncEngine`` shows any batch
``Engine`` as an ``AsyncEngine``. The driver that runs episodes on them is
``evalq.rag.async_runner``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from evalq.models.base import Engine, Generation, GenerationRequest

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@runtime_checkable
class AsyncEngine(Protocol):
    """An engine that serves one request at a time, concurrently, on its own event loop."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (in its own thread) that ``agenerate`` must be awaited on."""
        ...

    async def agenerate(self, request: GenerationRequest) -> Generation:
        """Generate one completion; many calls may be in flight at once."""
        ...


class LoopThread:
    """An asyncio event loop running forever in a daemon thread, for an engine to own."""

    def __init__(self, name: str = "evalq-loop") -> None:
        """Start the loop and wait until it runs."""
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(started.set)
            self.loop.run_forever()

        self._thread = threading.Thread(target=main, name=name, daemon=True)
        self._thread.start()
        started.wait()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Cancel what still runs on the loop, stop it and join its thread."""
        if self.loop.is_closed():
            return

        async def cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.run(cancel_rest(), timeout=10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("tasks still running as the loop stops")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self.loop.close()


class MicroBatcher(Generic[T, R]):
    """Collects single calls made on a loop and serves them in batches, one batch at a time.

    Calls arriving within one loop tick, plus those arriving while the previous batch runs,
    form the next batch, up to ``max_batch`` items (the rest wait for the one after, so that
    the first answers of a large wave come back early). ``serve`` runs in one worker thread
    (so it may block, and never runs twice at once) and gets the items grouped by ``key``; a
    failure fails the whole batch.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        serve: Callable[[Any, list[T]], Sequence[R]],
        key: Callable[[T], Any] = lambda _: None,
        executor: concurrent.futures.Executor | None = None,
        max_batch: int | None = None,
    ) -> None:
        """Serve batches with ``serve(key, items)`` on ``executor`` (else a private thread)."""
        self._loop = loop
        self._serve = serve
        self._key = key
        self._max_batch = max_batch
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1)
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = False
        self._scheduled = False

    def submit(self, item: T) -> Awaitable[R]:
        """Queue one item (from a task on the loop); await the returned future for its reply."""
        fut: asyncio.Future[R] = self._loop.create_future()
        self._pending.append((item, fut))
        if not self._busy and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        return fut

    def close(self) -> None:
        """Release the private thread (a shared executor stays with its owner)."""
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not self._pending:
            return
        cut = self._max_batch or len(self._pending)
        batch, self._pending = self._pending[:cut], self._pending[cut:]
        self._busy = True
        self._loop.create_task(self._run(batch))

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        groups: dict[Any, list[tuple[T, asyncio.Future[R]]]] = defaultdict(list)
        for item, fut in batch:
            if not fut.cancelled():
                groups[self._key(item)].append((item, fut))
        try:
            for key, members in groups.items():
                try:
                    replies = await self._loop.run_in_executor(
                        self._executor, self._serve, key, [item for item, _ in members]
                    )
                    if len(replies) != len(members):
                        raise RuntimeError(f"{len(replies)} replies for {len(members)} requests")
                except Exception as exc:
                    for _, fut in members:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), reply in zip(members, replies, strict=True):
                    if not fut.done():
                        fut.set_result(reply)
        finally:
            self._busy = False
            if self._pending:
                self._flush()


class BatchedAsyncEngine:
    """Any batch ``Engine`` seen as an ``AsyncEngine``: concurrent calls become batches.

    Lets the async driver run over a plain engine (test engines, a recording wrapper):
    requests made while a batch generates form the next batch.
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        """Wrap ``engine``; its ``generate`` runs on a private thread, one batch at a time."""
        self.engine = engine
        self._loop = loop
        self._batcher: MicroBatcher[GenerationRequest, Generation] = MicroBatcher(
            loop, lambda _, requests: engine.generate(requests)
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the wrapped engine is served from."""
        return self._loop

    async def agenerate(self, request: GenerationRequest) -> Generation:
        """One request, answered from the next batch."""
        return await self._batcher.submit(request)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """The wrapped engine's own batch call."""
        return self.engine.generate(requests)

    def close(self) -> None:
        """Release the batching thread (the wrapped engine stays as it is)."""
        self._batcher.close()
