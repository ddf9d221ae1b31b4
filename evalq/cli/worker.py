"""``evalq worker``: one process, one GPU (or a TP group), one vLLM engine, one model queue."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import click

from evalq.config import Settings

F = TypeVar("F", bound=Callable[..., Any])

# Engine and driver options, shared with ``evalq fleet`` (which forwards them to each worker):
# parameter name -> (flag, click keyword arguments). Boolean pairs are "--x/--no-x" flags.
WORKER_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "tokenizer": ("--tokenizer", {"help": "Tokenizer folder, if not the model's."}),
    "load_format": ("--load-format", {"help": "vLLM load format (dummy: random weights)."}),
    "dtype": ("--dtype", {"help": "auto, bfloat16, float16, ..."}),
    "quantization": ("--quantization", {"help": "vLLM quantization method (awq, fp8, ...)."}),
    "max_model_len": ("--max-model-len", {"type": int, "help": "Context length limit."}),
    "max_num_seqs": ("--max-num-seqs", {"type": int, "help": "Sequences per engine step."}),
    "max_num_batched_tokens": (
        "--max-num-batched-tokens",
        {"type": int, "help": "Tokens per engine step."},
    ),
    "gpu_memory_utilization": (
        "--gpu-memory-utilization",
        {"type": float, "help": "Fraction of GPU memory."},
    ),
    "scheduling_policy": (
        "--scheduling-policy",
        {
            "type": click.Choice(["fcfs", "priority"]),
            "help": "fcfs: requests in arrival order; priority: episodes started first are "
            "served first (async driver).  [default: fcfs]",
        },
    ),
    "enforce_eager": ("--enforce-eager/--no-enforce-eager", {"help": "Skip graphs/compile."}),
    "prefix_caching": ("--prefix-caching/--no-prefix-caching", {"help": "vLLM prefix caching."}),
    "episodes_in_flight": (
        "--episodes-in-flight",
        {
            "type": int,
            "help": "Episodes under way in the worker, over all its shards.  [default: twice "
            "the engine's batch (max_num_seqs); 512 where the engine does not say]",
        },
    ),
    "concurrency": (
        "--concurrency",
        {
            "type": int,
            "help": "Episodes in flight per shard.  [default: no bound beyond "
            "--episodes-in-flight]",
        },
    ),
    "driver": (
        "--driver",
        {
            "type": click.Choice(["auto", "async", "batch"]),
            "help": "async: each episode at its own pace (AsyncLLM); batch: step-synchronous "
            "batches (LLM.generate). auto: async for vLLM and asynchronous engines.",
        },
    ),
    "shards_in_flight": (
        "--shards-in-flight",
        {
            "type": int,
            "help": "Shards run at once, so one shard's tail overlaps the next one's start "
            "(async driver only).  [default: 4 with async, 1 with batch]",
        },
    ),
    "engine_factory": (
        "--engine",
        {
            "metavar": "MODULE:CALLABLE",
            "help": "Engine factory taking EngineSettings (default: vLLM).",
        },
    ),
}


def worker_options(func: F) -> F:
    """Decorate a command with every engine and driver option (all default to None)."""
    for name, (flag, kwargs) in reversed(WORKER_OPTIONS.items()):
        func = click.option(flag, name, default=None, **kwargs)(func)
    return func


def worker_argv(options: dict[str, Any]) -> list[str]:
    """The ``evalq worker`` flags that reproduce the given (non-None) option values."""
    argv: list[str] = []
    for name, value in options.items():
        if value is None or name not in WORKER_OPTIONS:
            continue
        flag = WORKER_OPTIONS[name][0]
        if "/" in flag:
            on, off = flag.split("/")
            argv.append(on if value else off)
        else:
            argv += [flag, str(value)]
    return argv


@click.command("worker")
@click.option(
    "--model",
    required=True,
    help="Stored model name (evalq models list), folder, HF id, or evalq/tiny-random (random).",
)
@click.option("--gpus", default="0", show_default=True, help="CUDA_VISIBLE_DEVICES, e.g. 0 or 0,1.")
@click.option("--tensor-parallel-size", type=int, default=None, help="GPUs per engine.")
@click.option("--queue", default=None, help="Queue to consume (default: the model's queue).")
@click.option("--name", default=None, help="Worker node name (default gpu<ids>@<host>).")
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    envvar="EVALQ_METRICS_PORT",
    help="Serve Prometheus metrics on this port at /metrics (default: none).",
)
@click.option(
    "--heartbeat-interval",
    type=float,
    default=10.0,
    show_default=True,
    envvar="EVALQ_HEARTBEAT_INTERVAL",
    help="Seconds between heartbeats; 3 missed ones mark the worker stale.",
)
@worker_options
@click.pass_obj
def worker(
    settings: Settings,
    /,
    model: str,
    gpus: str,
    tensor_parallel_size: int | None,
    queue: str | None,
    name: str | None,
    metrics_port: int | None,
    heartbeat_interval: float,
    **options: Any,
) -> None:
    """Serve a model's shards until stopped (SIGTERM finishes the current shard first)."""
    # Before anything imports torch: the engine must only ever see its own GPUs.
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    from evalq.errors import UserError
    from evalq.models.registry import engine_settings_for
    from evalq.worker.main import serve

    concurrency = _pop_count(options, "concurrency")
    episodes = _pop_count(options, "episodes_in_flight")
    if heartbeat_interval <= 0:
        raise UserError(f"--heartbeat-interval must be positive, got {heartbeat_interval}")
    shards_in_flight = _pop_count(options, "shards_in_flight")
    driver = options.pop("driver") or "auto"
    engine_factory = options.pop("engine_factory")
    options["enable_prefix_caching"] = options.pop("prefix_caching")
    engine_settings = engine_settings_for(
        model, tensor_parallel_size=tensor_parallel_size, **options
    )
    node = name or f"gpu{gpus.replace(',', '-')}@{socket.gethostname()}"
    serve(
        settings,
        engine_settings,
        model=model,
        node=node,
        queue=queue,
        concurrency=concurrency,
        episodes=episodes,
        engine_factory=engine_factory,
        driver=driver,
        shards_in_flight=shards_in_flight,
        metrics_port=metrics_port,
        heartbeat_interval=heartbeat_interval,
    )


def _pop_count(options: dict[str, Any], key: str) -> int | None:
    """Take the count option ``key`` out of ``options``: unset, or at least 1.

    Raises:
        UserError: the count is below 1 (named by its flag in ``WORKER_OPTIONS``).
    """
    from evalq.errors import UserError

    value: int | None = options.pop(key)
    if value is not None and value < 1:
        raise UserError(f"{WORKER_OPTIONS[key][0]} must be at least 1, got {value}")
    return value
