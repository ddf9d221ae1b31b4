"""A docker-compose file for a fleet: Redis, Postgres and Flower, and a worker per GPU group.

``evalq fleet compose`` writes it. Each worker service reserves its GPUs by device id
through the NVIDIA runtime, which shows them inside the container numbered from 0; so
``CUDA_VISIBLE_DEVICES`` and ``--gpus`` are container-local, and the node name
(``gpu<host ids>@<host>``) carries the host's ids. A second host runs the same workers
without the shared services (``--workers-only``), pointed at the first host's Redis and
Postgres.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

from evalq.errors import UserError
from evalq.fleet.gpus import gpu_groups, parse_gpus

REDIS_IMAGE = "redis:7.4"
POSTGRES_IMAGE = "postgres:16"
FLOWER_IMAGE = "mher/flower:2.0"
WORKER_IMAGE = "evalq-worker:latest"
DOCKERFILE = "docker/Dockerfile"
# Secrets are never written into the file: compose reads them from the environment (or a
# .env file beside it) and refuses to start without them.
REDIS_PASSWORD = "${EVALQ_REDIS_PASSWORD:?set EVALQ_REDIS_PASSWORD}"
DB_PASSWORD = "${EVALQ_DB_PASSWORD:?set EVALQ_DB_PASSWORD}"
BROKER_URL = f"redis://:{REDIS_PASSWORD}@redis:6379/0"
DATABASE_URL = f"postgresql://evalq:{DB_PASSWORD}@postgres:5432/evalq"
METRICS_PORT = 9400
FLOWER_PORT = 5555
# Time a stopping worker gets to finish its shard (SIGTERM is a warm shutdown) before SIGKILL.
STOP_GRACE = "15m"
HF_CACHE = "/root/.cache/huggingface"
EVALQ_HOME = "/var/lib/evalq"


@dataclass(frozen=True)
class ComposeSpec:
    """What the compose file holds; every field is an ``evalq fleet compose`` option."""

    model: str
    gpus: str
    host: str
    tensor_parallel_size: int = 1
    image: str = WORKER_IMAGE
    workers_only: bool = False
    broker_url: str | None = None
    database_url: str | None = None
    queue: str | None = None
    metrics_port: int = METRICS_PORT
    worker_args: tuple[str, ...] = field(default_factory=tuple)

    def command_line(self) -> str:
        """The ``evalq fleet compose`` command that generates this file."""
        argv = ["evalq", "fleet", "compose", "--gpus", self.gpus, "--model", self.model]
        argv += ["--host", self.host]
        if self.tensor_parallel_size != 1:
            argv += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.image != WORKER_IMAGE:
            argv += ["--image", self.image]
        if self.workers_only:
            argv.append("--workers-only")
        for flag, value in (
            ("--broker-url", self.broker_url),
            ("--database-url", self.database_url),
            ("--queue", self.queue),
        ):
            if value is not None:
                argv += [flag, value]
        if self.metrics_port != METRICS_PORT:
            argv += ["--metrics-port", str(self.metrics_port)]
        return shlex.join([*argv, *self.worker_args])


def compose_file(spec: ComposeSpec) -> dict[str, Any]:
    """The compose file as a dict: shared services (unless workers-only), then the workers.

    Raises:
        UserError: bad GPU ids or groups, or a workers-only file without both service URLs.
    """
    if spec.workers_only and not (spec.broker_url and spec.database_url):
        raise UserError("--workers-only needs --broker-url and --database-url of the head host")
    groups = gpu_groups(parse_gpus(spec.gpus), spec.tensor_parallel_size)
    services: dict[str, Any] = {} if spec.workers_only else shared_services()
    for i, group in enumerate(groups):
        name = "worker-gpu" + "-".join(group)
        services[name] = worker_service(spec, group, host_port=spec.metrics_port + i)
    volumes: dict[str, Any] = {"huggingface": {}, "evalq-home": {}}
    if not spec.workers_only:
        volumes = {"redis-data": {}, "postgres-data": {}, **volumes}
    return {"name": "evalq", "services": services, "volumes": volumes}


def shared_services() -> dict[str, Any]:
    """Redis (append-only), Postgres (on a volume) and Flower: what every host's workers share."""
    return {
        "redis": {
            "image": REDIS_IMAGE,
            "command": [
                "redis-server",
                *("--appendonly", "yes", "--appendfsync", "everysec"),
                *("--requirepass", REDIS_PASSWORD),
            ],
            "environment": {"REDISCLI_AUTH": REDIS_PASSWORD},
            "volumes": ["redis-data:/data"],
            "ports": ["6379:6379"],
            "healthcheck": _health(["CMD", "redis-cli", "ping"], start="10s"),
            "restart": "unless-stopped",
        },
        "postgres": {
            "image": POSTGRES_IMAGE,
            "environment": {
                "POSTGRES_USER": "evalq",
                "POSTGRES_PASSWORD": DB_PASSWORD,
                "POSTGRES_DB": "evalq",
            },
            "volumes": ["postgres-data:/var/lib/postgresql/data"],
            "ports": ["5432:5432"],
            "healthcheck": _health(["CMD", "pg_isready", "-U", "evalq", "-d", "evalq"], "30s"),
            "restart": "unless-stopped",
        },
        "flower": {
            "image": FLOWER_IMAGE,
            "command": ["celery", "flower", f"--port={FLOWER_PORT}"],
            "environment": {"CELERY_BROKER_URL": BROKER_URL},
            # Flower can shut workers down: reachable from this host only (ssh -L to view).
            "ports": [f"127.0.0.1:{FLOWER_PORT}:{FLOWER_PORT}"],
            "depends_on": {"redis": {"condition": "service_healthy"}},
            "healthcheck": _health(
                [
                    "CMD",
                    "wget",
                    "-q",
                    "-O",
                    "/dev/null",
                    f"http://localhost:{FLOWER_PORT}/healthcheck",
                ],
                start="30s",
            ),
            "restart": "unless-stopped",
        },
    }


