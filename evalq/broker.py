"""The broker: the Celery app, queue and task names, enqueueing, and reconcile.

The submitter, the client and the workers all reach Redis through this module. The broker
only carries work; the database is the truth, so whatever the broker loses is put back from
the database (``reconcile`` at worker start, ``evalq resume``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import redis
from celery import Celery

from evalq.config import Settings
from evalq.db import queries
from evalq.db.session import mask_url, open_store
from evalq.errors import UserError

log = logging.getLogger(__name__)

RUN_SHARD = "evalq.run_shard"
GENERATE_CHUNK = "evalq.generate_chunk"
# A key per queue that lives only in the broker: absent, the broker has lost everything it
# held (restarted without persistence, flushed, replaced) since work was last enqueued.
BROKER_MARK = "evalq:broker-mark:"


def queue_for(model: str) -> str:
    """The queue a model's shards go to: one queue per model, named after it."""
    return "evalq." + re.sub(r"[^A-Za-z0-9._/-]", "_", model)


def make_app(settings: Settings) -> Celery:
    """A Celery app configured for long GPU tasks that must never be lost.

    acks_late + reject_on_worker_lost: a shard is acknowledged only once it is finished,
    so a killed worker's shard goes back to the queue. Prefetch 1: a worker never holds
    a shard it is not running. JSON only: no pickle ever crosses the broker.
    """
    app = Celery("evalq", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_pool="solo",
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings.visibility_timeout_s),
        task_default_queue="evalq.default",
    )
    return app


def transport_options(visibility_timeout_s: int) -> dict[str, int]:
    """Redis transport options under which an abandoned shard comes back on time.

    A shard delivered to a worker that died sits in Redis's unacked set until a live
    worker's sweep finds it older than the visibility timeout. kombu sweeps every 10 s but
    scans only on every 10th sweep, and a scan made at worker start counts as one, so a
    shard abandoned just before then waited about 100 s more than the timeout. Every sweep
    scans here, at most half a timeout apart. The sweep's mutex, held by a worker killed
    inside a sweep, would block every sweep for kombu's 300 s; it expires sooner here.
    """
    return {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": max(1, min(10, visibility_timeout_s // 2)),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": max(5, min(60, visibility_timeout_s)),
    }


def check_broker(broker_url: str) -> None:
    """Fail fast, with one line, when the broker does not answer."""
    try:
        app = make_app(Settings(broker_url=broker_url))
        # Bounded reads too: a TLS handshake with a plain server (rediss:// to redis) waits
        # for bytes that never come.
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            "socket_timeout": 5,
            "socket_connect_timeout": 5,
        }
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
            conn.default_channel.client.ping()
    except Exception as exc:
        raise UserError(f"broker {mask_url(broker_url)} is unreachable: {exc}") from exc


def enqueue(settings: Settings, task: str, model: str, ids: Sequence[int]) -> None:
    """One Celery message per id (``task(id)``) on the model's queue, over one connection.

    Sending shards (``RUN_SHARD``) also sets the queue's broker mark, which ``reconcile``
    reads; plain generation chunks leave it alone.
    """
    app = make_app(settings)
    queue = queue_for(model)
    with app.connection_for_write() as conn, app.producer_or_acquire() as producer:
        conn.ensure_connection(max_retries=1)
        for item in ids:
            app.send_task(task, args=[item], queue=queue, producer=producer, retry=False)
    if task == RUN_SHARD:
        _mark_broker(settings.broker_url, queue)


def _redis(broker_url: str) -> redis.Redis | None:
    """A client for a Redis broker; None for any other kind of broker."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    return redis.Redis.from_url(broker_url, socket_timeout=10)


def _mark_broker(broker_url: str, queue: str) -> bool:
    """Set the queue's broker mark; True when it was absent (the broker lost its work)."""
    client = _redis(broker_url)
    if client is None:
        return False
    with client:
        return bool(client.set(BROKER_MARK + queue, "1", nx=True))


def reconcile(settings: Settings, *, queue: str, node: str) -> int:
    """At worker start: re-enqueue on ``queue`` what the broker no longer carries.

    Two cases, both decided by the database. When the broker mark is gone, the broker lost
    its queues, so every queued or running shard of an active run on this queue goes back.
    Otherwise only the shards still "running" for this very node are re-enqueued: a
    worker starting under a name has no shard running yet, so those were left by its
    previous life (a crash, a kill). Anything else that died waits for the visibility
    timeout or ``evalq resume``. Returns the number of shards enqueued.
    """
    lost = _mark_broker(settings.broker_url, queue)
    store = open_store(settings.database_url)
    by_model: dict[str, list[int]] = {}
    with store.session() as s:
        for shard in queries.orphaned_shards(s, queue_for, queue, None if lost else node):
            by_model.setdefault(shard.run.model, []).append(shard.id)
    for model, shard_ids in by_model.items():
        enqueue(settings, RUN_SHARD, model, shard_ids)
    n = sum(len(ids) for ids in by_model.values())
    if n:
        why = "the broker lost its queues" if lost else f"left running by {node}"
        log.warning("reconcile: %d shards re-enqueued on %s (%s)", n, queue, why)
    return n


def reconcile_on_start(settings: Settings, queue: str, node: str) -> None:
    """``reconcile`` for a starting worker: a failure is logged, never stops the worker."""
    try:
        reconcile(settings, queue=queue, node=node)
    except Exception as exc:  # the worker still serves; resume covers what this missed
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.warning("reconcile on start skipped (%s); `evalq resume RUN` re-enqueues", reason)
