"""``evalq fleet``: start one worker per GPU (or GPU group) here, supervise them, stop them."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from evalq.cli.worker import worker_argv, worker_options
from evalq.config import Settings
from evalq.errors import UserError

MODES = ("auto", "single", "data_parallel", "tensor_parallel")


def tensor_parallel_for(
    mode: str, gpus: list[str], model: str, options: dict[str, Any], given: int | None
) -> int:
    """GPUs per worker for ``mode`` (an explicit ``--tensor-parallel-size`` wins).

    Raises:
        UserError: ``single`` with several GPUs, or ``auto`` cannot size the model.
    """
    if given is not None:
        return given
    if mode == "single":
        if len(gpus) != 1:
            raise UserError(f"--mode single runs one worker on one GPU; --gpus names {len(gpus)}")
        return 1
    if mode == "data_parallel":
        return 1
    if mode == "tensor_parallel":
        return len(gpus)
    from evalq.models.registry import engine_settings_for
    from evalq.models.sizing import choose_tensor_parallel, free_gpu_memory, model_size

    settings = engine_settings_for(
        model, dtype=options.get("dtype"), quantization=options.get("quantization")
    )
    model_dir = Path(settings.model)
    if not model_dir.is_dir():
        raise UserError(
            f"--mode auto sizes a model from its folder; {settings.model!r} is not one "
            "(download it first, or choose --mode data_parallel or tensor_parallel)"
        )
    size = model_size(model_dir, settings.dtype, settings.quantization)
    utilization = options.get("gpu_memory_utilization") or settings.gpu_memory_utilization
    return choose_tensor_parallel(size, free_gpu_memory(gpus), utilization)


def _memory_share(model: str, options: dict[str, Any], workers: int) -> float:
    """Each of ``workers`` engines' share of the GPU memory one worker would take."""
    from evalq.models.registry import engine_settings_for

    given = options.get("gpu_memory_utilization")
    total = given or engine_settings_for(model).gpu_memory_utilization
    return round(total / workers, 4)


@click.group("fleet", invoke_without_command=True)
@click.option("--model", default=None, help="Model name or folder, as for `evalq worker`.")
@click.option("--gpus", default=None, help="GPUs of this machine: 0,1,2,3, 0-7 or 0-3,6.")
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="auto",
    show_default=True,
    help="single: one GPU; data_parallel: a worker per GPU; tensor_parallel: one worker over "
    "all GPUs; auto: the fewest GPUs per worker that hold the model, then data parallel.",
)
@click.option(
    "--tensor-parallel-size", type=int, default=None, help="GPUs per worker (overrides --mode)."
)
@click.option(
    "--workers-per-gpu",
    type=int,
    default=1,
    show_default=True,
    help="Workers (each its own engine) per GPU group, sharing its --gpu-memory-utilization: "
    "for small models, whose engines alone cannot keep a GPU busy. They start one after "
    "another.",
)
@click.option("--queue", default=None, help="Queue to consume (default: the model's queue).")
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write each worker's output to DIR/worker-gpu<ids>.log (default: this terminal).",
)
@click.option(
    "--max-restarts",
    type=int,
    default=3,
    show_default=True,
    help="Restarts of a dying worker within 10 minutes before it is given up.",
)
@click.option(
    "--stop-timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds a stopping worker may finish its shard before it is killed.",
)
@worker_options
@click.pass_context
def fleet(
    ctx: click.Context,
    /,
    model: str | None,
    gpus: str | None,
    mode: str,
    tensor_parallel_size: int | None,
    workers_per_gpu: int,
    queue: str | None,
    log_dir: Path | None,
    max_restarts: int,
    stop_timeout: float,
    **options: Any,
) -> None:
    """Run a worker per GPU group here until Ctrl-C or SIGTERM; restart any that dies.

    Every worker is an `evalq worker` process that builds its engine once. A worker that
    dies is restarted (its unfinished shard goes back to the queue); one that dies
    --max-restarts times within 10 minutes is given up. On stop, each worker finishes its
    current shards (up to --stop-timeout) and is then killed with its engine.
    """
    if ctx.invoked_subcommand is not None:
        return
    if model is None or gpus is None:
        raise click.UsageError("`evalq fleet` needs --model and --gpus")
    settings: Settings = ctx.obj
    from evalq.db.session import open_store
    from evalq.db.workers import is_serving
    from evalq.fleet.gpus import gpu_groups, parse_gpus
    from evalq.fleet.supervisor import Fleet, WorkerSpec

    if workers_per_gpu < 1:
        raise UserError(f"--workers-per-gpu must be at least 1, got {workers_per_gpu}")
    ids = parse_gpus(gpus)
    tp = tensor_parallel_for(mode, ids, model, options, tensor_parallel_size)
    groups = gpu_groups(ids, tp)
    if workers_per_gpu > 1:
        options["gpu_memory_utilization"] = _memory_share(model, options, workers_per_gpu)
    host = socket.gethostname()
    env = {
        **os.environ,
        "EVALQ_DATABASE_URL": settings.database_url,
        "EVALQ_BROKER_URL": settings.broker_url,
        "EVALQ_VISIBILITY_TIMEOUT": str(settings.visibility_timeout_s),
    }
    specs = []
    for group in groups:
        label = "-".join(group)
        for replica in range(workers_per_gpu):
            name = f"gpu{label}" + (f".{replica}" if workers_per_gpu > 1 else "")
            argv = [sys.executable, "-m", "evalq", "worker", "--model", model]
            argv += ["--gpus", ",".join(group), "--tensor-parallel-size", str(tp)]
            argv += ["--name", f"{name}@{host}"]
            if queue:
                argv += ["--queue", queue]
            argv += worker_argv(options)
            log_path = None if log_dir is None else log_dir / f"worker-{name}.log"
            specs.append(WorkerSpec(name, argv, env, log_path, wave=replica))
    click.echo(
        f"fleet: {len(specs)} worker(s) of {tp} GPU(s) for {model} on GPUs {gpus}"
        + (
            f", {workers_per_gpu} per GPU group, each with --gpu-memory-utilization "
            f"{options['gpu_memory_utilization']}"
            if workers_per_gpu > 1
            else ""
        )
    )
    store = open_store(settings.database_url)

    def serving(name: str, pid: int) -> bool:
        with store.session() as s:
            return is_serving(s, f"{name}@{host}", pid)

    supervisor = Fleet(
        specs,
        max_restarts=max_restarts,
        stop_timeout_s=stop_timeout,
        serving=serving,
        report=lambda line: click.echo(f"fleet: {line}", err=True),
    )

    def request_stop(signum: int, frame: FrameType | None) -> None:
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    supervisor.start()
    code = supervisor.supervise()
    if code:
        sys.exit(code)
