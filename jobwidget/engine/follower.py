"""Following the store's changes made by other processes (other notebooks, `jobwidget serve`).

A store that pushes its commits (PostgreSQL's LISTEN/NOTIFY: a `listen()` async iterator of revisions)
is followed by push: a change reaches this process's panel, callbacks and event streams as soon as it
commits. Any other store (SQLite) is followed by checking its revision once a second. Either way the
catching up itself is `SyncService.follow`, which reads `changes_since` the last revision this process
saw: a burst of notifications is read once, a lost connection loses nothing (the reconnect catches up
from the same revision), and a job already announced is not announced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from jobwidget.engine.stores import Store
from jobwidget.engine.sync import SyncService

__all__ = ["StoreFollower"]

log = logging.getLogger("jobwidget.engine")

POLL_S = 1.0  # how often a store without push is checked for other processes' changes
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 15.0


class StoreFollower:
    """Announces other processes' changes; reports a lost store connection while it lasts (`error`)."""

    def __init__(
        self,
        store: Store,
        service: SyncService,
        *,
        on_state: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.store = store
        self.service = service
        self.on_state = on_state
        self.poll_s = poll_s
        self.error: str | None = None  # the store connection's outage, None while it is up
        self.reconnects = 0
        self._dirty = asyncio.Event()

    @property
    def pushes(self) -> bool:
        return callable(getattr(self.store, "listen", None))

    async def run(self) -> None:
        if not self.pushes:
            await self._poll()
            return
        catch_up = asyncio.get_running_loop().create_task(self._catch_up(), name="jobwidget-follow-catch-up")
        try:
            await self._listen()
        finally:
            catch_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await catch_up

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.service.follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a locked or vanished store must not end following
                log.warning("jobwidget: following the store failed: %s", exc)

    async def _listen(self) -> None:
        """Listen, and after a lost connection listen again with backoff, saying so while it is down."""
        delay = _BACKOFF_FIRST_S
        while True:
            feed: AsyncIterator[int] = self.store.listen()  # type: ignore[attr-defined]
            try:
                async for _rev in feed:
                    if self.error is not None:  # connected again: the first revision is the catch-up point
                        log.info("jobwidget: the job store is reachable again; catching up")
                        self._set_error(None)
                    delay = _BACKOFF_FIRST_S
                    self._dirty.set()
                raise ConnectionError("the change feed ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.reconnects += 1
                why = str(exc) or type(exc).__name__
                if self.error is None:
                    log.warning("jobwidget: lost the job store's change feed (%s); reconnecting", why)
                self._set_error(f"the job store is unreachable, reconnecting: {why}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
            finally:
                with contextlib.suppress(Exception):
                    await feed.aclose()  # type: ignore[attr-defined]

    async def _catch_up(self) -> None:
        """Read what changed each time notifications arrived; many arriving meanwhile are read once."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.service.follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the feed reconnects and marks this dirty again
                log.warning("jobwidget: following the store failed: %s", exc)

    def _set_error(self, error: str | None) -> None:
        if error == self.error:
            return
        self.error = error
        if self.on_state is not None:
            with contextlib.suppress(Exception):
                self.on_state({"error": error, "store": True})
