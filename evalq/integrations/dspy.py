"""DSPy on the fleet: ``dspy.configure(lm=FleetLM(model=...))``.

DSPy calls its LM once per prediction, from as many threads as ``dspy.Evaluate`` runs.
``FleetLM`` gathers the calls that arrive within a few milliseconds of each other (and all
that arrive while earlier batches are out) into one generation job, so the workers'
engines see batches instead of single prompts. Each call still gets its own output: a
job's outputs come back in the order its calls were gathered.

``FleetLM(model).batch_generate(prompts)`` is the seed's
``vLLMOfflineMultiGPU(...).batch_generate(prompts)``: the whole list as one fleet job,
outputs in input order.

Needs the ``dspy`` extra (``pip install 'evalq[dspy]'``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

try:
    import dspy  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from dspy.lm15 import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        Message,
        Request,
        Response,
        TextPart,
        Usage,
        response_to_events,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from evalq.errors import UserError

    raise UserError("FleetLM needs DSPy: pip install 'evalq[dspy]'") from exc

from evalq.client import Client, Prompt
from evalq.db.generate import NewItem, StoredItem

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 1024


@dataclass(frozen=True)
class _Call:
    item: NewItem
    result: Future[StoredItem]


class CallBatcher:
    """Gathers calls from many threads into one fleet job per flush.

    A flush takes the first waiting call, then every call that arrives within
    ``max_wait_s`` (up to ``max_batch``). At most ``max_in_flight`` jobs are out at once;
    while they are, new calls wait in the queue and go out together in the next flush.
    """

    def __init__(
        self,
        client: Client,
        model: str,
        *,
        max_wait_s: float = 0.01,
        max_batch: int = 1024,
        max_in_flight: int = 4,
    ) -> None:
        self.client = client
        self.model = model
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self._calls: queue.Queue[_Call] = queue.Queue()
        self._slots = threading.Semaphore(max_in_flight)
        self._jobs = ThreadPoolExecutor(max_in_flight, thread_name_prefix="fleetlm-job")
        self._start = threading.Lock()
        self._flusher: threading.Thread | None = None

    def submit(
        self, messages: list[dict[str, str]], sampling: dict[str, Any]
    ) -> Future[StoredItem]:
        """Queue one call; the future resolves to its stored output."""
        with self._start:
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_loop, daemon=True, name="fleetlm-flush"
                )
                self._flusher.start()
        call = _Call(NewItem(messages, sampling), Future())
        self._calls.put(call)
        return call.result

    def _flush_loop(self) -> None:
        while True:
            self._slots.acquire()  # a free slot first: meanwhile calls gather in the queue
            batch = [self._calls.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._calls.get(timeout=max(deadline - time.monotonic(), 0)))
                except queue.Empty:
                    break
            self._jobs.submit(self._run, batch)

    def _run(self, batch: Sequence[_Call]) -> None:
        try:
            job_id = self.client.submit_items([c.item for c in batch], model=self.model)
            items = self.client.wait_items(job_id)
            for call, item in zip(batch, items, strict=True):
                call.result.set_result(item)
        except BaseException as exc:  # every waiting caller hears of it
            for call in batch:
                if not call.result.done():
                    call.result.set_exception(exc)
        finally:
            self._slots.release()


def _messages(request: Request) -> list[dict[str, str]]:
    """Chat messages for an lm15 request: its system text, then its text parts."""
    out = []
    if request.system is not None:
        system = (
            request.system
            if isinstance(request.system, str)
            else "".join(getattr(p, "text", "") or "" for p in request.system)
        )
        out.append({"role": "system", "content": system})
    out.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
    return out


def _sampling(request: Request) -> dict[str, Any]:
    config = request.config
    sampling: dict[str, Any] = {"max_tokens": config.max_tokens or DEFAULT_MAX_TOKENS}
    if config.temperature is not None:
        sampling["temperature"] = float(config.temperature)
    if config.top_p is not None:
        sampling["top_p"] = float(config.top_p)
    seed = getattr(config, "seed", None)
    if seed is not None:
        sampling["seed"] = int(seed)
    return sampling


def _response(model: str, item: StoredItem, max_tokens: int) -> Response:
    return Response(
        id=None,
        model=model,
        message=Message.assistant([TextPart(item.output)]),
        finish_reason="length" if item.completion_tokens >= max_tokens else "stop",
        usage=Usage(
            input_tokens=item.prompt_tokens,
            output_tokens=item.completion_tokens,
            total_tokens=item.prompt_tokens + item.completion_tokens,
        ),
    )


class FleetEngine:
    """A DSPy engine (``complete(Request) -> Response``) whose calls go to the fleet."""

    def __init__(self, batcher: CallBatcher) -> None:
        self.batcher = batcher

    def complete(self, request: Request) -> Response:
        """One completion, generated by a worker as part of a batch."""
        sampling = _sampling(request)
        item = self.batcher.submit(_messages(request), sampling).result()
        return _response(self.batcher.model, item, sampling["max_tokens"])

    def stream(self, request: Request) -> Iterator[Any]:
        """The whole completion as one stream (workers do not stream)."""
        return iter(response_to_events(self.complete(request)))

    def close(self) -> None:
        """Nothing to release: the batcher's threads are daemons."""


