"""A docker-compose file for a fleet: Redis, Postgres and Flower, and its workers.

``evalq fleet compose`` writes it, with GPU workers (``--gpus``: one per GPU group, the
image of docker/Dockerfile on vLLM's CUDA image, Redis and Postgres from Docker Hub) or CPU
workers (``--cpu N``: images that scripts/fleet_images.py builds on the machine itself, no
registry needed). Both flavours have the same services, health checks, volumes, restart
policies and secrets; images, device reservations and node names differ.

Each GPU worker service reserves its GPUs by device id through the NVIDIA runtime, which
shows them inside the container numbered from 0; so ``CUDA_VISIBLE_DEVICES`` and ``--gpus``
are container-local, and the node name (``gpu<host ids>@<host>``) carries the host's ids. A
second host runs the same workers without the shared services (``--workers-only``), pointed
at the first host's Redis and Postgres.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

from evalq.errors import UserError
from evalq.fleet.gpus import gpu_groups, parse_gpus

DOCKERFILE = "docker/Dockerfile"
# Secrets are never written into the file: compose reads them from the environment (or a
# .env file beside it) and refuses to start without them.
REDIS_PASSWORD = "${EVALQ_REDIS_PASSWORD:?set EVALQ_REDIS_PASSWORD}"
DB_PASSWORD = "${EVALQ_DB_PASSWORD:?set EVALQ_DB_PASSWORD}"
# The same everywhere, and longer than any shard (docs/fleet.md); .env may set it.
VISIBILITY_TIMEOUT = "${EVALQ_VISIBILITY_TIMEOUT:-21600}"
BROKER_URL = f"redis://:{REDIS_PASSWORD}@redis:6379/0"
DATABASE_URL = f"postgresql://evalq:{DB_PASSWORD}@postgres:5432/evalq"
METRICS_PORT = 9400
FLOWER_PORT = 5555
REDIS_PORT = 6379
POSTGRES_PORT = 5432
# Time a stopping worker gets to finish its shard (SIGTERM is a warm shutdown) before SIGKILL.
STOP_GRACE = "15m"
HF_CACHE = "/root/.cache/huggingface"
EVALQ_HOME = "/var/lib/evalq"


@dataclass(frozen=True)
class Images:
    """The images a fleet runs; ``flower`` None runs Flower from the worker image."""

    worker: str
    redis: str
    postgres: str
    flower: str | None


# GPU workers: the worker image builds FROM vllm/vllm-openai; the rest comes from Docker Hub.
GPU_IMAGES = Images(
    worker="evalq-worker:latest",
    redis="redis:7.4",
    postgres="postgres:16",
    flower="mher/flower:2.0",
)
# CPU workers: all built here from Debian's packages and a local wheelhouse
# (scripts/fleet_images.py), so a machine without registry access runs the whole fleet.
CPU_IMAGES = Images(
    worker="evalq-worker-cpu:latest",
    redis="evalq-redis:latest",
    postgres="evalq-postgres:latest",
    flower=None,
)


@dataclass(frozen=True)
class ComposeSpec:
    """What the compose file holds; every field is an ``evalq fleet compose`` option."""

    model: str
    gpus: str
    host: str
    tensor_parallel_size: int = 1
    # CPU workers instead of GPU ones (gpus is then empty), each on cores of its own:
    # worker i on cores i*k .. i*k+k-1 (0: no binding of ours, vLLM's own).
    cpu_workers: int = 0
    cores_per_worker: int = 0
    # None: the flavour's image (GPU_IMAGES, CPU_IMAGES).
    image: str | None = None
    redis_image: str | None = None
    postgres_image: str | None = None
    workers_only: bool = False
    # A network with no way out (``internal: true``): nothing published on the host either;
    # reach the services with ``docker compose exec``.
    internal: bool = False
    broker_url: str | None = None
    database_url: str | None = None
    queue: str | None = None
    metrics_port: int = METRICS_PORT
    redis_port: int = REDIS_PORT
    postgres_port: int = POSTGRES_PORT
    worker_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def images(self) -> Images:
        """The flavour's images, with the ones given here instead."""
        base = CPU_IMAGES if self.cpu_workers else GPU_IMAGES
        return Images(
            worker=self.image or base.worker,
            redis=self.redis_image or base.redis,
            postgres=self.postgres_image or base.postgres,
            flower=base.flower,
        )

    def command_line(self) -> str:
        """The ``evalq fleet compose`` command that generates this file."""
        argv = ["evalq", "fleet", "compose"]
        if self.cpu_workers:
            argv += ["--cpu", str(self.cpu_workers)]
            argv += ["--cores-per-worker", str(self.cores_per_worker)]
        else:
            argv += ["--gpus", self.gpus]
        argv += ["--model", self.model, "--host", self.host]
        if self.tensor_parallel_size != 1:
            argv += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        for flag, value in (
            ("--image", self.image),
            ("--redis-image", self.redis_image),
            ("--postgres-image", self.postgres_image),
        ):
            if value is not None:
                argv += [flag, value]
        if self.workers_only:
            argv.append("--workers-only")
        if self.internal:
            argv.append("--internal")
        for flag, value in (
            ("--broker-url", self.broker_url),
            ("--database-url", self.database_url),
            ("--queue", self.queue),
        ):
            if value is not None:
                argv += [flag, value]
        for flag, port, default in (
            ("--metrics-port", self.metrics_port, METRICS_PORT),
            ("--redis-port", self.redis_port, REDIS_PORT),
            ("--postgres-port", self.postgres_port, POSTGRES_PORT),
        ):
            if port != default:
                argv += [flag, str(port)]
        return shlex.join([*argv, *self.worker_args])


