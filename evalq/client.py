"""The Python API for plain batch generation on the fleet: ``Client(...).batch_generate``.

Prompts become a generation job in the database, cut into chunks; each chunk is one Celery
task on the model's queue, taken by whichever worker of that model is free. The client
polls the database and returns the outputs in input order. A worker killed mid-chunk
loses nothing: its chunk stops beating, and after the job's lease the waiting client
hands it to another worker (``evalq generate --resume JOB`` does the same after the
client itself is gone).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evalq.broker import GENERATE_CHUNK, enqueue
from evalq.config import Settings
from evalq.db import generate as gen
from evalq.db.session import Store, mask_url, open_store
from evalq.errors import UserError
from evalq.models.base import GenerationRequest
from evalq.worker.generate import SAMPLING_KEYS

# A prompt: plain text (sent as one user message) or chat messages.
Prompt = str | Sequence[Mapping[str, str]]

DEFAULT_CHUNK_SIZE = 32
DEFAULT_LEASE_S = 60.0
DEFAULT_POLL_S = 0.2
_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(GenerationRequest) if f.name != "messages"
}


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    """Chat messages for a prompt; plain text becomes one user message.

    Raises:
        UserError: the prompt is neither text nor a list of role/content messages.
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = []
    for m in prompt:
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise UserError(f"a prompt must be text or role/content messages, got {prompt!r:.80}")
        messages.append({"role": str(m.get("role", "user")), "content": m["content"]})
    if not messages:
        raise UserError("a prompt has no messages")
    return messages


