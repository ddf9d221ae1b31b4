"""The async driver: episodes at their own pace, batched retrieval, the runner's error rules."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from support import Worker, wait_for_run

from evalq.cli.main import cli
from evalq.db.models import Episode
from evalq.db.session import open_store
from evalq.models.async_engine import AsyncEngine, LoopThread, MicroBatcher
from evalq.models.base import Generation, GenerationRequest
from evalq.rag.async_runner import SLOT_WAIT_S, AsyncDriver
from evalq.rag.episode import EpisodeGenerator, EpisodeResult, RetrievalRequest, Retrieved
from evalq.rag.retrievers import Hit
from evalq.rag.runner import PendingEpisode, run_episodes


class FakeAsyncEngine:
    """Echoes the prompt after a short pause; a request may wait on a gate the test opens."""

    def __init__(self, loop_thread: LoopThread) -> None:
        self._thread = loop_thread
        self.in_flight = 0
        self.peak = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.fail_on: str | None = None
        self.priorities: dict[str, int] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._thread.loop

    async def agenerate(self, request: GenerationRequest) -> Generation:
        text = request.messages[-1]["content"]
        self.priorities[text] = request.priority
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if text == self.fail_on:
                raise RuntimeError("engine died")
            gate = self.gates.get(text)
            if gate is not None:
                await gate.wait()
            await asyncio.sleep(0.001)
            return Generation(f"echo {text}", len(text), 2, 0.0)
        finally:
            self.in_flight -= 1

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [Generation(f"echo {r.messages[-1]['content']}", 1, 2, 0.0) for r in requests]


class FakeRetrievers:
    """Records each batched search; hit ids name the query."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def search(
        self, corpus: str, queries: list[str], k: int, exclude: list[frozenset[str]]
    ) -> list[list[Hit]]:
        self.calls.append((corpus, k, len(queries)))
        return [[Hit(f"{q}#{i}", 1.0) for i in range(k)] for q in queries]


def episode(name: str, steps: int, *, crash: bool = False) -> EpisodeGenerator:
    """``steps`` rounds of generate-then-retrieve, then a result listing what it got."""
    seen: list[str] = []
    for i in range(steps):
        gen: Generation = yield GenerationRequest(({"role": "user", "content": f"{name}/{i}"},))
        seen.append(gen.text)
        got: Retrieved = yield RetrievalRequest("c", f"{name}/{i}", 2)
        seen += [h.passage_id for h in got.hits]
    if crash:
        raise ValueError("bad episode")
    return EpisodeResult(name, "s", 0, "ok", answer="|".join(seen))


def pending(name: str, steps: int, *, crash: bool = False) -> PendingEpisode:
    return PendingEpisode(
        episode(name, steps, crash=crash),
        lambda reason: EpisodeResult(name, "s", 0, "error", error=reason),
    )


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread("test-engine")
    yield thread
    thread.stop()


@pytest.fixture
def driver() -> Iterator[AsyncDriver]:
    d = AsyncDriver()
    yield d
    d.close()


def test_results_match_the_step_synchronous_driver(
    loop_thread: LoopThread, driver: AsyncDriver
) -> None:
    engine = FakeAsyncEngine(loop_thread)
    assert isinstance(engine, AsyncEngine)
    specs = [(f"e{i}", i % 5) for i in range(30)]
    got = driver([pending(n, s) for n, s in specs], engine, FakeRetrievers(), concurrency=7)
    want = run_episodes([pending(n, s) for n, s in specs], engine, FakeRetrievers(), concurrency=7)
    assert {r.question_id: r.answer for r in got} == {r.question_id: r.answer for r in want}
    assert engine.peak <= 7


def test_every_request_carries_its_episodes_start_order_as_priority(
    loop_thread: LoopThread, driver: AsyncDriver
) -> None:
    # An engine scheduling by priority then serves episodes under way before new ones, and
    # the numbering goes on across the shards (calls) one driver runs.
    engine = FakeAsyncEngine(loop_thread)
    list(driver([pending(f"a{i}", 3) for i in range(5)], engine, FakeRetrievers(), concurrency=2))
    list(driver([pending(f"b{i}", 2) for i in range(3)], engine, FakeRetrievers(), concurrency=2))
    by_episode: dict[str, set[int]] = {}
    for text, priority in engine.priorities.items():
        by_episode.setdefault(text.split("/")[0], set()).add(priority)
    assert by_episode == {
        **{f"a{i}": {i} for i in range(5)},
        **{f"b{i}": {5 + i} for i in range(3)},
    }


