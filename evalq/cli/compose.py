"""``evalq fleet compose``: write a docker-compose file with a worker service per GPU group."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import click

from evalq.cli.worker import worker_argv, worker_options
from evalq.fleet.compose import METRICS_PORT, WORKER_IMAGE, ComposeSpec, compose_file, render


@click.command("compose")
@click.option("--gpus", required=True, help="GPUs of the host: 0-7, 0,1,2,3 or 0-3,6.")
@click.option("--model", required=True, help="Model name or folder, as for `evalq worker`.")
@click.option(
    "--host",
    default=None,
    help="Host name in each worker's node name gpu<ids>@HOST (default: this machine's).",
)
@click.option(
    "--tensor-parallel-size", type=int, default=1, show_default=True, help="GPUs per worker."
)
@click.option("--image", default=WORKER_IMAGE, show_default=True, help="Worker image to run.")
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
@click.option("--queue", default=None, help="Queue to consume (default: the model's queue).")
@click.option(
    "--metrics-port",
    type=int,
    default=METRICS_PORT,
    show_default=True,
    help="Host port of the first worker's /metrics; the next workers take the next ports.",
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
    model: str,
    host: str | None,
    tensor_parallel_size: int,
    image: str,
    workers_only: bool,
    compose_broker_url: str | None,
    compose_database_url: str | None,
    queue: str | None,
    metrics_port: int,
    output: Path,
    **options: Any,
) -> None:
    """Write a compose file: Redis, Postgres, Flower and one worker per GPU (group)."""
    spec = ComposeSpec(
        model=model,
        gpus=gpus,
        host=host or socket.gethostname(),
        tensor_parallel_size=tensor_parallel_size,
        image=image,
        workers_only=workers_only,
        broker_url=compose_broker_url,
        database_url=compose_database_url,
        queue=queue,
        metrics_port=metrics_port,
        worker_args=tuple(worker_argv(options)),
    )
    text = render(spec)
    workers = [name for name in compose_file(spec)["services"] if name.startswith("worker-")]
    if str(output) == "-":
        sys.stdout.write(text)
        return
    output.write_text(text)
    click.echo(f"wrote {output}: {len(workers)} worker service(s) ({', '.join(workers)})")