def check_sampling(sampling: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling settings completed with the engine's defaults.

    Raises:
        UserError: an unknown key or an out-of-range value.
    """
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise UserError(
            f"unknown sampling option {unknown[0]!r}: choose {', '.join(SAMPLING_KEYS)}"
        )
    out = {**_DEFAULTS, **{k: v for k, v in sampling.items() if v is not None}}
    if not isinstance(out["max_tokens"], int) or out["max_tokens"] < 1:
        raise UserError(f"max_tokens must be a positive integer, got {out['max_tokens']!r}")
    if float(out["temperature"]) < 0:
        raise UserError(f"temperature must be at least 0, got {out['temperature']}")
    if not 0 < float(out["top_p"]) <= 1:
        raise UserError(f"top_p must be in (0, 1], got {out['top_p']}")
    return out


class Client:
    """Submits generation jobs to the fleet and waits for their outputs.

    Args:
        model: The default model; its workers' queue gets the prompts.
        database_url: The store (default: ``EVALQ_DATABASE_URL`` or the embedded SQLite).
        broker_url: The broker (default: ``EVALQ_BROKER_URL`` or local Redis).
        chunk_size: Prompts per task: the batch one worker's engine gets at once.
        lease_s: A chunk whose worker stops beating for this long is handed to another.
        poll_s: How often a waiting client reads the database.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        database_url: str | None = None,
        broker_url: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        lease_s: float = DEFAULT_LEASE_S,
        poll_s: float = DEFAULT_POLL_S,
        settings: Settings | None = None,
    ) -> None:
        if chunk_size < 1:
            raise UserError(f"chunk_size must be at least 1, got {chunk_size}")
        if lease_s <= 0 or poll_s <= 0:
            raise UserError("lease_s and poll_s must be positive")
        self.model = model
        self.settings = settings or Settings.from_env(
            database_url=database_url, broker_url=broker_url
        )
        self.chunk_size = chunk_size
        self.lease_s = lease_s
        self.poll_s = poll_s
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        """The database, opened (and migrated) on first use."""
        if self._store is None:
            self._store = open_store(self.settings.database_url)
        return self._store

    def batch_generate(
        self,
        prompts: Sequence[Prompt],
        *,
        model: str | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> list[str]:
        """Generate one completion per prompt on the fleet; outputs in input order.

        Args:
            prompts: Texts (each sent as one user message) or chat message lists.
            model: The model to use (default: the client's).
            timeout: Seconds to wait before giving up (the job goes on; see ``wait``).
            **sampling: ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``ignore_eos``.

        Raises:
            UserError: bad input, an unreachable broker, or a chunk that failed on a worker.
            TimeoutError: ``timeout`` passed first.
        """
        if not prompts:
            return []
        job_id = self.submit(prompts, model=model, **sampling)
        return self.wait(job_id, timeout=timeout)

    def submit(
        self,
        prompts: Sequence[Prompt],
        *,
        model: str | None = None,
        keys: Sequence[str | None] | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> int:
        """Store a job for ``prompts`` and enqueue its chunks; returns the job id."""
        checked = check_sampling(sampling)
        if keys is not None and len(keys) != len(prompts):
            raise UserError(f"{len(keys)} keys for {len(prompts)} prompts")
        items = [
            gen.NewItem(as_messages(p), checked, None if keys is None else keys[i])
            for i, p in enumerate(prompts)
        ]
        return self.submit_items(items, model=model, name=name)

    def submit_items(
        self, items: Sequence[gen.NewItem], *, model: str | None = None, name: str | None = None
    ) -> int:
        """Store a job whose items each carry their own sampling; returns the job id.

        The job and its chunks are written in one transaction; if enqueueing then fails
        the job is deleted again, so a failed submit leaves nothing half-made.
        """
        from evalq.broker import check_broker

        chosen = model or self.model
        if not chosen:
            raise UserError("name a model: Client(model=...) or batch_generate(..., model=...)")
        if not items:
            raise UserError("no prompts to generate")
        check_broker(self.settings.broker_url)
        with self.store.session() as s:
            job_id, chunk_ids = gen.create_job(
                s,
                model=chosen,
                items=items,
                chunk_size=self.chunk_size,
                lease_s=self.lease_s,
                name=name,
            )
        try:
            enqueue(self.settings, GENERATE_CHUNK, chosen, chunk_ids)
        except Exception as exc:
            with self.store.session() as s:
                gen.delete_job(s, job_id)
            raise UserError(
                f"could not enqueue generation on {mask_url(self.settings.broker_url)}: {exc}"
            ) from exc
        return job_id

    def wait(
        self,
        job_id: int,
        *,
        timeout: float | None = None,
        on_progress: Callable[[gen.JobProgress], None] | None = None,
    ) -> list[str]:
        """Until every item of the job has its output; the outputs in input order.

        While waiting, chunks abandoned by a dead worker (no heartbeat for the job's
        lease) are queued again, so a killed worker costs a lease, never an output.

        Raises:
            UserError: a chunk failed on its worker (``evalq generate --resume`` retries).
            TimeoutError: ``timeout`` passed first.
        """
        return [
            item.output
            for item in self.wait_items(job_id, timeout=timeout, on_progress=on_progress)
        ]

    def wait_items(
        self,
        job_id: int,
        *,
        timeout: float | None = None,
        on_progress: Callable[[gen.JobProgress], None] | None = None,
    ) -> list[gen.StoredItem]:
        """As ``wait``, with each item's key and token counts."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.store.session() as s:
            job = gen.get_job(s, job_id)
            model, lease_s = job.model, job.lease_s
        next_check = time.monotonic() + lease_s / 2
        while True:
            with self.store.session() as s:
                progress = gen.job_progress(s, job_id)
            if on_progress is not None:
                on_progress(progress)
            if progress.done >= progress.n:
                with self.store.session() as s:
                    return gen.job_outputs(s, job_id)
            if progress.failed_chunks:
                raise UserError(
                    f"generation job {job_id}: {progress.failed_chunks} chunk(s) failed "
                    f"({progress.error}); `evalq generate --resume {job_id}` retries them"
                )
            if progress.status == "cancelled":
                raise UserError(f"generation job {job_id} was cancelled")
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise TimeoutError(
                    f"generation job {job_id}: {progress.done}/{progress.n} after {timeout} s"
                )
            if now >= next_check:
                self._requeue_abandoned(job_id, model)
                next_check = now + lease_s / 2
            time.sleep(self.poll_s)

    def _requeue_abandoned(self, job_id: int, model: str) -> None:
        with self.store.session() as s:
            chunk_ids = gen.abandoned_chunks(s, job_id)
        if chunk_ids:
            enqueue(self.settings, GENERATE_CHUNK, model, chunk_ids)

    def resume(self, job_id: int) -> int:
        """Re-enqueue every unfinished chunk of a job (failed ones too); returns how many.

        Chunks alive in a worker's hands are left to it; stored outputs are never redone.
        """
        from evalq.broker import check_broker

        check_broker(self.settings.broker_url)
        with self.store.session() as s:
            model = gen.get_job(s, job_id).model
            chunk_ids = gen.reopen_chunks(s, job_id)
        if chunk_ids:
            enqueue(self.settings, GENERATE_CHUNK, model, chunk_ids)
        return len(chunk_ids)
