"""Engine events: one ordered dispatcher per engine, so callbacks see a job's events in order and a
failing or slow callback can neither break the engine nor reorder anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["EVENT_TYPES", "PUBLIC_EVENTS", "EventBus"]

log = logging.getLogger("jobwidget.events")

PUBLIC_EVENTS = frozenset(
    {
        "job_status_changed",
        "job_progress",
        "jobs_discovered",
        "sync_completed",
        "poll_error",
        "job_flagged",
        "guard_action",
    }
)
# Internal: "jobs_changed" carries the changed Job objects (and the store revision holding them) to the
# panel and the HTTP server; "changes_announced" follows the public events of that write (see
# `SyncService.announce`), so the event stream can frame one write's events as one unit.
EVENT_TYPES = PUBLIC_EVENTS | {"jobs_changed", "changes_announced"}
Callback = Callable[[dict[str, Any]], Awaitable[None] | None]


class EventBus:
    """Queue-backed fan-out. `emit` never blocks or raises; a dispatcher task calls callbacks in order."""

    def __init__(self, *, on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self._callbacks: dict[str, list[Callback]] = {name: [] for name in EVENT_TYPES}
        self._queue: asyncio.Queue[dict[str, Any] | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_error = on_error
        self.errors = 0  # callbacks that raised, for tests and the panel

    def on(self, event: str, callback: Callback) -> None:
        self._check(event)
        if not callable(callback):
            raise TypeError(f"callback for {event!r} must be callable, got {type(callback).__name__}")
        self._callbacks[event].append(callback)

    def off(self, event: str, callback: Callback | None = None) -> None:
        """Remove one callback, or every callback of `event` when none is given."""
        self._check(event)
        if callback is None:
            self._callbacks[event].clear()
        else:
            with contextlib.suppress(ValueError):
                self._callbacks[event].remove(callback)

    @staticmethod
    def _check(event: str) -> None:
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event {event!r}; known events: {', '.join(sorted(EVENT_TYPES))}")

    def start(self) -> None:
        """Start dispatching on the running loop (the engine's)."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="jobwidget-events")

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Queue an event (call on the engine loop). Events without listeners cost nothing."""
        if self._queue is None or not self._callbacks.get(event):
            return
        self._queue.put_nowait({"type": event, **payload})

    async def drain(self) -> None:
        """Wait until every queued event has been delivered (tests, shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def aclose(self) -> None:
        if self._task is not None and self._queue is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(self._task, timeout=5)
            self._task = None

    async def _dispatch(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            try:
                if item is None:
                    return
                for callback in list(self._callbacks.get(item["type"], ())):
                    try:
                        result = callback(item)
                        if inspect.isawaitable(result):
                            await result
                    except Exception as exc:  # a user's callback must never break the engine
                        self.errors += 1
                        name = getattr(callback, "__qualname__", repr(callback))
                        log.warning("jobwidget: %s callback %s raised %r", item["type"], name, exc)
                        if self._on_error is not None:
                            with contextlib.suppress(Exception):
                                self._on_error(f"{item['type']} callback {name} raised {exc!r}", exc)
            finally:
                self._queue.task_done()