def compose_file(spec: ComposeSpec) -> dict[str, Any]:
    """The compose file as a dict: shared services (unless workers-only), then the workers.

    No top-level ``name``: docker-compose 1.x (Debian's) refuses it; the project is named
    by ``-p`` or ``COMPOSE_PROJECT_NAME`` (in ``.env``), else after the folder.

    Raises:
        UserError: bad GPU ids or groups, both or neither of GPUs and CPU workers, or a
            workers-only file without both service URLs.
    """
    if spec.workers_only and not (spec.broker_url and spec.database_url):
        raise UserError("--workers-only needs --broker-url and --database-url of the head host")
    if spec.cpu_workers < 0:
        raise UserError(f"--cpu must be at least 1, got {spec.cpu_workers}")
    if spec.cores_per_worker < 0:
        raise UserError(f"--cores-per-worker must be 0 or more, got {spec.cores_per_worker}")
    if bool(spec.gpus) == bool(spec.cpu_workers):
        raise UserError("give either --gpus (GPU workers) or --cpu N (CPU workers)")
    if spec.cpu_workers and spec.tensor_parallel_size != 1:
        raise UserError("--tensor-parallel-size groups GPUs; CPU workers have none")
    services: dict[str, Any] = {} if spec.workers_only else shared_services(spec)
    if spec.cpu_workers:
        k = spec.cores_per_worker
        for i in range(spec.cpu_workers):
            cores = (f"{i * k}-{i * k + k - 1}" if k > 1 else str(i)) if k else None
            services[f"worker-cpu{i}"] = worker_service(
                spec, None, f"cpu{i}", host_port=spec.metrics_port + i, cores=cores
            )
    else:
        groups = gpu_groups(parse_gpus(spec.gpus), spec.tensor_parallel_size)
        for i, group in enumerate(groups):
            ids = "-".join(group)
            port = spec.metrics_port + i
            services[f"worker-gpu{ids}"] = worker_service(spec, group, f"gpu{ids}", host_port=port)
    volumes: dict[str, Any] = {"huggingface": {}, "evalq-home": {}}
    if not spec.workers_only:
        volumes = {"redis-data": {}, "postgres-data": {}, **volumes}
    doc: dict[str, Any] = {"services": services, "volumes": volumes}
    if spec.internal:
        for service in services.values():
            service.pop("ports", None)  # nothing is published from an internal network
        doc["networks"] = {"default": {"internal": True}}
    return doc


