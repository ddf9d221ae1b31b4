"""A worker's heartbeat: a daemon thread that upserts its row in ``workers`` every interval.

The row says what the worker does now (state, current shards), how fast (episodes and
episodes/s) and, where NVML can see a GPU, its memory and utilisation. ``evalq status``
reads these rows; a worker that stops beating is shown stale (see ``evalq.db.workers``).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_ready, worker_shutting_down
from sqlalchemy.exc import SQLAlchemyError

from evalq.broker import RUN_SHARD
from evalq.db.session import Store
from evalq.db.workers import Beat, record_heartbeat

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 10.0
# episodes/s is measured over this window: long enough to smooth the 2 s episode flushes.
RATE_WINDOW_S = 60.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuReading:
    """Memory and utilisation of a worker's GPUs, summed (memory) or averaged (utilisation)."""

    memory_used_mib: int
    memory_total_mib: int
    utilization: float


class GpuProbe:
    """Reads this worker's GPUs through NVML, when ``pynvml`` imports and a GPU is there.

    ``gpus`` are the ids in ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-`` UUIDs). NVML
    numbers GPUs by PCI bus, so set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` for the indices to agree
    (the generated compose file does). Without NVML or a GPU every reading is None.
    """

    def __init__(self, gpus: str) -> None:
        """Open NVML and a handle per GPU; failing that, read nothing."""
        self._nvml: Any = None
        self._handles: list[Any] = []
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids:
            return
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return
        try:
            nvml.nvmlInit()
        except Exception:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no GPU here
            return
        self._nvml = nvml
        try:
            for gpu in ids:
                if gpu.startswith("GPU-"):
                    self._handles.append(nvml.nvmlDeviceGetHandleByUUID(gpu))
                else:
                    self._handles.append(nvml.nvmlDeviceGetHandleByIndex(int(gpu)))
        except Exception as exc:
            log.warning("NVML cannot open GPUs %s (%s): no GPU figures in heartbeats", gpus, exc)
            self.close()

    def read(self) -> GpuReading | None:
        """The current figures, or None when there is no GPU to read."""
        if not self._handles:
            return None
        nvml = self._nvml
        try:
            memory = [nvml.nvmlDeviceGetMemoryInfo(h) for h in self._handles]
            rates = [nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]
        except Exception as exc:  # a GPU fallen off the bus must not stop the heartbeat
            log.warning("NVML read failed: %s", exc)
            return None
        return GpuReading(
            memory_used_mib=sum(int(m.used) for m in memory) // MIB,
            memory_total_mib=sum(int(m.total) for m in memory) // MIB,
            utilization=sum(float(r) for r in rates) / len(rates),
        )

    def close(self) -> None:
        """Release NVML."""
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                log.debug("nvmlShutdown failed", exc_info=True)
        self._nvml = None
        self._handles = []


