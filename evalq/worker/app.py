"""The Celery application shared by the submitter and the workers."""

from __future__ import annotations

import re

from celery import Celery

from evalq.config import Settings

RUN_SHARD = "evalq.run_shard"


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
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        task_default_queue="evalq.default",
    )
    return app