def shared_services(spec: ComposeSpec) -> dict[str, Any]:
    """Redis (append-only), Postgres (on a volume) and Flower: what every host's workers share."""
    images = spec.images
    flower_probe = f"http://127.0.0.1:{FLOWER_PORT}/healthcheck"
    flower: dict[str, Any] = {
        # The worker image's entrypoint is `evalq worker`; Flower's image has none. Setting
        # it runs Flower from either.
        "image": images.flower or images.worker,
        "entrypoint": ["celery"],
        "command": ["flower", f"--port={FLOWER_PORT}"],
        "environment": {"CELERY_BROKER_URL": BROKER_URL},
        # Flower can shut workers down: reachable from this host only (ssh -L to view).
        "ports": [f"127.0.0.1:{FLOWER_PORT}:{FLOWER_PORT}"],
        "depends_on": {"redis": {"condition": "service_healthy"}},
        "healthcheck": _health(_http_probe(flower_probe), start="30s"),
        "restart": "unless-stopped",
    }
    return {
        "redis": {
            "image": images.redis,
            "command": [
                "redis-server",
                *("--appendonly", "yes", "--appendfsync", "everysec"),
                *("--requirepass", REDIS_PASSWORD),
            ],
            "environment": {"REDISCLI_AUTH": REDIS_PASSWORD},
            "volumes": ["redis-data:/data"],
            "ports": [f"{spec.redis_port}:6379"],
            # Workers start once both are healthy: a check every 10 s (Docker runs the first
            # one an interval after the start) keeps `up` from waiting half a minute.
            "healthcheck": _health(["CMD", "redis-cli", "ping"], start="10s", every="10s"),
            "restart": "unless-stopped",
        },
        "postgres": {
            "image": images.postgres,
            "environment": {
                "POSTGRES_USER": "evalq",
                "POSTGRES_PASSWORD": DB_PASSWORD,
                "POSTGRES_DB": "evalq",
            },
            "volumes": ["postgres-data:/var/lib/postgresql/data"],
            "ports": [f"{spec.postgres_port}:5432"],
            "healthcheck": _health(
                ["CMD", "pg_isready", "-U", "evalq", "-d", "evalq"], start="30s", every="10s"
            ),
            "restart": "unless-stopped",
        },
        "flower": flower,
    }


def worker_service(
    spec: ComposeSpec,
    gpus: list[str] | None,
    label: str,
    *,
    host_port: int,
    cores: str | None = None,
) -> dict[str, Any]:
    """One ``evalq worker`` container for the life of its engine.

    ``gpus``: the host ids it holds (reserved through the NVIDIA runtime), or None for a CPU
    worker, whose engine threads run on ``cores`` (``2-3``; None: vLLM's own choice).
    ``label`` (``gpu0``, ``cpu1``) starts its node name, ``<label>@<host>``.
    """
    command = ["--model", spec.model]
    environment = {
        "EVALQ_BROKER_URL": spec.broker_url or BROKER_URL,
        "EVALQ_DATABASE_URL": spec.database_url or DATABASE_URL,
        "EVALQ_VISIBILITY_TIMEOUT": VISIBILITY_TIMEOUT,
    }
    if gpus is None:
        # No GPU: an empty device list, so heartbeats report none.
        command += ["--gpus", "", "--name", f"{label}@{spec.host}"]
        environment["CUDA_VISIBLE_DEVICES"] = ""
        if cores:
            # vLLM's own binding would pin every engine to the same cores (the first NUMA
            # node's, less one); unbound, their OpenMP threads spin against each other and
            # a run takes several times as long (measured: docs/fleet.md). So each worker
            # gets cores of its own.
            environment["VLLM_CPU_OMP_THREADS_BIND"] = cores
    else:
        local = ",".join(str(i) for i in range(len(gpus)))  # how the container numbers them
        command += ["--gpus", local, "--name", f"{label}@{spec.host}"]
        if len(gpus) > 1:
            command += ["--tensor-parallel-size", str(len(gpus))]
        environment["CUDA_VISIBLE_DEVICES"] = local
        environment["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if spec.queue:
        command += ["--queue", spec.queue]
    command += ["--metrics-port", str(METRICS_PORT), *spec.worker_args]
    environment |= {"EVALQ_HOME": EVALQ_HOME, "HF_HOME": HF_CACHE}
    service: dict[str, Any] = {"image": spec.images.worker}
    if gpus is not None:
        # CPU images come from scripts/fleet_images.py (a wheelhouse served on the host).
        service["build"] = {"context": ".", "dockerfile": DOCKERFILE}
    service |= {
        "command": command,
        "hostname": spec.host,  # the host column of `evalq status`
        "environment": environment,
        "volumes": [f"huggingface:{HF_CACHE}", f"evalq-home:{EVALQ_HOME}"],
        "ports": [f"{host_port}:{METRICS_PORT}"],
        # vLLM's processes share tensors through /dev/shm; a container's 64 MB is too small.
        "ipc": "host",
    }
    if gpus is not None:
        device = {"driver": "nvidia", "device_ids": gpus, "capabilities": ["gpu"]}
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    service |= {
        # Alive while its metrics thread answers; loading the model may take minutes.
        "healthcheck": _health(
            _http_probe(f"http://127.0.0.1:{METRICS_PORT}/metrics"), start="10m"
        ),
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


def _http_probe(url: str) -> list[str]:
    """A health check: GET ``url`` with the image's Python (Flower's and the workers' have it)."""
    return [
        "CMD",
        "python3",
        "-c",
        f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)",
    ]


def _health(test: list[str], start: str, every: str = "30s") -> dict[str, Any]:
    return {"test": test, "interval": every, "timeout": "10s", "retries": 3, "start_period": start}
