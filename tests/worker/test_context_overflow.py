"""An episode whose prompt outgrows the model's context fails alone; its shard goes on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from engines import ShortContextEngine
from sqlalchemy import select

from evalq.cli.main import cli
from evalq.db.models import Episode, Shard
from evalq.db.session import open_store
from evalq.models.base import Generation, GenerationRequest
from evalq.models.registry import tiny_model_dir
from evalq.models.vllm import ChatRenderer, TokenCodec, context_error
from evalq.rag.async_runner import AsyncDriver
from evalq.rag.episode import EpisodeGenerator, EpisodeResult
from evalq.rag.retrievers import Hit
from evalq.rag.runner import Driver, PendingEpisode, run_episodes
from evalq.worker.shard import ShardExecutor

CONTEXT = 400
LONG = " ".join(["word"] * 600)  # a question that alone outgrows the context


@pytest.fixture(params=["batch", "async"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    if request.param == "batch":
        yield run_episodes
        return
    d = AsyncDriver()
    yield d
    d.close()


def _questions(path: Path) -> Path:
    rows = [{"id": f"q{i}", "question": f"What is {i} plus one?", "answer": "1"} for i in range(5)]
    rows.insert(2, {"id": "long", "question": LONG, "answer": "1"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_over_long_prompt_is_an_error_episode_and_the_rest_are_ok(
    tmp_path: Path, sqlite_url: str, redis_url: str, driver: Driver
) -> None:
    dataset = _questions(tmp_path / "questions.jsonl")
    args = ["--database-url", sqlite_url, "--broker-url", redis_url, "submit"]
    args += ["--dataset", f"jsonl:{dataset}", "--n", "6", "--model", "test/short"]
    args += ["--strategy", "fixed:k=0", "--shard-size", "6"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    run_id = int(result.output.split()[1].rstrip(":"))

    store = open_store(sqlite_url)
    with store.session() as s:
        (shard_id,) = s.scalars(select(Shard.id).where(Shard.run_id == run_id))
    executor = ShardExecutor(
        store, ShortContextEngine(CONTEXT), worker="test", concurrency=8, driver=driver
    )
    outcome = executor.run(shard_id)

    assert outcome.status == "done" and outcome.stored == 6
    with store.session() as s:
        episodes = {e.question_id: e for e in s.scalars(select(Episode))}
        shard = s.get(Shard, shard_id)
        assert shard is not None and shard.status == "done"
    long = episodes.pop("long")
    assert long.status == "error"
    assert long.error is not None and "exceeds the model's context of 400" in long.error
    assert long.error.startswith("prompt of ")
    assert {e.status for e in episodes.values()} == {"ok"} and len(episodes) == 5


def test_a_refused_request_ends_only_its_episode_in_both_drivers(driver: Driver) -> None:
    # The refusal is the engine's per-request answer; an episode never sees it as a reply.
    seen: list[str] = []

    def episode(name: str, words: int) -> EpisodeGenerator:
        content = " ".join([name] * words)
        for _ in range(3):
            gen: Generation = yield GenerationRequest(
                ({"role": "user", "content": content},), max_tokens=10
            )
            seen.append(gen.text)
            content += " more" * 20
        return EpisodeResult(name, "s", 0, "ok")

    def pending(name: str, words: int) -> PendingEpisode:
        return PendingEpisode(
            episode(name, words),
            lambda reason: EpisodeResult(name, "s", 0, "error", error=reason),
        )

    # "grows" fits at first and outgrows the 100-token context on its third step.
    eps = [pending("short", 5), pending("grows", 60), pending("huge", 500)]
    got = {
        r.question_id: r
        for r in driver(
            eps, ShortContextEngine(100), _NoRetrievers(), concurrency=3, should_stop=lambda: False
        )
    }
    assert got["short"].status == "ok"
    assert got["grows"].status == "error" and got["grows"].error == (
        "prompt of 100 tokens plus 10 to generate exceeds the model's context of 100"
    )
    assert got["huge"].error == "prompt of 500 tokens exceeds the model's context of 100"
    assert "" not in seen and len(seen) == 3 + 2


class _NoRetrievers:
    def search(
        self, corpus: str, queries: list[str], k: int, exclude: list[frozenset[str]]
    ) -> list[list[Hit]]:
        raise AssertionError("no retrieval here")


def test_a_prompt_must_fit_with_every_token_it_may_generate() -> None:
    assert context_error(8_128, 64, 8_192) is None  # exactly full
    assert context_error(10, 64, None) is None  # an engine that does not say
    assert context_error(8_129, 64, 8_192) == (
        "prompt of 8,129 tokens plus 64 to generate exceeds the model's context of 8,192"
    )
    assert context_error(9_120, 64, 8_192) == (
        "prompt of 9,120 tokens exceeds the model's context of 8,192"
    )


def test_without_a_fast_codec_prompts_are_counted_as_the_codec_counts_them() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir())
    codec = TokenCodec.of(tokenizer)
    assert codec is not None
    renderer = ChatRenderer(tokenizer)
    prompts = [
        renderer.render(({"role": "user", "content": f"Question {i}: ünïcode {i}"},))
        for i in range(5)
    ]
    assert renderer.encode(prompts) == codec.encode(prompts)
