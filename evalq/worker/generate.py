"""Plain batch generation on a worker: the ``evalq.generate_chunk`` task.

A chunk's prompts go to the worker's one engine as one batch. The chunk is claimed in the
database first and kept alive by a heartbeat while the engine works, so a chunk whose
worker dies is handed on after the job's lease; outputs are written idempotently, so a
chunk generated twice stores each output once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from celery import Celery

from evalq.broker import GENERATE_CHUNK
from evalq.db import generate as gen
from evalq.db.session import Store
from evalq.models.base import Engine, GenerationRequest

log = logging.getLogger(__name__)

# Sampling keys a prompt may carry: the fields of GenerationRequest besides its messages.
SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "seed", "ignore_eos")


@dataclass(frozen=True)
class ChunkReport:
    """What one task did: ``done``, ``skipped`` (finished or held elsewhere) or ``failed``."""

    chunk_id: int
    status: str
    generated: int


def to_request(messages: Sequence[dict[str, str]], sampling: dict[str, Any]) -> GenerationRequest:
    """The engine request for a stored item."""
    return GenerationRequest(
        messages=tuple(dict(m) for m in messages),
        **{k: v for k, v in sampling.items() if k in SAMPLING_KEYS and v is not None},
    )


class ChunkGenerator:
    """Generates chunks with one engine, writing every output to the store."""

    def __init__(self, store: Store, engine: Engine, *, worker: str) -> None:
        self.store = store
        self.engine = engine
        self.worker = worker

    def run(self, chunk_id: int) -> ChunkReport:
        """Claim the chunk, generate its pending items in one batch, store them."""
        with self.store.session() as s:
            chunk = gen.claim_chunk(s, chunk_id, self.worker)
            if chunk is None:
                return ChunkReport(chunk_id, "skipped", 0)
            job_id = chunk.job_id
            lease_s = gen.get_job(s, job_id).lease_s
            items = [
                (it.index, to_request(it.messages, it.sampling))
                for it in gen.pending_items(s, chunk)
            ]
        try:
            with self._heartbeat(chunk_id, lease_s):
                generations = self.engine.generate([r for _, r in items]) if items else []
        except Exception as exc:  # a bad prompt or a broken engine: recorded, never lost
            log.exception("chunk %d failed", chunk_id)
            with self.store.session() as s:
                gen.fail_chunk(s, chunk_id, f"{type(exc).__name__}: {exc}")
            return ChunkReport(chunk_id, "failed", 0)
        # An item the engine refused (a prompt beyond the model's context) has no output: its
        # chunk fails with the reason, as a bad prompt always did, rather than store ''.
        refused = [(index, g.error) for (index, _), g in zip(items, generations, strict=True)]
        refused = [(index, error) for index, error in refused if error is not None]
        if refused:
            index, error = refused[0]
            with self.store.session() as s:
                gen.fail_chunk(s, chunk_id, f"item {index}: {error}")
            return ChunkReport(chunk_id, "failed", 0)
        outputs = [
            gen.ItemOutput(index, g.text, g.prompt_tokens, g.completion_tokens)
            for (index, _), g in zip(items, generations, strict=True)
        ]
        with self.store.session() as s:
            gen.store_outputs(s, job_id, outputs, self.worker)
            gen.finish_chunk(s, chunk_id)
        return ChunkReport(chunk_id, "done", len(outputs))

    @contextmanager
    def _heartbeat(self, chunk_id: int, lease_s: float) -> Iterator[None]:
        """Beat four times a lease while the engine works, so the chunk stays ours."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(max(lease_s / 4, 0.2)):
                try:
                    with self.store.session() as s:
                        gen.beat(s, chunk_id, self.worker)
                except Exception as exc:  # a missed beat only risks a duplicate, never a loss
                    log.warning("heartbeat of chunk %d failed: %s", chunk_id, exc)

        thread = threading.Thread(target=loop, name=f"heartbeat-{chunk_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def register_generate_task(app: Celery, store: Store, engine: Engine, node: str) -> None:
    """Add ``evalq.generate_chunk`` to a worker's app; it shares the worker's one engine."""
    generator = ChunkGenerator(store, engine, worker=node)

    @app.task(name=GENERATE_CHUNK)  # type: ignore[untyped-decorator]
    def generate_chunk(chunk_id: int) -> dict[str, Any]:
        return asdict(generator.run(int(chunk_id)))
