"""A worker process: open the store, build the engine once, consume the model's queue."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from evalq.config import EngineSettings, Settings
from evalq.db.session import mask_url, open_store
from evalq.models.registry import load_engine
from evalq.worker.app import RUN_SHARD, make_app, queue_for
from evalq.worker.shard import ShardExecutor

log = logging.getLogger(__name__)


def serve(
    settings: Settings,
    engine_settings: EngineSettings,
    *,
    model: str,
    node: str,
    queue: str | None,
    concurrency: int,
    engine_factory: str | None = None,
) -> None:
    """Run until stopped. The engine is built here, once, before any shard is taken."""
    # Celery reports "ready" and each task at INFO; operators read these in the log.
    logging.getLogger().setLevel(logging.INFO)
    store = open_store(settings.database_url)
    engine = load_engine(engine_settings, engine_factory)
    executor = ShardExecutor(store, engine, worker=node, concurrency=concurrency)
    app = make_app(settings)

    @app.task(name=RUN_SHARD)  # type: ignore[untyped-decorator]
    def run_shard(shard_id: int) -> dict[str, Any]:
        return asdict(executor.run(int(shard_id)))

    queue_name = queue or queue_for(model)
    log.info(
        "worker %s: model %s, queue %s, store %s, broker %s",
        node,
        model,
        queue_name,
        mask_url(settings.database_url),
        mask_url(settings.broker_url),
    )
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--queues={queue_name}",
            f"--hostname={node}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )
