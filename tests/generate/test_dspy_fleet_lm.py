"""DSPy through FleetLM: ``dspy.Evaluate`` threads become batches, each call gets its answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from support import Worker

import evalq
from evalq.client import Client
from evalq.db.generate import GenItem
from evalq.db.session import open_store

dspy = pytest.importorskip("dspy")
from evalq.integrations.dspy import FleetLM  # noqa: E402


def test_evaluate_with_16_threads_batches_calls_and_keeps_answers_apart(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    batches = tmp_path / "batches.txt"
    open_store(sqlite_url)
    worker = Worker(
        sqlite_url,
        redis_url,
        tmp_path / "w.log",
        model="test/echo",
        engine="engines:echo_engine",
        # A slow engine: calls arriving while a batch is out gather for the next one.
        env={"EVALQ_TEST_BATCH_LOG": str(batches), "EVALQ_TEST_DELAY": "0.2"},
    )
    try:
        worker.wait_ready()
        client = Client("test/echo", database_url=sqlite_url, broker_url=redis_url, poll_s=0.05)
        lm = FleetLM("test/echo", client=client, cache=False, max_tokens=32)
        devset = [
            dspy.Example(question=f"what is item {i}?", answer=f"WHAT IS ITEM {i}?").with_inputs(
                "question"
            )
            for i in range(64)
        ]

        def exact(example: object, prediction: object, trace: object = None) -> bool:
            return bool(example.answer == prediction.answer)  # type: ignore[attr-defined]

        with dspy.context(lm=lm):
            result = dspy.Evaluate(
                devset=devset, metric=exact, num_threads=16, display_progress=False
            )(dspy.Predict("question -> answer"))
    finally:
        worker.stop()
    assert result.score == 100.0, "every thread got the answer to its own question"
    sizes = [int(line) for line in batches.read_text().split()]
    assert sum(sizes) == 64, "each call generated exactly once"
    assert max(sizes) > 1, f"calls were batched: {sizes}"


def test_batch_generate_is_the_seeds_call_with_outputs_in_input_order(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """The seed's ``vLLMOfflineMultiGPU(...).batch_generate(prompts)``, as ``FleetLM``."""
    open_store(sqlite_url)
    worker = Worker(
        sqlite_url, redis_url, tmp_path / "w.log", model="test/echo", engine="engines:echo_engine"
    )
    # Several chunks, so that order is kept across tasks and not only within one batch.
    client = Client(
        "test/echo", database_url=sqlite_url, broker_url=redis_url, chunk_size=7, poll_s=0.05
    )
    lm = evalq.FleetLM("test/echo", client=client, cache=False, max_tokens=48, temperature=0.3)
    prompts = [f"prompt number {i}" for i in range(30)]
    try:
        worker.wait_ready()
        outputs = lm.batch_generate(prompts)
        overridden = lm.batch_generate(["once more"], max_tokens=5)
    finally:
        worker.stop()
    assert outputs == [f"echo: {p}" for p in prompts]
    assert overridden == ["echo: once more"]
    with open_store(sqlite_url).session() as s:
        sampling = [
            i.sampling for i in s.scalars(select(GenItem).order_by(GenItem.job_id, GenItem.index))
        ]
    assert {(x["max_tokens"], x["temperature"]) for x in sampling[:30]} == {(48, 0.3)}
    assert (sampling[30]["max_tokens"], sampling[30]["temperature"]) == (5, 0.3)