class AsyncFleetEngine:
    """The async face of ``FleetEngine``: awaits the same batched future."""

    def __init__(self, sync: FleetEngine) -> None:
        self.sync = sync

    async def complete(self, request: Request) -> Response:
        """As ``FleetEngine.complete``, without blocking the event loop."""
        sampling = _sampling(request)
        future = self.sync.batcher.submit(_messages(request), sampling)
        item = await asyncio.wrap_future(future)
        return _response(self.sync.batcher.model, item, sampling["max_tokens"])

    async def stream(self, request: Request) -> AsyncIterator[Any]:
        """The whole completion as one stream."""
        for event in response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        """Nothing to release."""


class FleetLM(dspy.LM):  # type: ignore[misc]
    """A DSPy LM served by evalq workers of ``model``, calls gathered into batches.

    Args:
        model: The model the workers serve (their queue).
        client: A configured ``evalq.Client``; default: one from ``EVALQ_*`` settings.
        max_wait_s: How long a flush waits for more calls after the first.
        max_in_flight: Jobs out at once; more calls wait and go out together.
        **kwargs: As for ``dspy.LM``: ``temperature``, ``max_tokens``, ``cache``, ...
    """

    def __init__(
        self,
        model: str,
        *,
        client: Client | None = None,
        max_wait_s: float = 0.01,
        max_in_flight: int = 4,
        **kwargs: Any,
    ) -> None:
        client = client or Client(model, poll_s=0.05)
        engine = FleetEngine(
            CallBatcher(client, model, max_wait_s=max_wait_s, max_in_flight=max_in_flight)
        )
        super().__init__(
            model=model, engine=engine, async_engine=AsyncFleetEngine(engine), **kwargs
        )
        self.fleet_client = client

    def batch_generate(
        self, prompts: Sequence[Prompt], *, timeout: float | None = None, **sampling: Any
    ) -> list[str]:
        """One completion per prompt, as one fleet job; outputs in input order.

        The seed's ``vLLMOfflineMultiGPU(...).batch_generate(prompts)``, on the workers of
        this LM's model. Sampling defaults to this LM's (``temperature``, ``max_tokens``,
        ``top_p``, ``seed``); DSPy's cache and history are not involved.

        Args:
            prompts: Texts (each sent as one user message) or chat message lists.
            timeout: Seconds to wait before giving up (the job goes on).
            **sampling: ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``ignore_eos``.

        Raises:
            UserError: bad input, an unreachable broker, or a chunk that failed on a worker.
            TimeoutError: ``timeout`` passed first.
        """
        return self.fleet_client.batch_generate(
            prompts, model=self.model, timeout=timeout, **{**_lm_sampling(self.kwargs), **sampling}
        )


def _lm_sampling(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """An LM's sampling settings that a fleet job takes; ``max_tokens`` always set."""
    sampling = {k: kwargs[k] for k in ("temperature", "top_p", "seed") if kwargs.get(k) is not None}
    sampling["max_tokens"] = kwargs.get("max_tokens") or DEFAULT_MAX_TOKENS
    return sampling
