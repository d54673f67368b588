"""Threads that never die silently: supervision, restart and health for the stats.

Every long-running thread of a live service (socket receivers, engine loops,
writers) runs its loop through `SupervisedThread`:

- the loop body returns when the service's stop event is set (a clean end);
- an unexpected exception is logged with its traceback, counted in the thread's
  `ThreadHealth` (errors, last error) and the body is started again after a
  short pause (`restarts`);
- more than `max_restarts` restarts within `window_s` seconds mean the thread
  cannot go on: its state becomes `failed` and `on_fatal(line)` is called once
  (the services then stop and exit non-zero with that line: a service never
  stays up deaf while answering heartbeats or sending stats).

`ThreadHealth.as_dict()` is what the stats messages carry per thread.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("livedenoise.stream")


@dataclass
class ThreadHealth:
    """One thread's health, written by that thread only, read by the stats."""

    name: str
    state: str = "starting"
    """starting | running | restarting | failed | stopped"""
    restarts: int = 0
    errors: int = 0
    """Unexpected exceptions caught (per message or in the loop)."""
    last_error: str = ""
    last_error_time: float | None = None
    """Unix time (s) of the last error."""

    def record(self, exc: BaseException, where: str = "") -> None:
        """Count one unexpected exception (the thread goes on)."""
        self.errors += 1
        self.last_error = f"{where}{type(exc).__name__}: {exc}"[:300]
        self.last_error_time = time.time()

    @property
    def ok(self) -> bool:
        return self.state in ("starting", "running", "stopped")

    def as_dict(self) -> dict:
        return {"state": self.state, "restarts": self.restarts, "errors": self.errors,
                "last_error": self.last_error, "last_error_time": self.last_error_time}


class SupervisedThread:
    """Run `body()` on a daemon thread, restarting it after unexpected exceptions.

    body: called with no argument; loops until `stop` is set, then returns.
    cleanup: called once when the thread ends for good (e.g. closes its socket).
    on_fatal: called once with one line when the restarts are exhausted.
    """

    def __init__(self, name: str, body: Callable[[], None], stop: threading.Event, *,
                 cleanup: Callable[[], None] | None = None, on_fatal: Callable[[str], None] | None = None,
                 max_restarts: int = 5, window_s: float = 60.0, backoff_s: float = 0.2,
                 health: ThreadHealth | None = None):
        self.name = name
        self.body = body
        self.stop = stop
        self.cleanup = cleanup
        self.on_fatal = on_fatal
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_s = backoff_s
        self.health = health if health is not None else ThreadHealth(name)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        recent: list[float] = []
        try:
            while True:
                self.health.state = "running"
                try:
                    self.body()
                    self.health.state = "stopped"
                    return
                except Exception as exc:  # noqa: BLE001 -- the point: nothing ends this thread silently
                    self.health.record(exc, "thread: ")
                    log.error("%s: unexpected error, restarting the thread:\n%s", self.name, traceback.format_exc())
                now = time.monotonic()
                recent = [t for t in recent if now - t < self.window_s] + [now]
                if len(recent) > self.max_restarts:
                    self.health.state = "failed"
                    line = (f"{self.name} failed {len(recent)} times in {self.window_s:.0f} s "
                            f"(last: {self.health.last_error}); cannot go on")
                    log.error(line)
                    if self.on_fatal is not None:
                        self.on_fatal(line)
                    return
                self.health.restarts += 1
                self.health.state = "restarting"
                if self.stop.wait(self.backoff_s):
                    self.health.state = "stopped"
                    return
        finally:
            if self.cleanup is not None:
                try:
                    self.cleanup()
                except Exception:  # noqa: BLE001
                    log.exception("%s: cleanup failed", self.name)
