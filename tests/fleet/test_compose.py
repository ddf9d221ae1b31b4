"""``evalq fleet compose``: every service, device id and variable, validated as compose reads it.

Validation: ``docker compose config`` where the docker client has the compose plugin;
otherwise the file is checked against the Compose Specification's JSON schema
(tests/fleet/compose-spec.json, from github.com/compose-spec/compose-spec, Apache-2.0,
commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6) after compose's own ``${VAR}``
interpolation rules are applied.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from click.testing import CliRunner
from support import REPO

from evalq.cli.compose import compose
from evalq.cli.main import UserErrorGroup
from evalq.fleet.compose import ComposeSpec, compose_file, render

SCHEMA = Path(__file__).with_name("compose-spec.json")
SECRETS = {"EVALQ_REDIS_PASSWORD": "r3dis", "EVALQ_DB_PASSWORD": "pg-pass"}
MODEL = "Qwen/Qwen2.5-7B-Instruct"


def fleet_cli() -> UserErrorGroup:
    """``compose`` under a ``fleet`` group, as ``evalq fleet compose`` attaches it."""
    group = UserErrorGroup("fleet")
    group.add_command(compose)
    return group


def generate(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "docker-compose.yml"
    result = CliRunner().invoke(fleet_cli(), ["compose", *args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = yaml.safe_load(out.read_text())
    return loaded


def workers(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc["services"].items() if k.startswith("worker-")}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:?msg}``, ``${VAR:-default}`` and ``$$`` (as ``config``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, _, rest = m.group(1).partition(":")
        if name in env:
            return env[name]
        if rest.startswith("-"):
            return rest[1:]  # ${VAR:-default}
        raise KeyError(f"{name}: {rest.lstrip('?')}")

    return re.sub(r"\$\$|\$\{([^}]*)\}", one, value)


def has_compose() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run([docker, "compose", "version"], capture_output=True)
    return probe.returncode == 0


def validate(path: Path) -> dict[str, Any]:
    """The file as compose resolves it; fails the test if compose (or the schema) rejects it."""
    if has_compose():
        done = subprocess.run(
            ["docker", "compose", "-f", str(path), "config", "--format", "json"],
            capture_output=True,
            text=True,
            env={**os.environ, **SECRETS},
            cwd=path.parent,
        )
        assert done.returncode == 0, done.stderr
        resolved: dict[str, Any] = json.loads(done.stdout)
        return resolved
    # No compose plugin here (`docker compose version` fails): the spec's schema instead.
    resolved = interpolate(yaml.safe_load(path.read_text()), SECRETS)
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(resolved)
    return resolved


def test_four_gpus_make_four_workers_pinned_to_their_devices(tmp_path: Path) -> None:
    doc = generate(tmp_path, "--gpus", "0-3", "--model", MODEL, "--host", "node1")
    assert list(doc["services"])[:3] == ["redis", "postgres", "flower"]
    found = workers(doc)
    assert list(found) == ["worker-gpu0", "worker-gpu1", "worker-gpu2", "worker-gpu3"]
    for i, (name, service) in enumerate(found.items()):
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device == {"driver": "nvidia", "device_ids": [str(i)], "capabilities": ["gpu"]}
        env = service["environment"]
        # The runtime shows the reserved GPU as device 0 inside the container.
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert env["EVALQ_BROKER_URL"] == (
            "redis://:${EVALQ_REDIS_PASSWORD:?set EVALQ_REDIS_PASSWORD}@redis:6379/0"
        )
        assert env["EVALQ_DATABASE_URL"] == (
            "postgresql://evalq:${EVALQ_DB_PASSWORD:?set EVALQ_DB_PASSWORD}@postgres:5432/evalq"
        )
        assert env["HF_HOME"] and env["EVALQ_HOME"]
        assert service["command"] == [
            *("--model", MODEL, "--gpus", "0", "--name", f"gpu{i}@node1"),
            *("--metrics-port", "9400"),
        ]
        assert service["ports"] == [f"{9400 + i}:9400"]
        assert service["hostname"] == "node1"
        assert service["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
        assert service["restart"] == "unless-stopped"
        assert "9400/metrics" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
        }, name


def test_cpu_workers_run_on_images_built_here(tmp_path: Path) -> None:
    doc = generate(tmp_path, "--cpu", "2", "--model", "smollm2-135m", "--host", "h")
    services = doc["services"]
    assert list(services) == ["redis", "postgres", "flower", "worker-cpu0", "worker-cpu1"]
    assert services["redis"]["image"] == "evalq-redis:latest"
    assert services["postgres"]["image"] == "evalq-postgres:latest"
    # No registry: Flower runs from the worker image, which carries it.
    assert services["flower"]["image"] == "evalq-worker-cpu:latest"
    assert services["flower"]["entrypoint"] == ["celery"]
    for i, name in enumerate(["worker-cpu0", "worker-cpu1"]):
        service = services[name]
        assert service["image"] == "evalq-worker-cpu:latest"
        assert "deploy" not in service and "build" not in service
        assert service["environment"]["CUDA_VISIBLE_DEVICES"] == ""
        command = service["command"]
        assert command[:6] == ["--model", "smollm2-135m", "--gpus", "", "--name", f"cpu{i}@h"]
        assert service["ports"] == [f"{9400 + i}:9400"]
    pinned = generate(tmp_path, "--cpu", "2", "--cores-per-worker", "2", "--model", "m")
    binds = [pinned["services"][f"worker-cpu{i}"]["environment"] for i in (0, 1)]
    assert [env["VLLM_CPU_OMP_THREADS_BIND"] for env in binds] == ["0-1", "2-3"]
    unpinned = generate(tmp_path, "--cpu", "1", "--cores-per-worker", "0", "--model", "m")
    assert "VLLM_CPU_OMP_THREADS_BIND" not in unpinned["services"]["worker-cpu0"]["environment"]
    gpu = generate(tmp_path, "--gpus", "0", "--model", MODEL, "--host", "h")["services"]
    # The same services, health checks, volumes and restart policies as the GPU flavour.
    for name in ("redis", "postgres", "flower"):
        for key in ("healthcheck", "volumes", "restart", "environment", "command"):
            assert services[name].get(key) == gpu[name].get(key), (name, key)
    for key in ("healthcheck", "volumes", "restart", "stop_grace_period", "depends_on", "ipc"):
        assert services["worker-cpu0"][key] == gpu["worker-gpu0"][key], key
    generate(tmp_path, "--cpu", "2", "--model", "smollm2-135m", "--host", "h")
    validate(tmp_path / "docker-compose.yml")


def test_internal_network_publishes_nothing(tmp_path: Path) -> None:
    doc = generate(
        tmp_path,
        *("--cpu", "1", "--model", "m", "--host", "h", "--internal"),
        *("--image", "w:1", "--redis-image", "r:1", "--postgres-image", "p:1"),
    )
    assert doc["networks"] == {"default": {"internal": True}}
    assert all("ports" not in service for service in doc["services"].values())
    assert [doc["services"][s]["image"] for s in ("redis", "postgres", "worker-cpu0")] == [
        "r:1",
        "p:1",
        "w:1",
    ]
    validate(tmp_path / "docker-compose.yml")


def test_host_ports_and_visibility_timeout(tmp_path: Path) -> None:
    doc = generate(
        tmp_path,
        *("--gpus", "0", "--model", MODEL, "--host", "h"),
        *("--redis-port", "16379", "--postgres-port", "15432"),
    )
    assert doc["services"]["redis"]["ports"] == ["16379:6379"]
    assert doc["services"]["postgres"]["ports"] == ["15432:5432"]
    env = doc["services"]["worker-gpu0"]["environment"]
    assert env["EVALQ_VISIBILITY_TIMEOUT"] == "${EVALQ_VISIBILITY_TIMEOUT:-21600}"
    resolved = validate(tmp_path / "docker-compose.yml")
    assert resolved["services"]["worker-gpu0"]["environment"]["EVALQ_VISIBILITY_TIMEOUT"] == (
        "21600"
    )


def test_shared_services_persist_and_report_health(tmp_path: Path) -> None:
    services = generate(tmp_path, "--gpus", "0", "--model", MODEL, "--host", "h")["services"]
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert redis["volumes"] == ["redis-data:/data"]
    postgres = services["postgres"]
    assert postgres["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${EVALQ_DB_PASSWORD:?")
    flower = services["flower"]
    assert flower["environment"]["CELERY_BROKER_URL"].endswith("@redis:6379/0")
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    for service in services.values():
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"][0] == "CMD"


def test_generated_file_passes_validation(tmp_path: Path) -> None:
    generate(tmp_path, "--gpus", "0-3", "--model", MODEL, "--host", "node1")
    resolved = validate(tmp_path / "docker-compose.yml")
    env = resolved["services"]["worker-gpu2"]["environment"]
    assert env["EVALQ_BROKER_URL"] == "redis://:r3dis@redis:6379/0"
    assert env["EVALQ_DATABASE_URL"] == "postgresql://evalq:pg-pass@postgres:5432/evalq"


def test_validation_rejects_what_compose_would(tmp_path: Path) -> None:
    doc = compose_file(ComposeSpec(model=MODEL, gpus="0", host="h"))
    doc["services"]["worker-gpu0"]["deploy"]["resources"]["reservations"]["gpus"] = 1
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises((AssertionError, jsonschema.ValidationError)):
        validate(bad)


def test_a_missing_secret_is_refused() -> None:
    doc = compose_file(ComposeSpec(model=MODEL, gpus="0", host="h"))
    with pytest.raises(KeyError, match="set EVALQ_DB_PASSWORD"):
        interpolate(doc, {"EVALQ_REDIS_PASSWORD": "x"})


def test_committed_compose_file_is_the_generated_one() -> None:
    committed = (REPO / "docker-compose.yml").read_text()
    header = committed.splitlines()[0]
    assert header.startswith("# Generated by: evalq fleet compose ")
    argv = shlex.split(header.removeprefix("# Generated by: evalq fleet "))
    result = CliRunner().invoke(fleet_cli(), [*argv, "-o", "-"])
    assert result.exit_code == 0, result.output
    assert result.output == committed, "regenerate docker-compose.yml with its header command"
    doc = yaml.safe_load(committed)
    assert len(workers(doc)) == 4


def test_tensor_parallel_groups_share_a_worker(tmp_path: Path) -> None:
    doc = generate(
        tmp_path, "--gpus", "0-7", "--model", MODEL, "--host", "h", "--tensor-parallel-size", "2"
    )
    found = workers(doc)
    assert list(found) == ["worker-gpu0-1", "worker-gpu2-3", "worker-gpu4-5", "worker-gpu6-7"]
    service = found["worker-gpu4-5"]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == ["4", "5"]
    assert service["environment"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    command = service["command"]
    assert command[command.index("--gpus") + 1] == "0,1"
    assert command[command.index("--tensor-parallel-size") + 1] == "2"
    assert command[command.index("--name") + 1] == "gpu4-5@h"
    validate(tmp_path / "docker-compose.yml")


def test_engine_options_reach_every_worker(tmp_path: Path) -> None:
    doc = generate(
        tmp_path,
        *("--gpus", "0,2", "--model", MODEL, "--host", "h", "--queue", "evalq.exp1"),
        *("--max-model-len", "8192", "--no-prefix-caching", "--driver", "async"),
    )
    for service in workers(doc).values():
        command = " ".join(service["command"])
        assert "--queue evalq.exp1" in command
        assert "--max-model-len 8192" in command
        assert "--no-prefix-caching" in command
        assert "--driver async" in command


def test_workers_only_file_for_a_second_host(tmp_path: Path) -> None:
    broker = "redis://:${EVALQ_REDIS_PASSWORD}@node1:6379/0"
    database = "postgresql://evalq:${EVALQ_DB_PASSWORD}@node1:5432/evalq"
    doc = generate(
        tmp_path,
        *("--gpus", "0-1", "--model", MODEL, "--host", "node2", "--workers-only"),
        *("--broker-url", broker, "--database-url", database),
    )
    assert list(doc["services"]) == ["worker-gpu0", "worker-gpu1"]
    assert set(doc["volumes"]) == {"huggingface", "evalq-home"}
    for i, service in enumerate(doc["services"].values()):
        assert service["environment"]["EVALQ_BROKER_URL"] == broker
        assert service["environment"]["EVALQ_DATABASE_URL"] == database
        assert "depends_on" not in service
        assert f"gpu{i}@node2" in service["command"]
    validate(tmp_path / "docker-compose.yml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--gpus", "0-x"), "not a range"),
        (("--gpus", "3-1"), "runs backwards"),
        (("--gpus", "0,0"), "names a GPU twice"),
        (("--gpus", "0-2", "--tensor-parallel-size", "2"), "do not split"),
        (("--gpus", "0", "--workers-only"), "--workers-only needs --broker-url"),
        (("--gpus", "0", "--cpu", "2"), "either --gpus"),
        ((), "either --gpus"),
        (("--cpu", "-1"), "--cpu must be at least 1"),
        (("--cpu", "2", "--tensor-parallel-size", "2"), "CPU workers have none"),
        (("--cpu", "1", "--cores-per-worker", "-2"), "--cores-per-worker must be 0 or more"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(fleet_cli(), ["compose", "--model", MODEL, *args, "-o", "-"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_render_names_its_command() -> None:
    spec = ComposeSpec(model=MODEL, gpus="0-1", host="h", worker_args=("--dtype", "half"))
    first = render(spec).splitlines()[0]
    command = f"evalq fleet compose --gpus 0-1 --model {MODEL} --host h --dtype half"
    assert first == f"# Generated by: {command}"


def test_render_names_a_cpu_command_that_regenerates_it(tmp_path: Path) -> None:
    spec = ComposeSpec(
        model="smollm2-135m",
        gpus="",
        host="h",
        cpu_workers=2,
        image="w:1",
        internal=True,
        redis_port=16379,
        worker_args=("--enforce-eager",),
    )
    text = render(spec)
    argv = shlex.split(text.splitlines()[0].removeprefix("# Generated by: evalq fleet "))
    result = CliRunner().invoke(fleet_cli(), [*argv, "-o", "-"])
    assert result.exit_code == 0, result.output
    assert result.output == text
