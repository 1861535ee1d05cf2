"""The two small daemon threads a displayed panel runs: its heartbeat, and its store queries.

Why threads of their own: the panel is fed from the engine loop (which must never block on a store query)
and from the kernel's main thread (which blocks in `jobs.wait()` for hours). A heartbeat sharing either
would stop exactly when the kernel is alive but busy, and the view would call a live kernel dead.
Both threads are daemons, start on first use, and end on `stop()` (the panel's close).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Coalescer", "Heartbeat"]

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls `beat()` every `interval` seconds on one daemon thread, from `start()` until `stop()`."""

    def __init__(self, interval: float, beat: Callable[[], None], *, name: str) -> None:
        self.interval = interval
        self._beat = beat
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start beating (idempotent; a stopped heartbeat stays stopped)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception:
                log.warning("jobwidget panel: heartbeat failed", exc_info=True)


class Coalescer:
    """Runs `work()` on one daemon thread when asked; requests that arrive meanwhile fold into one run.

    Runs are spaced by at least `min_interval` seconds, and by `duty` times the last run's duration, so a
    query that grows slow with the store (a full scan of 100,000 jobs) takes at most ~1/duty of a core.
    An `urgent` request (the user typed a search) skips the spacing.
    """

    def __init__(
        self, work: Callable[[], None], *, min_interval: float, duty: float = 10.0, name: str
    ) -> None:
        self._work = work
        self.min_interval = min_interval
        self.duty = duty
        self._name = name
        self._cond = threading.Condition()
        self._pending = False
        self._urgent = False
        self._stopped = False
        self._spacing = min_interval
        self._last_end = -float("inf")
        self._thread: threading.Thread | None = None
        self.runs = 0

    def request(self, *, urgent: bool = False) -> None:
        """Ask for a run (cheap: callable under other locks; the work runs on the worker thread)."""
        with self._cond:
            if self._stopped:
                return
            self._pending = True
            self._urgent = self._urgent or urgent
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._pending:
                    self._cond.wait()
                if self._stopped:
                    return
                wait = self._last_end + self._spacing - time.monotonic()
                if wait > 0 and not self._urgent:
                    self._cond.wait(wait)  # a later urgent request or stop() wakes it early
                    continue
                self._pending = self._urgent = False
            start = time.monotonic()
            try:
                self._work()
            except Exception:
                log.warning("jobwidget panel: background work failed", exc_info=True)
            end = time.monotonic()
            with self._cond:
                self.runs += 1
                self._last_end = end
                self._spacing = max(self.min_interval, self.duty * (end - start))
