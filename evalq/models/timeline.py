"""What the engine did over time, for benchmarks: a vLLM stat logger writing a timeline.

Set ``$EVALQ_ENGINE_TIMELINE`` to a file path and the asynchronous engine appends one JSON
line per window (``WINDOW_S``) of engine steps: requests running and waiting, KV-cache use,
prompt and generated tokens, prefix-cache queries and hits, preemptions. A benchmark reads it
to tell a starved engine (few requests running) from a busy one, and the ramp and the tail
of a run from its middle. Nothing is recorded when the variable is unset.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

TIMELINE_ENV = "EVALQ_ENGINE_TIMELINE"
WINDOW_S = 0.5


class Window:
    """Totals and peaks of the engine steps inside one window."""

    def __init__(self, start: float) -> None:
        """An empty window starting at ``start`` (``time.time()``)."""
        self.start = start
        self.steps = 0
        self.running_sum = 0
        self.running_max = 0
        self.waiting_max = 0
        self.kv_max = 0.0
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.preempted = 0
        self.finished = 0

    def add(self, scheduler: Any, iteration: Any) -> None:
        """Fold one ``record`` call (either part may be missing) into the window."""
        if scheduler is not None:
            self.steps += 1
            self.running_sum += scheduler.num_running_reqs
            self.running_max = max(self.running_max, scheduler.num_running_reqs)
            self.waiting_max = max(self.waiting_max, scheduler.num_waiting_reqs)
            self.kv_max = max(self.kv_max, float(scheduler.kv_cache_usage))
            cache = getattr(scheduler, "prefix_cache_stats", None)
            if cache is not None:
                self.prefix_queries += cache.queries
                self.prefix_hits += cache.hits
        if iteration is not None:
            self.prompt_tokens += iteration.num_prompt_tokens
            self.generated_tokens += iteration.num_generation_tokens
            self.preempted += iteration.num_preempted_reqs
            self.finished += len(iteration.finished_requests)

    def row(self) -> dict[str, Any]:
        """The window as one JSON-ready line."""
        return {
            "pid": os.getpid(),
            "t": round(self.start, 3),
            "steps": self.steps,
            "running_mean": round(self.running_sum / self.steps, 1) if self.steps else 0,
            "running_max": self.running_max,
            "waiting_max": self.waiting_max,
            "kv_max": round(self.kv_max, 4),
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "prefix_queries": self.prefix_queries,
            "prefix_hits": self.prefix_hits,
            "preempted": self.preempted,
            "finished": self.finished,
        }


def timeline_loggers() -> list[Any] | None:
    """The stat-logger factories for ``AsyncLLM`` when ``$EVALQ_ENGINE_TIMELINE`` is set.

    ``None`` otherwise, which leaves vLLM's own loggers as they are.
    """
    env = os.environ.get(TIMELINE_ENV)
    if not env:
        return None
    path: str = env
    from vllm.v1.metrics.loggers import StatLoggerBase

    class TimelineLogger(StatLoggerBase):  # type: ignore[misc]
        """Appends a window of engine steps to ``path`` every ``WINDOW_S`` seconds."""

        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index
            self._lock = threading.Lock()
            self._window = Window(time.time())
            # Windows are also closed on a clock, so a run's last steps are written while
            # the engine idles after them.
            threading.Thread(target=self._tick, name="evalq-timeline", daemon=True).start()

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            with self._lock:
                self._roll(time.time())
                self._window.add(scheduler_stats, iteration_stats)

        def log_engine_initialized(self) -> None:
            with self._lock:
                self._window = Window(time.time())

        def _tick(self) -> None:
            while True:
                time.sleep(WINDOW_S)
                with self._lock:
                    self._roll(time.time())

        def _roll(self, now: float) -> None:
            if now - self._window.start >= WINDOW_S:
                self._write(self._window)
                self._window = Window(now)

        def _write(self, window: Window) -> None:
            if window.steps or window.finished:
                with open(path, "a", encoding="utf-8") as out:
                    out.write(json.dumps(window.row()) + "\n")

    # vLLM adds its own periodic log line to the loggers it is given.
    return [TimelineLogger]
