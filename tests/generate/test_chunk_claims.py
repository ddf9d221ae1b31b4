"""Chunks in the store: one live owner at a time, a dead owner's chunk handed on, outputs once."""

from __future__ import annotations

import time

from evalq.db import generate as gen
from evalq.db.session import open_store


def _job(db_url: str, n: int = 5, lease_s: float = 0.5) -> tuple[int, list[int]]:
    store = open_store(db_url)
    items = [
        gen.NewItem([{"role": "user", "content": f"p{i}"}], {"max_tokens": 4}) for i in range(n)
    ]
    with store.session() as s:
        return gen.create_job(s, model="test/m", items=items, chunk_size=2, lease_s=lease_s)


def test_a_live_chunk_has_one_owner_and_a_dead_owners_chunk_is_handed_on(db_url: str) -> None:
    job_id, chunks = _job(db_url)
    assert len(chunks) == 3, "5 prompts in chunks of 2"
    store = open_store(db_url)
    with store.session() as s:
        assert gen.claim_chunk(s, chunks[0], "a") is not None
    with store.session() as s:
        assert gen.claim_chunk(s, chunks[0], "b") is None, "a beats: b must not take it"
        assert gen.abandoned_chunks(s, job_id) == []
    time.sleep(0.7)  # a stops beating for longer than the lease
    with store.session() as s:
        assert gen.abandoned_chunks(s, job_id) == [chunks[0]]
    with store.session() as s:
        claimed = gen.claim_chunk(s, chunks[0], "b")
        assert claimed is not None and claimed.attempts == 2


def test_outputs_are_stored_once_and_the_last_chunk_finishes_the_job(db_url: str) -> None:
    job_id, chunks = _job(db_url, n=3)
    store = open_store(db_url)
    for chunk_id, text in ((chunks[0], "first"), (chunks[0], "second"), (chunks[1], "x")):
        with store.session() as s:
            chunk = gen.claim_chunk(s, chunk_id, "a") or s.get(gen.GenChunk, chunk_id)
            assert chunk is not None
            outs = [gen.ItemOutput(i, f"{text}{i}", 1, 1) for i in range(chunk.start, chunk.stop)]
            gen.store_outputs(s, job_id, outs, "a")
            gen.finish_chunk(s, chunk_id)
    with store.session() as s:
        assert [i.output for i in gen.job_outputs(s, job_id)] == ["first0", "first1", "x2"]
        progress = gen.job_progress(s, job_id)
        assert (progress.status, progress.done, progress.n) == ("done", 3, 3)
        assert gen.claim_chunk(s, chunks[0], "b") is None, "a done chunk is never run again"


def test_a_prompt_beyond_the_context_fails_its_chunk_with_the_reason(db_url: str) -> None:
    from engines import ShortContextEngine

    from evalq.worker.generate import ChunkGenerator

    store = open_store(db_url)
    long_prompt = " ".join(["word"] * 50)
    items = [
        gen.NewItem([{"role": "user", "content": text}], {"max_tokens": 4})
        for text in ("short one", long_prompt)
    ]
    with store.session() as s:
        job_id, (chunk_id,) = gen.create_job(
            s, model="test/m", items=items, chunk_size=2, lease_s=5.0
        )
    report = ChunkGenerator(store, ShortContextEngine(context=20), worker="w").run(chunk_id)
    assert report.status == "failed"
    with store.session() as s:
        chunk = s.get(gen.GenChunk, chunk_id)
        assert chunk is not None and chunk.error is not None
        assert chunk.error.startswith("item 1: prompt of 50 tokens"), chunk.error
        assert all(not i.output for i in gen.job_outputs(s, job_id)), "nothing stored as ''"
