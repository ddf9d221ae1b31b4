"""A worker's Prometheus endpoint: the series docs/operations.md documents, counted right."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from support import REPO, Worker, episode_count, free_port, wait_for_run

from evalq.cli.main import cli
from evalq.errors import UserError
from evalq.models.async_engine import AsyncEngine, LoopThread
from evalq.models.base import Engine, Generation, GenerationRequest
from evalq.rag.episode import EpisodeResult, StepRecord
from evalq.rag.runner import PendingEpisode, Retrievers
from evalq.worker.metrics import meter_engine, observe_driver, start_metrics_server


def documented_series() -> list[str]:
    """Series names from the metrics table of docs/operations.md."""
    text = (REPO / "docs" / "operations.md").read_text()
    names = re.findall(r"^\| `(evalq_[a-z_]+)` \|", text, flags=re.MULTILINE)
    assert names, "docs/operations.md has no metrics table"
    return names


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample at :port/metrics, by sample name and label set."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def result(strategy: str, status: str, steps: list[StepRecord]) -> EpisodeResult:
    return EpisodeResult("q1", strategy, 0, status=status, steps=steps)


def drive(
    results: list[EpisodeResult], on_episode: Callable[[EpisodeResult], None] | None = None
) -> list[EpisodeResult]:
    """Pass ``results`` through ``observe_driver`` around a driver that yields them."""

    def driver(
        episodes: Iterable[PendingEpisode],
        engine: Engine,
        retrievers: Retrievers,
        *,
        concurrency: int,
        should_stop: Callable[[], bool],
    ) -> Iterator[EpisodeResult]:
        yield from results

    observed = observe_driver(driver, on_episode)
    return list(observed([], CountingEngine(), NO_RETRIEVERS, concurrency=1, should_stop=never))


def never() -> bool:
    return False


def test_episodes_tokens_and_step_latency_are_counted() -> None:
    before = {
        "ok": value("evalq_episodes_total", strategy="mdp", status="ok"),
        "prompt": value("evalq_tokens_total", kind="prompt"),
        "completion": value("evalq_tokens_total", kind="completion"),
        "retrieve": value("evalq_step_latency_seconds_count", action="retrieve"),
        "retrieve_sum": value("evalq_step_latency_seconds_sum", action="retrieve"),
        "fast": value("evalq_step_latency_seconds_bucket", action="terminate", le="0.1"),
    }
    steps = [
        StepRecord("retrieve", prompt_tokens=100, completion_tokens=8, latency_s=0.5),
        StepRecord("retrieve", prompt_tokens=300, completion_tokens=9, latency_s=1.5),
        StepRecord("terminate", prompt_tokens=400, completion_tokens=3, latency_s=0.05),
    ]
    done: list[EpisodeResult] = []
    out = drive([result("mdp", "ok", steps), result("mdp", "error", [])], done.append)
    assert [r.status for r in out] == ["ok", "error"] and done == out
    assert value("evalq_episodes_total", strategy="mdp", status="ok") == before["ok"] + 1
    assert value("evalq_episodes_total", strategy="mdp", status="error") >= 1
    assert value("evalq_tokens_total", kind="prompt") == before["prompt"] + 800
    assert value("evalq_tokens_total", kind="completion") == before["completion"] + 20
    assert value("evalq_step_latency_seconds_count", action="retrieve") == before["retrieve"] + 2
    assert value("evalq_step_latency_seconds_sum", action="retrieve") == pytest.approx(
        before["retrieve_sum"] + 2.0
    )
    assert (
        value("evalq_step_latency_seconds_bucket", action="terminate", le="0.1")
        == before["fast"] + 1
    )


class NoRetrievers:
    """Retrievers for a driver that never retrieves."""

    def search(self, *args: object, **kwargs: object) -> list[object]:
        raise AssertionError("no retrieval expected")


NO_RETRIEVERS: Retrievers = NoRetrievers()  # type: ignore[assignment]


class CountingEngine:
    """Records the in-flight gauge as each batch arrives."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.seen.append(value("evalq_engine_requests_in_flight"))
        return [Generation("Answer: 1", 1, 1, 0.0) for _ in requests]