def worker_service(spec: ComposeSpec, gpus: list[str], *, host_port: int) -> dict[str, Any]:
    """One ``evalq worker`` container holding ``gpus`` (host ids) for the life of its engine."""
    local = ",".join(str(i) for i in range(len(gpus)))  # how the container numbers them
    command = ["--model", spec.model, "--gpus", local, "--name", f"gpu{'-'.join(gpus)}@{spec.host}"]
    if len(gpus) > 1:
        command += ["--tensor-parallel-size", str(len(gpus))]
    if spec.queue:
        command += ["--queue", spec.queue]
    command += ["--metrics-port", str(METRICS_PORT), *spec.worker_args]
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)"
    service: dict[str, Any] = {
        "image": spec.image,
        "build": {"context": ".", "dockerfile": DOCKERFILE},
        "command": command,
        "hostname": spec.host,  # the host column of `evalq status`
        "environment": {
            "EVALQ_BROKER_URL": spec.broker_url or BROKER_URL,
            "EVALQ_DATABASE_URL": spec.database_url or DATABASE_URL,
            "CUDA_VISIBLE_DEVICES": local,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "EVALQ_HOME": EVALQ_HOME,
            "HF_HOME": HF_CACHE,
        },
        "volumes": [f"huggingface:{HF_CACHE}", f"evalq-home:{EVALQ_HOME}"],
        "ports": [f"{host_port}:{METRICS_PORT}"],
        # vLLM's processes share tensors through /dev/shm; a container's 64 MB is too small.
        "ipc": "host",
        "deploy": {
            "resources": {
                "reservations": {
                    "devices": [{"driver": "nvidia", "device_ids": gpus, "capabilities": ["gpu"]}]
                }
            }
        },
        # Alive while its metrics thread answers; loading the model may take minutes.
        "healthcheck": _health(["CMD", "python3", "-c", probe], start="10m"),
        "restart": "unless-stopped",
        "stop_grace_period": STOP_GRACE,
    }
    if not spec.workers_only:
        service["depends_on"] = {
            "redis": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
        }
    return service


def render(spec: ComposeSpec) -> str:
    """The compose file as YAML, headed by the command that regenerates it."""
    body = yaml.safe_dump(compose_file(spec), sort_keys=False, width=100)
    return f"# Generated by: {spec.command_line()}\n# Regenerate it rather than edit it.\n{body}"


def _health(test: list[str], start: str) -> dict[str, Any]:
    return {"test": test, "interval": "30s", "timeout": "10s", "retries": 3, "start_period": start}
