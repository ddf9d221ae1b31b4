"""Prometheus metrics of one worker, served on ``--metrics-port`` at ``/metrics``.

The series (documented in docs/operations.md) live in prometheus_client's default
registry, so the same endpoint also carries the process metrics and, when the engine is
vLLM's ``AsyncLLM``, vLLM's own ``vllm:*`` series (its scheduler's running and waiting
requests among them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from evalq.errors import UserError
from evalq.models.async_engine import AsyncEngine
from evalq.models.base import Engine, Generation, GenerationRequest
from evalq.rag.episode import EpisodeResult
from evalq.rag.runner import Driver, PendingEpisode, Retrievers

EPISODES = Counter(
    "evalq_episodes",
    "Episodes this worker finished, by strategy and status (ok, invalid, error).",
    ["strategy", "status"],
)
TOKENS = Counter(
    "evalq_tokens",
    "Tokens of the episodes this worker finished, by kind (prompt, completion).",
    ["kind"],
)
STEP_LATENCY = Histogram(
    "evalq_step_latency_seconds",
    "Time of each episode step (its model call and retrieval, if any), by action.",
    ["action"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
ENGINE_IN_FLIGHT = Gauge(
    "evalq_engine_requests_in_flight",
    "Generation requests handed to the engine and not yet answered (its queue depth).",
)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread.

    Raises:
        UserError: the port is out of range or taken.
    """
    try:
        start_http_server(port, addr=addr)
    except (OSError, OverflowError) as exc:
        raise UserError(f"cannot serve metrics on port {port}: {exc}") from exc


def observe_episode(result: EpisodeResult) -> None:
    """Count a finished episode, its tokens and the latency of each of its steps."""
    EPISODES.labels(strategy=result.strategy, status=result.status).inc()
    prompt = completion = 0
    for step in result.steps:
        STEP_LATENCY.labels(action=step.action).observe(step.latency_s)
        prompt += step.prompt_tokens
        completion += step.completion_tokens
    TOKENS.labels(kind="prompt").inc(prompt)
    TOKENS.labels(kind="completion").inc(completion)


def observe_driver(
    driver: Driver, on_episode: Callable[[EpisodeResult], None] | None = None
) -> Driver:
    """``driver``, with every result it yields counted (and handed to ``on_episode``)."""

    def observed(
        episodes: Iterable[PendingEpisode],
        engine: Engine,
        retrievers: Retrievers,
        *,
        concurrency: int,
        should_stop: Callable[[], bool],
    ) -> Iterator[EpisodeResult]:
        for result in driver(
            episodes, engine, retrievers, concurrency=concurrency, should_stop=should_stop
        ):
            observe_episode(result)
            if on_episode is not None:
                on_episode(result)
            yield result

    return observed


class MeteredEngine:
    """An engine whose requests in flight are counted in ``evalq_engine_requests_in_flight``."""

    def __init__(self, engine: Engine) -> None:
        """Wrap ``engine``."""
        self.engine = engine

    @property
    def max_num_seqs(self) -> object:
        """The wrapped engine's batch size as it says it (``episodes_in_flight`` checks it)."""
        return getattr(self.engine, "max_num_seqs", None)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """The wrapped engine's batch call, its requests counted while it runs."""
        ENGINE_IN_FLIGHT.inc(len(requests))
        try:
            return self.engine.generate(requests)
        finally:
            ENGINE_IN_FLIGHT.dec(len(requests))

    def close(self) -> None:
        """Close the wrapped engine, if it can be closed."""
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()


class MeteredAsyncEngine(MeteredEngine):
    """``MeteredEngine`` for an asynchronous engine: ``agenerate`` is counted too."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap ``engine`` (which is also a plain ``Engine``)."""
        super().__init__(engine)  # type: ignore[arg-type]
        self.async_engine = engine

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The wrapped engine's loop."""
        return self.async_engine.loop

    async def agenerate(self, request: GenerationRequest) -> Generation:
        """One request, counted while it is in flight."""
        ENGINE_IN_FLIGHT.inc()
        try:
            return await self.async_engine.agenerate(request)
        finally:
            ENGINE_IN_FLIGHT.dec()


def meter_engine(engine: Engine) -> Engine:
    """``engine`` wrapped so its queue depth is measured; asynchronous engines stay so."""
    if isinstance(engine, AsyncEngine):
        return MeteredAsyncEngine(engine)
    return MeteredEngine(engine)