class AsyncCountingEngine(CountingEngine):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.gate = asyncio.Event()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def agenerate(self, request: GenerationRequest) -> Generation:
        await self.gate.wait()
        return Generation("Answer: 1", 1, 1, 0.0)


def request() -> GenerationRequest:
    return GenerationRequest(({"role": "user", "content": "q"},), max_tokens=4)


def test_engine_queue_depth_is_the_requests_in_flight() -> None:
    plain = CountingEngine()
    metered: Engine = meter_engine(plain)
    assert not isinstance(metered, AsyncEngine)
    metered.generate([request()] * 3)
    metered.generate([request()])
    assert plain.seen == [3.0, 1.0]
    assert value("evalq_engine_requests_in_flight") == 0

    thread = LoopThread("test-metrics")
    try:
        inner = AsyncCountingEngine(thread.loop)
        wrapped = meter_engine(inner)  # type: ignore[arg-type]
        assert isinstance(wrapped, AsyncEngine) and wrapped.loop is thread.loop

        async def five() -> list[Generation]:
            calls = [asyncio.ensure_future(wrapped.agenerate(request())) for _ in range(5)]
            while value("evalq_engine_requests_in_flight") < 5:
                await asyncio.sleep(0.01)
            inner.gate.set()
            return list(await asyncio.gather(*calls))

        assert len(thread.run(five(), timeout=30)) == 5
        assert value("evalq_engine_requests_in_flight") == 0
    finally:
        thread.stop()


def test_endpoint_serves_every_documented_series() -> None:
    port = free_port()
    start_metrics_server(port, addr="127.0.0.1")
    drive([result("fixed:k=3", "ok", [StepRecord("retrieve", latency_s=0.1)])])
    samples = scrape(port)
    for name in documented_series():
        assert any(s == name or s.startswith(name + "_") for s in samples), name
    with pytest.raises(UserError, match=f"port {port}"):
        start_metrics_server(port, addr="127.0.0.1")


def test_worker_endpoint_counts_what_the_run_stored(
    tmp_path: Path, redis_url: str, sqlite_url: str
) -> None:
    port = free_port()
    worker = Worker(
        sqlite_url,
        redis_url,
        tmp_path / "worker.log",
        model="test/metrics",
        engine="engines:instant_engine",
        args=("--name", "gpu0@metrics", "--metrics-port", str(port)),
    )
    try:
        worker.wait_ready(timeout=120)
        idle = scrape(port)
        assert idle["evalq_engine_requests_in_flight"][()] == 0
        result = CliRunner().invoke(
            cli,
            [
                *("--database-url", sqlite_url, "--broker-url", redis_url, "submit"),
                *("--dataset", "hotpotqa", "--n", "12", "--model", "test/metrics"),
                *("--strategy", "fixed:k=0", "--strategy", "mdp", "--shard-size", "6"),
            ],
        )
        assert result.exit_code == 0, result.output
        run_id = int(result.output.split()[1].rstrip(":"))
        wait_for_run(sqlite_url, run_id, [worker], timeout=120)
        samples = scrape(port)
        for name in documented_series():
            assert any(s == name or s.startswith(name + "_") for s in samples), name
        episodes = samples["evalq_episodes_total"]
        assert sum(episodes.values()) == episode_count(sqlite_url, run_id) == 24
        strategies = {dict(labels)["strategy"] for labels in episodes}
        assert strategies == {"fixed:k=0", "mdp"}
        assert samples["evalq_tokens_total"][(("kind", "prompt"),)] > 0
        steps = sum(samples["evalq_step_latency_seconds_count"].values())
        assert steps >= 24  # every episode takes at least one step
        assert samples["evalq_engine_requests_in_flight"][()] == 0
    finally:
        worker.stop()