def test_shards_run_at_once_share_the_workers_episodes_in_flight(
    loop_thread: LoopThread,
) -> None:
    # Each shard may have 10 under way, the worker 5: together they never pass 5, and the
    # shard that finds every slot taken waits for one instead of failing or finishing early.
    driver = AsyncDriver(max_in_flight=5)
    engine = FakeAsyncEngine(loop_thread)
    got: dict[str, list[str]] = {"a": [], "b": []}

    def shard(name: str) -> None:
        episodes = [pending(f"{name}{i}", 3) for i in range(12)]
        for result in driver(episodes, engine, FakeRetrievers(), concurrency=10):
            got[name].append(result.question_id)

    try:
        threads = [threading.Thread(target=shard, args=(n,)) for n in got]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
    finally:
        driver.close()
    assert engine.peak <= 5
    assert sorted(got["a"]) == sorted(f"a{i}" for i in range(12))
    assert sorted(got["b"]) == sorted(f"b{i}" for i in range(12))


def test_a_shard_waiting_for_a_slot_still_stops_when_told(loop_thread: LoopThread) -> None:
    driver = AsyncDriver(max_in_flight=1)
    engine = FakeAsyncEngine(loop_thread)
    gate = asyncio.Event()
    engine.gates["hog/0"] = gate  # holds the only slot until the test opens it
    hog = threading.Thread(
        target=lambda: list(driver([pending("hog", 1)], engine, FakeRetrievers(), concurrency=1))
    )
    try:
        hog.start()
        while engine.in_flight == 0:
            threading.Event().wait(0.01)
        # Told to stop once it has waited through a slot timeout or two.
        deadline = time.monotonic() + 2.5 * SLOT_WAIT_S
        stopped = driver(
            [pending("x", 1)],
            engine,
            FakeRetrievers(),
            concurrency=1,
            should_stop=lambda: time.monotonic() > deadline,
        )
        assert list(stopped) == [] and engine.in_flight == 1  # "x" never started
    finally:
        loop_thread.loop.call_soon_threadsafe(gate.set)
        hog.join(timeout=30)
        driver.close()


def test_a_shard_that_fails_gives_the_worker_back_its_slots(loop_thread: LoopThread) -> None:
    # A shard whose questions cannot be built fails; the next shard still gets every slot.
    driver = AsyncDriver(max_in_flight=3)
    engine = FakeAsyncEngine(loop_thread)

    def broken() -> Iterator[PendingEpisode]:
        yield pending("ok", 1)
        yield pending("ok2", 1)
        raise ValueError("dataset row vanished")

    try:
        with pytest.raises(ValueError, match="vanished"):
            list(driver(broken(), engine, FakeRetrievers(), concurrency=3))
        later = [pending(f"e{i}", 2) for i in range(9)]
        deadline = time.monotonic() + 10  # lost slots would leave it waiting: give up then
        got = driver(
            later,
            engine,
            FakeRetrievers(),
            concurrency=3,
            should_stop=lambda: time.monotonic() > deadline,
        )
        assert len(list(got)) == 9 and engine.peak == 3
    finally:
        driver.close()


def test_a_large_wave_is_served_in_slices_of_max_batch(loop_thread: LoopThread) -> None:
    batches: list[list[int]] = []

    def serve(_: object, items: list[int]) -> list[int]:
        batches.append(items)
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(loop_thread.loop, serve, max_batch=3)

    async def wave() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(7))))

    try:
        assert loop_thread.run(wave(), timeout=10) == [i * 10 for i in range(7)]
    finally:
        batcher.close()
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_slow_request_does_not_hold_back_other_episodes(
    loop_thread: LoopThread, driver: AsyncDriver
) -> None:
    engine = FakeAsyncEngine(loop_thread)
    gate = asyncio.Event()
    engine.gates["slow/0"] = gate
    results: list[str] = []

    def consume() -> None:
        episodes = [pending("slow", 1), *(pending(f"e{i}", 3) for i in range(20))]
        for result in driver(episodes, engine, FakeRetrievers(), concurrency=4):
            results.append(result.question_id)
            if len(results) == 20:  # every other episode finished while "slow" waited
                loop_thread.loop.call_soon_threadsafe(gate.set)

    thread = threading.Thread(target=consume)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert results[-1] == "slow" and len(results) == 21


def test_retrievals_arriving_together_share_one_search(
    loop_thread: LoopThread, driver: AsyncDriver
) -> None:
    retrievers = FakeRetrievers()
    eps = [PendingEpisode(_retrieve_only(f"q{i}"), lambda r: None) for i in range(40)]  # type: ignore[arg-type, return-value]
    results = list(driver(eps, FakeAsyncEngine(loop_thread), retrievers, concurrency=40))
    assert len(results) == 40
    assert sum(n for _, _, n in retrievers.calls) == 40
    assert len(retrievers.calls) <= 2  # the first query may go alone; the rest wait for it