class Heartbeat:
    """The worker's reporting side; a daemon thread writes a beat every ``interval_s``."""

    def __init__(
        self,
        store: Store,
        *,
        node: str,
        host: str,
        gpus: str,
        model: str,
        queue: str,
        interval_s: float = DEFAULT_INTERVAL_S,
        probe: GpuProbe | None = None,
    ) -> None:
        """Hold what every beat reports; nothing is written before ``start``."""
        if interval_s <= 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval_s}")
        self.store = store
        self.node = node
        self.host = host
        self.gpus = gpus
        self.model = model
        self.queue = queue
        self.interval_s = interval_s
        self.probe = probe if probe is not None else GpuProbe(gpus)
        self._lock = threading.Lock()
        self._state = "starting"
        self._shards: list[int] = []
        self._episodes = 0
        self._window: deque[tuple[float, int]] = deque()
        self._first = True
        self._failing = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="evalq-heartbeat", daemon=True)

    def start(self) -> None:
        """Write the first beat now (the row exists once this returns), then beat in the thread."""
        self.beat()
        self._thread.start()

    def set_state(self, state: str) -> None:
        """``starting``, ``idle`` or ``stopping``; ``busy`` follows from running shards."""
        with self._lock:
            self._state = state

    def set_shard(self, shard_id: int) -> None:
        """A shard started on this worker."""
        with self._lock:
            if shard_id not in self._shards:
                self._shards.append(shard_id)

    def clear_shard(self, shard_id: int) -> None:
        """A shard ended on this worker (done, failed or handed back)."""
        with self._lock:
            if shard_id in self._shards:
                self._shards.remove(shard_id)

    def add_episodes(self, n: int) -> None:
        """``n`` more episodes finished."""
        with self._lock:
            self._episodes += n

    def attach(self, app: Celery) -> None:
        """Follow ``app``'s worker through Celery's signals: ready, shutting down, each shard."""

        def ready(**_: Any) -> None:
            self.set_state("idle")
            self.beat()  # at once: `evalq fleet` starts a GPU's next worker on this

        def shutting_down(**_: Any) -> None:
            self.set_state("stopping")

        def prerun(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
            shard_id = _shard_of(app, task, args, kwargs)
            if shard_id is not None:
                self.set_shard(shard_id)

        def postrun(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
            shard_id = _shard_of(app, task, args, kwargs)
            if shard_id is not None:
                self.clear_shard(shard_id)

        # Strong references: the handlers are closures that nothing else holds.
        worker_ready.connect(ready, weak=False)
        worker_shutting_down.connect(shutting_down, weak=False)
        task_prerun.connect(prerun, weak=False)
        task_postrun.connect(postrun, weak=False)

    def snapshot(self) -> Beat:
        """The beat that would be written now."""
        now = time.monotonic()
        with self._lock:
            episodes = self._episodes
            shards = list(self._shards)
            state = "busy" if shards and self._state == "idle" else self._state
            self._window.append((now, episodes))
            while len(self._window) > 2 and now - self._window[1][0] >= RATE_WINDOW_S:
                self._window.popleft()
            t0, e0 = self._window[0]
        rate = (episodes - e0) / (now - t0) if now > t0 else None
        gpu = self.probe.read()
        return Beat(
            node=self.node,
            host=self.host,
            pid=os.getpid(),
            gpus=self.gpus,
            model=self.model,
            queue=self.queue,
            state=state,
            shards=",".join(map(str, shards)) or None,
            episodes=episodes,
            episodes_per_s=rate,
            gpu_memory_used_mib=gpu.memory_used_mib if gpu else None,
            gpu_memory_total_mib=gpu.memory_total_mib if gpu else None,
            gpu_utilization=gpu.utilization if gpu else None,
            interval_s=self.interval_s,
        )

    def beat(self) -> None:
        """Write one beat; a database outage is logged (once) and never stops the worker."""
        snapshot = self.snapshot()
        try:
            with self.store.session() as s:
                record_heartbeat(s, snapshot, first=self._first)
        except SQLAlchemyError as exc:
            if not self._failing:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                log.warning("heartbeat not written (%s); retrying every beat", reason)
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat written again")
        self._first = False
        self._failing = False

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        """Stop the thread and write a last beat saying ``stopped``."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 30)
        self.set_state("stopped")
        with self._lock:
            self._shards.clear()
        self.beat()
        self.probe.close()


def start_heartbeat(
    store: Store,
    *,
    node: str,
    host: str,
    gpus: str,
    model: str,
    queue: str,
    interval_s: float = DEFAULT_INTERVAL_S,
) -> Heartbeat:
    """Start a worker's heartbeat: its row is written before this returns, then every interval."""
    heartbeat = Heartbeat(
        store, node=node, host=host, gpus=gpus, model=model, queue=queue, interval_s=interval_s
    )
    heartbeat.start()
    return heartbeat


def _shard_of(app: Celery, task: Any, args: Any, kwargs: Any) -> int | None:
    """The shard id of a ``run_shard`` task of ``app``; None for any other task."""
    if task is None or getattr(task, "name", None) != RUN_SHARD or task.app is not app:
        return None
    if args:
        return int(args[0])
    if kwargs and "shard_id" in kwargs:
        return int(kwargs["shard_id"])
    return None
