"""A worker process: open the store, build the engine once, consume the model's queue."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import asdict
from typing import Any

from evalq.broker import RUN_SHARD, make_app, queue_for, reconcile_on_start
from evalq.config import EngineSettings, Settings
from evalq.db.session import mask_url, open_store
from evalq.errors import UserError
from evalq.models.async_engine import AsyncEngine
from evalq.models.base import Engine
from evalq.models.registry import load_engine
from evalq.rag.async_runner import AsyncDriver
from evalq.rag.runner import Driver, run_episodes
from evalq.worker.generate import register_generate_task
from evalq.worker.heartbeat import DEFAULT_INTERVAL_S, start_heartbeat
from evalq.worker.metrics import meter_engine, observe_driver, start_metrics_server
from evalq.worker.shard import ShardExecutor

log = logging.getLogger(__name__)

# vLLM's AsyncLLM: the engine the async driver is built for.
ASYNC_VLLM = "evalq.models.vllm_async:VLLMAsyncEngine"
# Shards at once: while one shard's last (longest) episodes finish, the next ones' episodes
# already fill the batch, so the engine never idles between shards; the episodes under way
# are bounded for the worker as a whole (episodes_in_flight), so small shards fill it too.
ASYNC_SHARDS_IN_FLIGHT = 4
DEFAULT_EPISODES_IN_FLIGHT = 512


def choose_driver(name: str, engine: Engine, episodes: int | None = None) -> Driver:
    """The driver ``--driver`` names; ``auto`` is async exactly when the engine is.

    The async driver keeps at most ``episodes`` under way across its shards (unbounded when
    ``None``).

    Raises:
        UserError: ``name`` is not auto, async or batch.
    """
    if name == "auto":
        name = "async" if isinstance(engine, AsyncEngine) else "batch"
    if name == "async":
        return AsyncDriver(max_in_flight=episodes)
    if name == "batch":
        return run_episodes
    raise UserError(f"unknown --driver {name!r}: choose auto, async or batch")


def pool_args(driver: Driver, shards_in_flight: int | None) -> list[str]:
    """Celery pool flags: solo for one shard at a time, threads for several.

    Several shards share one engine only through the async driver (its engine serves
    concurrent callers); acks_late holds for every pool, so a killed worker's shards
    all go back to the queue.

    Raises:
        UserError: several shards at once were asked of the batch driver.
    """
    is_async = isinstance(driver, AsyncDriver)
    n = shards_in_flight or (ASYNC_SHARDS_IN_FLIGHT if is_async else 1)
    if n > 1 and not is_async:
        raise UserError("--shards-in-flight above 1 needs --driver async")
    return (
        ["--pool=solo", "--concurrency=1"] if n == 1 else ["--pool=threads", f"--concurrency={n}"]
    )


def episodes_in_flight(engine: Engine) -> int:
    """Episodes a worker keeps under way, over all its shards, unless told otherwise.

    Twice the sequences the engine batches: an episode is away from the engine between its
    requests (its search, its next prompt), so the engine only stays full with more
    episodes under way than it runs. Engines that do not say how many sequences they batch
    get ``DEFAULT_EPISODES_IN_FLIGHT``.
    """
    seqs = getattr(engine, "max_num_seqs", None)
    if not isinstance(seqs, int) or seqs < 1:
        return DEFAULT_EPISODES_IN_FLIGHT
    return 2 * seqs


def serve(
    settings: Settings,
    engine_settings: EngineSettings,
    *,
    model: str,
    node: str,
    queue: str | None,
    concurrency: int | None,
    episodes: int | None = None,
    engine_factory: str | None = None,
    driver: str = "auto",
    shards_in_flight: int | None = None,
    metrics_port: int | None = None,
    heartbeat_interval: float = DEFAULT_INTERVAL_S,
) -> None:
    """Run until stopped. The engine is built here, once, before any shard is taken.

    Without a factory the engine is vLLM: ``AsyncLLM`` unless ``driver`` is ``batch``.
    """
    # Celery reports "ready" and each task at INFO; operators read these in the log.
    logging.getLogger().setLevel(logging.INFO)
    store = open_store(settings.database_url)
    queue_name = queue or queue_for(model)
    if metrics_port is not None:
        start_metrics_server(metrics_port)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    beat = start_heartbeat(
        store,
        node=node,
        host=socket.gethostname(),
        gpus=gpus,
        model=model,
        queue=queue_name,
        interval_s=heartbeat_interval,
    )
    if engine_factory is None and driver != "batch":
        engine_factory = ASYNC_VLLM
    engine = meter_engine(load_engine(engine_settings, engine_factory))
    if episodes is None:
        episodes = episodes_in_flight(engine)
    chosen = choose_driver(driver, engine, episodes)
    pool = pool_args(chosen, shards_in_flight)
    if concurrency is None:
        concurrency = episodes  # no bound per shard beyond the worker's
    observed = observe_driver(chosen, lambda _: beat.add_episodes(1))
    executor = ShardExecutor(store, engine, worker=node, concurrency=concurrency, driver=observed)
    app = make_app(settings)
    beat.attach(app)

    @app.task(name=RUN_SHARD)  # type: ignore[untyped-decorator]
    def run_shard(shard_id: int) -> dict[str, Any]:
        return asdict(executor.run(int(shard_id)))

    # Plain batch generation (evalq.client) on the same engine and queue.
    register_generate_task(app, store, engine, node)

    reconcile_on_start(settings, queue_name, node)  # re-enqueue what the broker lost
    log.info(
        "worker %s: model %s, queue %s, driver %s, %s, %d episodes in flight (%d a shard), "
        "store %s, broker %s",
        node,
        model,
        queue_name,
        "async" if isinstance(chosen, AsyncDriver) else "batch",
        " ".join(pool),
        episodes,
        concurrency,
        mask_url(settings.database_url),
        mask_url(settings.broker_url),
    )
    try:
        app.worker_main(
            [
                "worker",
                *pool,
                f"--queues={queue_name}",
                f"--hostname={node}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        beat.stop()
        close = getattr(engine, "close", None)
        if callable(close):
            close()
