"""The background poller: one asyncio task per engine that keeps active jobs current.

- Status refresh every `interval` (30 s default); running jobs' log tails every `progress_interval`
  (5 s) while a panel is displayed, within a share of the rate limit.
- Several processes on one store: only the holder of the store's lease calls the provider; the others
  follow the store (see `SyncService.follow`). A dead holder's lease expires or is taken over at once.
- Errors never end the task: it backs off exponentially, reports `poll_error`, and recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jobwidget.core.errors import RateLimited
from jobwidget.engine.events import EventBus
from jobwidget.engine.providers.base import MAX_SERVER_WAIT
from jobwidget.engine.stores import Store, new_holder_id
from jobwidget.engine.sync import SyncService

__all__ = ["Poller"]

log = logging.getLogger("jobwidget.poller")

_MAX_BACKOFF_S = 300.0
_PROGRESS_SHARE = 0.5  # at most this share of the rate limit goes to reading logs


class Poller:
    def __init__(
        self,
        service: SyncService,
        store: Store,
        bus: EventBus,
        *,
        interval: float,
        progress_interval: float,
        max_requests_per_minute: float = 3000.0,
        visible: Callable[[], bool] = lambda: False,
        on_state: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.store = store
        self.bus = bus
        self.interval = interval
        self.progress_interval = progress_interval
        self.max_rpm = max_requests_per_minute
        self.visible = visible
        self.on_state = on_state
        self.clock = clock
        self.holder = new_holder_id()
        self.lease_name = f"poller:{service.provider.name}"
        self.lease_ttl = max(30.0, 3 * min(interval, 10.0))
        self.is_leader = False
        self.errors = 0  # consecutive failed ticks
        self.last_error: str | None = None
        self.last_success: datetime | None = None  # end of the last round that reached the provider
        self.waiting = False  # sitting out a pause the provider asked for (Retry-After)
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._next_status = 0.0
        self._next_progress = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start on the running loop (idempotent: one poller per engine)."""
        if not self.running:
            self._next_status = self._next_progress = 0.0
            self._task = asyncio.get_running_loop().create_task(self._run(), name="jobwidget-poller")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.is_leader:
            with contextlib.suppress(Exception):
                await self.store.release_lease(self.lease_name, self.holder)
            self.is_leader = False

    def poke(self) -> None:
        """Wake the loop now (a panel became visible, a job was added)."""
        self._next_progress = 0.0
        self._wake.set()

    async def tick(self) -> float:
        """One round: the lease, then whatever refresh is due. Returns seconds until the next round."""
        now = self.clock()
        self.is_leader = await self.store.acquire_lease(self.lease_name, self.holder, self.lease_ttl)
        if self.is_leader:
            if now >= self._next_status:
                await self.service.refresh_active()
                self._next_status = now + self.interval
            if self.visible() and now >= self._next_progress:
                budget = int(self.max_rpm * _PROGRESS_SHARE * self.progress_interval / 60.0)
                await self.service.refresh_progress(budget=budget)
                self._next_progress = now + self.progress_interval
            self.last_success = datetime.now(UTC)
        self.ticks += 1
        # Followers wake to renew their claim on a dead leader's lease; leaders for their next refresh.
        wake_at = [now + self.lease_ttl / 3]
        if self.is_leader:
            wake_at.append(self._next_status)
            if self.visible():
                wake_at.append(self._next_progress)
        return max(0.05, min(wake_at) - self.clock())

    async def _run(self) -> None:
        while True:
            try:
                delay = await self.tick()
                if self.errors:
                    log.info("jobwidget: polling recovered after %d failed rounds", self.errors)
                    self.errors, self.last_error = 0, None
                    self._report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                self.last_error = str(exc) or type(exc).__name__
                delay = min(_MAX_BACKOFF_S, max(1.0, min(self.interval, 30.0)) * 2 ** (self.errors - 1))
                asked = _asked_wait(exc)
                if asked is not None:  # the provider said how long: wait at least that, however long
                    delay = max(delay, asked)
                    self.last_error = (
                        f"{self.service.provider.label} asked to pause requests: polling waits "
                        f"{delay:.0f} s ({self.last_error})"
                    )
                self.waiting = asked is not None
                # Retry sooner than the full interval next time, but not before the backoff.
                self._next_status = self._next_progress = 0.0
                log.warning("jobwidget: poll failed (%s); retrying in %.0f s", self.last_error, delay)
                self.bus.emit(
                    "poll_error",
                    {
                        "error": self.last_error,
                        "consecutive": self.errors,
                        "retry_in": delay,
                        "waiting": self.waiting,
                    },
                )
                self._report(retry_in=delay)
            self._wake.clear()
            if self.waiting:  # a panel opening must not send requests the provider asked us to hold
                await asyncio.sleep(delay)
                self.waiting = False
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _report(self, retry_in: float | None = None) -> None:
        if self.on_state is not None:
            state: dict[str, Any] = {
                "error": self.last_error,
                "errors": self.errors,
                "leader": self.is_leader,
                "last_success": self.last_success,
            }
            if retry_in is not None:
                state.update(retry_in=retry_in, waiting=self.waiting)
            with contextlib.suppress(Exception):
                self.on_state(state)


def _asked_wait(exc: Exception) -> float | None:
    """The wait a rate-limited provider asked for, bounded by the longest wait honoured."""
    if isinstance(exc, RateLimited) and exc.retry_after is not None and exc.retry_after > 0:
        return min(exc.retry_after, MAX_SERVER_WAIT)
    return None