def _retrieve_only(query: str) -> EpisodeGenerator:
    got: Retrieved = yield RetrievalRequest("c", query, 3)
    return EpisodeResult(query, "s", 0, "ok", passage_ids=[h.passage_id for h in got.hits])


def test_an_episode_bug_is_an_error_result_and_an_engine_failure_propagates(
    loop_thread: LoopThread, driver: AsyncDriver
) -> None:
    engine = FakeAsyncEngine(loop_thread)
    eps = [pending("ok", 2), pending("bad", 1, crash=True)]
    by_id = {r.question_id: r for r in driver(eps, engine, FakeRetrievers(), concurrency=4)}
    assert by_id["ok"].status == "ok"
    assert by_id["bad"].status == "error" and "ValueError: bad episode" in (
        by_id["bad"].error or ""
    )

    engine.fail_on = "doomed/1"
    eps = [pending("doomed", 3), *(pending(f"e{i}", 50) for i in range(5))]
    with pytest.raises(RuntimeError, match="engine died"):
        list(driver(eps, engine, FakeRetrievers(), concurrency=8))
    # The other episodes were cancelled with it, not left running on the engine.
    assert asyncio.run_coroutine_threadsafe(_idle(engine), loop_thread.loop).result(10) == 0


async def _idle(engine: FakeAsyncEngine) -> int:
    await asyncio.sleep(0.05)
    return engine.in_flight


def test_should_stop_starts_no_new_episode(loop_thread: LoopThread, driver: AsyncDriver) -> None:
    engine = FakeAsyncEngine(loop_thread)
    finished: list[str] = []
    results = driver(
        [pending(f"e{i}", 2) for i in range(50)],
        engine,
        FakeRetrievers(),
        concurrency=5,
        should_stop=lambda: len(finished) >= 3,
    )
    for r in results:
        finished.append(r.question_id)
    assert 3 <= len(finished) <= 3 + 5


def test_a_plain_batch_engine_is_served_in_batches(driver: AsyncDriver) -> None:
    class Counting:
        def __init__(self) -> None:
            self.batches: list[int] = []

        def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
            self.batches.append(len(requests))
            return [Generation("x", 1, 1, 0.0) for _ in requests]

    engine = Counting()
    results = list(
        driver([pending(f"e{i}", 3) for i in range(30)], engine, FakeRetrievers(), concurrency=30)
    )
    assert len(results) == 30 and sum(engine.batches) == 90
    assert max(engine.batches) > 1 and len(engine.batches) < 90


def test_async_worker_runs_two_shards_at_once_and_scores_them(
    tmp_path: Path, redis_url: str, sqlite_url: str
) -> None:
    worker = Worker(
        sqlite_url,
        redis_url,
        tmp_path / "worker.log",
        model="test/passages",
        engine="engines:passage_engine",
        args=("--driver", "async", "--shards-in-flight", "2", "--concurrency", "8"),
    )
    try:
        worker.wait_ready(timeout=120)
        assert "driver async" in worker.log() and "--pool=threads --concurrency=2" in worker.log()
        assert "512 episodes in flight (8 a shard)" in worker.log()
        args = ["--database-url", sqlite_url, "--broker-url", redis_url, "submit"]
        args += ["--dataset", "hotpotqa", "--n", "24", "--model", "test/passages"]
        args += ["--strategy", "fixed:k=0", "--strategy", "fixed:k=3", "--strategy", "mdp"]
        result = CliRunner().invoke(cli, [*args, "--shard-size", "6"])
        assert result.exit_code == 0, result.output
        run_id = int(result.output.split()[1].rstrip(":"))
        wait_for_run(sqlite_url, run_id, [worker], timeout=120)
    finally:
        worker.stop()
    with open_store(sqlite_url).session() as s:
        rows = s.scalars(select(Episode).where(Episode.run_id == run_id)).all()
        correct = {
            st: sum(bool(e.correct) for e in rows if e.strategy == st)
            for st in ("fixed:k=0", "fixed:k=3")
        }
        assert len(rows) == 72 and all(e.status == "ok" for e in rows)
        assert all(e.steps > 1 for e in rows if e.strategy == "mdp")
    # Closed-book knows nothing; retrieved passages reached the engine.
    assert correct["fixed:k=0"] == 0 and correct["fixed:k=3"] > 0
