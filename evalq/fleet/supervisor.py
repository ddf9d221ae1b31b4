"""A fleet: one ``evalq worker`` process per GPU group on this machine, supervised.

Each worker builds its engine once and then serves shards for as long as it lives, so an
engine start is paid once per process, never per shard. The supervisor restarts a worker
that dies (its unfinished shard goes back to the queue: Celery acknowledges a shard only
when it is done), gives up on one that keeps dying, and on stop asks every worker for a
warm shutdown before killing what is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from evalq.errors import UserError

log = logging.getLogger(__name__)

# A worker that exits with this code was given bad settings: restarting cannot help.
USER_ERROR_EXIT = 2
_PR_SET_PDEATHSIG = 1


@dataclass
class WorkerSpec:
    """How to start one worker of the fleet."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    # Workers of wave k+1 start once those of wave k serve: engines sharing a GPU must not
    # measure its free memory while another one is still loading.
    wave: int = 0


@dataclass
class _Member:
    spec: WorkerSpec
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    exits: list[float] = field(default_factory=list)
    restart_at: float | None = None
    failed: str | None = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    os.setsid()  # its own process group: a stop reaches the engine's processes too


class Fleet:
    """Starts, supervises and stops a set of worker processes."""

    def __init__(
        self,
        specs: Sequence[WorkerSpec],
        *,
        max_restarts: int = 3,
        restart_window_s: float = 600.0,
        stop_timeout_s: float = 60.0,
        start_timeout_s: float = 900.0,
        serving: Callable[[str, int], bool] | None = None,
        report: Callable[[str], None] = print,
    ) -> None:
        """Hold the specs; nothing starts before ``start``.

        Args:
            specs: One per worker.
            max_restarts: Restarts allowed per worker within ``restart_window_s``; one more
                exit and that worker is given up.
            restart_window_s: The window restarts are counted in.
            stop_timeout_s: How long a stopping worker may finish its shard before a kill.
            start_timeout_s: How long a wave may take to serve before the next one starts
                anyway.
            serving: ``(name, pid) -> bool``, whether that worker process serves (its engine
                is built); without it, every wave starts at once.
            report: Where lifecycle messages go (one line each).
        """
        self.members = [_Member(spec) for spec in specs]
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.stop_timeout_s = stop_timeout_s
        self.start_timeout_s = start_timeout_s
        self.serving = serving
        self.report = report
        self.stopping = threading.Event()

    def start(self, poll_s: float = 1.0) -> None:
        """Start every worker, a wave at a time: the next wave once this one serves."""
        waves = sorted({m.spec.wave for m in self.members})
        for i, wave in enumerate(waves):
            members = [m for m in self.members if m.spec.wave == wave]
            for member in members:
                self._spawn(member)
            if i + 1 < len(waves):
                self._wait_serving(members, poll_s)

    def _wait_serving(self, members: list[_Member], poll_s: float) -> None:
        if self.serving is None:
            return
        deadline = time.monotonic() + self.start_timeout_s
        waiting = members
        while not self.stopping.is_set():
            # A worker that died is the supervisor's to restart; it does not hold the wave.
            waiting = [
                m
                for m in waiting
                if m.proc is not None
                and m.proc.poll() is None
                and not self.serving(m.spec.name, m.proc.pid)
            ]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(m.spec.name for m in waiting)
                self.report(
                    f"{names}: not serving after {self.start_timeout_s:.0f} s; "
                    "starting the next wave anyway"
                )
                return
            self.stopping.wait(poll_s)

    def _spawn(self, member: _Member) -> None:
        spec = member.spec
        out: IO[bytes] | int | None = None
        if spec.log_path is not None:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            if member.log_file is None:
                member.log_file = spec.log_path.open("ab")
            out = member.log_file
        member.proc = subprocess.Popen(
            spec.argv,
            env=spec.env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            start_new_session=sys.platform != "linux",
        )
        member.restart_at = None
        self.report(f"worker {spec.name}: started (pid {member.proc.pid})")

    def pids(self) -> dict[str, int | None]:
        """Each worker's current process id (None while it waits for a restart)."""
        return {
            m.spec.name: m.proc.pid if m.proc and m.proc.poll() is None else None
            for m in self.members
        }

    def check(self) -> None:
        """Restart workers that died, give up on those that keep dying (call periodically).

        Raises:
            UserError: a worker exited with the bad-settings code; every worker would.
        """
        now = time.monotonic()
        for member in self.members:
            if member.failed or self.stopping.is_set():
                continue
            if member.restart_at is not None:
                if now >= member.restart_at:
                    self._spawn(member)
                continue
            assert member.proc is not None
            code = member.proc.poll()
            if code is None:
                continue
            name = member.spec.name
            if code == USER_ERROR_EXIT:
                where = f"; see {member.spec.log_path}" if member.spec.log_path else ""
                raise UserError(f"worker {name} rejected its settings (exit {code}){where}")
            member.exits = [t for t in member.exits if now - t < self.restart_window_s] + [now]
            restarts = len(member.exits)
            if restarts > self.max_restarts:
                member.failed = f"exited {restarts} times within {self.restart_window_s:.0f} s"
                self.report(f"worker {name}: exited with code {code}; giving up ({member.failed})")
                continue
            delay = min(2.0 ** (restarts - 1), 30.0)
            member.restart_at = now + delay
            self.report(
                f"worker {name}: exited with code {code}; restarting in {delay:.0f} s "
                f"(restart {restarts} of {self.max_restarts})"
            )

    @property
    def all_failed(self) -> bool:
        """True when no worker is left to run."""
        return all(m.failed for m in self.members)

    def supervise(self, poll_s: float = 1.0) -> int:
        """Check the workers until ``stopping`` is set or all have failed; then stop them.

        Returns:
            0 after a requested stop, 1 when every worker was given up.
        """
        try:
            while not self.stopping.wait(poll_s):
                self.check()
                if self.all_failed:
                    self.report("every worker has failed; stopping the fleet")
                    return 1
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        """Warm shutdown (SIGTERM) for every worker, then SIGKILL for any left at the timeout."""
        self.stopping.set()
        live = [m for m in self.members if m.proc is not None and m.proc.poll() is None]
        for member in live:
            assert member.proc is not None
            # The worker alone: its engine processes must live until its shard is done.
            member.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for member in live:
            assert member.proc is not None
            try:
                member.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.report(f"worker {member.spec.name}: still running; killing it")
                _signal_group(member.proc, signal.SIGKILL)
                member.proc.wait(timeout=30)
            # Its engine processes share its group; none may outlive it.
            _signal_group(member.proc, signal.SIGKILL)
            self.report(f"worker {member.spec.name}: stopped (code {member.proc.returncode})")
        for member in self.members:
            if member.log_file is not None:
                member.log_file.close()
                member.log_file = None


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
