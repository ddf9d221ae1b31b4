"""``evalq fleet compose``: write a docker-compose file with a worker per GPU group or CPU."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import click

from evalq.cli.worker import worker_argv, worker_options
from evalq.fleet.compose import (
    METRICS_PORT,
    POSTGRES_PORT,
    REDIS_PORT,
    ComposeSpec,
    compose_file,
    render,
)


@click.command("compose")
@click.option("--gpus", default="", help="GPUs of the host: 0-7, 0,1,2,3 or 0-3,6.")
@click.option(
    "--cpu",
    "cpu_workers",
    type=int,
    default=0,
    help="N CPU workers instead of GPU ones, on images built here (scripts/fleet_images.py).",
)
@click.option(
    "--cores-per-worker",
    type=int,
    default=None,
    help="With --cpu: worker i runs its engine on cores i*K to i*K+K-1 (0: vLLM's own "
    "binding).  [default: this machine's cores / N]",
)
@click.option("--model", required=True, help="Model name or folder, as for `evalq worker`.")
@click.option(
    "--host",
    default=None,
    help="Host name in each worker's node name gpu<ids>@HOST (default: this machine's).",
)
@click.option(
    "--tensor-parallel-size", type=int, default=1, show_default=True, help="GPUs per worker."
)
@click.option(
    "--image",
    default=None,
    help="Worker image (default: evalq-worker:latest, with --cpu evalq-worker-cpu:latest).",
)
@click.option(
    "--redis-image",
    default=None,
    help="Redis image (default: redis:7.4, with --cpu evalq-redis:latest).",
)
@click.option(
    "--postgres-image",
    default=None,
    help="Postgres image (default: postgres:16, with --cpu evalq-postgres:latest).",
)
@click.option(
    "--workers-only",
    is_flag=True,
    help="Workers alone, for a second host: no Redis, Postgres or Flower here.",
)
@click.option(
    "--broker-url",
    "compose_broker_url",
    default=None,
    help="Workers' Redis URL (default: the file's redis service). ${VAR} is read by compose.",
)
@click.option(
    "--database-url",
    "compose_database_url",
    default=None,
    help="Workers' database URL (default: the file's postgres service).",
)
@click.option(
    "--internal",
    is_flag=True,
    help="A network with no way out and no host ports: reach it with `docker compose exec`.",
)
@click.option("--queue", default=None, help="Queue to consume (default: the model's queue).")
@click.option(
    "--metrics-port",
    type=int,
    default=METRICS_PORT,
    show_default=True,
    help="Host port of the first worker's /metrics; the next workers take the next ports.",
)
@click.option(
    "--redis-port", type=int, default=REDIS_PORT, show_default=True, help="Host port of Redis."
)
@click.option(
    "--postgres-port",
    type=int,
    default=POSTGRES_PORT,
    show_default=True,
    help="Host port of Postgres.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=Path("docker-compose.yml"),
    show_default=True,
    help="File to write (- for stdout).",
)
@worker_options
def compose(
    gpus: str,
    cpu_workers: int,
    cores_per_worker: int | None,
    model: str,
    host: str | None,
    tensor_parallel_size: int,
    image: str | None,
    redis_image: str | None,
    postgres_image: str | None,
    workers_only: bool,
    compose_broker_url: str | None,
    compose_database_url: str | None,
    internal: bool,
    queue: str | None,
    metrics_port: int,
    redis_port: int,
    postgres_port: int,
    output: Path,
    **options: Any,
) -> None:
    """Write a compose file: Redis, Postgres, Flower and one worker per GPU (group) or CPU."""
    if cores_per_worker is None:
        # The cores of the machine that writes the file, as --gpus names its GPUs.
        cores_per_worker = max(1, (os.cpu_count() or 1) // cpu_workers) if cpu_workers > 0 else 0
    spec = ComposeSpec(
        model=model,
        gpus=gpus,
        host=host or socket.gethostname(),
        tensor_parallel_size=tensor_parallel_size,
        cpu_workers=cpu_workers,
        cores_per_worker=cores_per_worker,
        image=image,
        redis_image=redis_image,
        postgres_image=postgres_image,
        workers_only=workers_only,
        internal=internal,
        broker_url=compose_broker_url,
        database_url=compose_database_url,
        queue=queue,
        metrics_port=metrics_port,
        redis_port=redis_port,
        postgres_port=postgres_port,
        worker_args=tuple(worker_argv(options)),
    )
    text = render(spec)
    workers = [name for name in compose_file(spec)["services"] if name.startswith("worker-")]
    if str(output) == "-":
        sys.stdout.write(text)
        return
    output.write_text(text)
    click.echo(f"wrote {output}: {len(workers)} worker service(s) ({', '.join(workers)})")
