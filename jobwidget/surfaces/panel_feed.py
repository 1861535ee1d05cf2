"""What feeds the panel: engine events in, cards and a status banner out, clicks back to the engine.

Kept apart from the view (`widget.JobsPanel`) as dask's progress widgets keep their feed apart: the
panel only renders what it is given, and this object decides what the banner says and when, and which
jobs it holds (a window onto the store: surfaces/panel_window.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobwidget.core.models import Job
from jobwidget.core.results import SyncResult
from jobwidget.engine.runtime import Engine
from jobwidget.surfaces.loop_thread import LoopThread
from jobwidget.surfaces.panel_window import Query, Window

if TYPE_CHECKING:
    from jobwidget.surfaces.widget import JobsPanel

__all__ = ["PanelFeed"]

log = logging.getLogger("jobwidget.surfaces.widget")
_MAX_READS = 25  # store reads for one "Show more" (each brings a page; most bring only new cards)


class PanelFeed:
    """One panel, fed from one engine running on `loop`."""

    def __init__(
        self,
        engine: Engine,
        loop: LoopThread,
        *,
        on_retry: Callable[[str], None] | None = None,
        on_detail: Callable[[str, bool, str], None] | None = None,
        on_open: Callable[[JobsPanel], None] | None = None,
    ) -> None:
        self.engine = engine
        self.loop = loop
        self._on_retry = on_retry  # the panel's Retry and card details are the controller's (launching.py)
        self._on_detail = on_detail
        self._on_open = on_open
        self.panel: JobsPanel | None = None
        self.visible = False
        self.closed = False
        # A failed panel Sync: (message, when); its banner stays until a later success.
        self._sync_error: tuple[str, datetime] | None = None
        self._sync_ok_at: datetime | None = None
        self._poll_error_at: datetime | None = None  # the poller's last failed round
        self._lock = threading.Lock()
        # The window (surfaces/panel_window.py). Changed jobs are offered to it under `_window_lock`; while
        # a store read for it is in flight they are held, then offered to the window the read made.
        self.window = Window()
        self._window_lock = threading.Lock()
        self._busy = False
        self._held: list[Job] = []
        self._wanted = Query()
        self._gen = 0  # bumped by each query; a load superseded before it starts is skipped
        self._ops: asyncio.Lock | None = None  # one window read at a time (on the engine loop)
        # Every successful sync counts as the provider's last answer, on a panel made later too.
        loop.loop.call_soon_threadsafe(engine.on, "sync_completed", self._on_sync_completed)

    def open(self) -> JobsPanel:
        """The panel, created on first use with the window's first page (newest jobs, active ones)."""
        if self.panel is None:
            from jobwidget.surfaces.widget import JobsPanel

            panel = JobsPanel(
                on_sync=self._sync,
                on_cancel=self._cancel,
                on_visible=self._seen,
                totals=self._totals,
                on_retry=self._on_retry,
                on_detail=self._on_detail,
                on_query=self._query,
                on_more=self._more,
            )
            if self._on_open is not None:
                self._on_open(panel)
            self.panel = panel
            self.loop.run(self._subscribe_and_load(self._next_gen(Query())))
            self.update_status()
        return self.panel

    def close(self) -> None:
        self.closed = True
        if self.panel is not None:
            self.panel.close()

    # -- engine -> panel ---------------------------------------------------------------------

    def _changed(self, event: dict[str, Any]) -> None:
        if self.panel is not None:
            self.offer(event["jobs"])
            self.panel.recount()  # counts move even when no card does (a job beyond the window)
            self.update_status()

    # -- the window: which jobs the panel holds -----------------------------------------------

    def offer(self, jobs: list[Job]) -> None:
        """Jobs that changed (from any thread): the panel shows those that belong in its window."""
        panel = self.panel
        if panel is None or self.closed:
            return
        with self._window_lock:
            if self._busy:
                self._held.extend(jobs)
            else:
                self._offer_locked(panel, jobs)

    def _offer_locked(self, panel: JobsPanel, jobs: list[Job]) -> None:
        shown, dropped = self.window.offer(jobs)
        if dropped:
            panel.remove(dropped, window=self.window.meta())
        panel.upsert(shown, window=self.window.meta())

    def _next_gen(self, query: Query) -> int:
        with self._window_lock:
            self._wanted = query
            self._gen += 1
            return self._gen

    def _query(self, filter_: str, search: str) -> None:
        """A view's filter and search (the comm thread): load the window for them from the store."""
        if not self.closed:
            self.loop.submit(self._load(self._next_gen(Query(filter_, search))))

    def _more(self, qv: int) -> None:
        """A view's "Show more" for window `qv` (the comm thread): the next page from the store."""
        if not self.closed:
            self.loop.submit(self._extend(qv))

    async def _subscribe_and_load(self, gen: int) -> None:
        """Subscribe, then load, in one step on the loop: no change falls between the read and the feed."""
        self.engine.on("jobs_changed", self._changed)
        await self._load(gen)

    async def _load(self, gen: int) -> None:
        if self._ops is None:
            self._ops = asyncio.Lock()
        async with self._ops:
            with self._window_lock:
                if gen != self._gen or self.closed:
                    return  # a later query replaces this one
                query, self._busy = self._wanted, True
            try:
                statuses, search = query.statuses, query.search or None
                page = await self.engine.list_jobs(status=statuses, search=search, limit=self.window.page + 1)
                active: list[Job] = []
                if query.active_statuses:
                    active = await self.engine.list_jobs(
                        status=query.active_statuses, search=search, limit=self.window.active_cap
                    )
            except Exception as exc:
                self._settle(None, f"Could not load jobs from the store: {exc}")
                return

            def reset(panel: JobsPanel) -> None:
                panel.set_jobs(self.window.reset(query, page, active), window=self.window.meta())

            self._settle(reset)

    async def _extend(self, qv: int) -> None:
        if self._ops is None:
            self._ops = asyncio.Lock()
        async with self._ops:
            with self._window_lock:
                spec = self.window.next_page() if qv == self.window.qv and not self.closed else None
                if spec is None:
                    return  # an older query's page, or nothing more to read
                query, self._busy = self.window.query, True
            added: list[Job] = []
            error = None
            try:
                # Read on until a page of new cards came: some may be cards the window holds already.
                for _ in range(_MAX_READS):
                    cursor, limit = spec
                    jobs = await self.engine.list_jobs(
                        status=query.statuses, search=query.search or None, limit=limit, before=cursor
                    )
                    with self._window_lock:
                        added += self.window.extend(jobs, limit)
                        spec = self.window.next_page(self.window.page - len(added))
                    if spec is None or len(added) >= self.window.page:
                        break
            except Exception as exc:
                error = f"Could not load more jobs from the store: {exc}"

            def extend(panel: JobsPanel) -> None:
                panel.upsert(added, window=self.window.meta())

            self._settle(extend, error)

    def _settle(self, apply: Callable[[JobsPanel], None] | None, error: str | None = None) -> None:
        """End a window read: apply it, then offer the jobs that changed meanwhile, in order."""
        panel = self.panel
        with self._window_lock:
            held, self._held, self._busy = self._held, [], False
            if panel is not None and not self.closed:
                try:
                    if apply is not None:
                        apply(panel)
                finally:
                    self._offer_locked(panel, held)
        if error is not None:
            log.warning("jobwidget panel: %s", error)
            if panel is not None:
                panel.toast(error, "error")

    def _totals(self, search: str) -> Mapping[str, Mapping[str, Any]]:
        """Counts and cost per status over the whole store, for the panel header (its worker thread)."""
        return {} if self.closed else self.loop.run(self.engine.totals(search))

    def update_status(self, error: str | None = None) -> None:
        """Push provider, freshness and the error banner to the panel.

        The banner shows the poller's error while polling fails, else a failed panel Sync's, each until
        the provider next answers (a poll round or any sync), with the time it last did.
        """
        panel = self.panel
        if panel is None:
            return
        status = self.engine.status()
        with self._lock:
            successes = [t for t in (status.last_success, self._sync_ok_at) if t is not None]
            last_success = max(successes) if successes else None
            failed = self._sync_error
            if failed is not None and last_success is not None and last_success > failed[1]:
                self._sync_error = failed = None
            poll_error = error or status.error
            failed_at = self._poll_error_at
            if poll_error and failed_at and last_success and last_success > failed_at:
                poll_error = None  # a sync got through since; the poller retries at once (poked)
        panel.set_status(
            provider_label=status.provider_label,
            demo=status.demo,
            source=status.source,
            updated_at=status.updated_at,
            error=poll_error or (failed[0] if failed else None),
            last_success=last_success,
            polling=status.polling,
        )

    def on_poll_state(self, state: dict[str, Any]) -> None:
        if state.get("error"):
            with self._lock:
                self._poll_error_at = datetime.now(UTC)
        self.update_status(error=state.get("error"))

    def _on_sync_completed(self, _event: dict[str, Any]) -> None:
        """Any successful sync (the panel's, `jobs.sync()`, the HTTP API's) is a success to show; a poller
        backing off after errors retries now instead of keeping its stale error up for minutes."""
        with self._lock:
            self._sync_ok_at = datetime.now(UTC)
        if self.engine.status().error and self.engine.polling:
            self.engine.poke()
        self.update_status()

    def _watch_sync_error(self) -> None:
        """While a failed Sync's banner is up, look every 2 s for a poll round that reached the provider
        (a round that changes no job sends no event). On the engine loop; ends with the banner."""
        if self.closed or self._sync_error is None:
            return
        self.update_status()
        if self._sync_error is not None:
            self.loop.loop.call_later(2.0, self._watch_sync_error)

    # -- panel -> engine ---------------------------------------------------------------------

    def _sync(self) -> None:
        panel = self.panel
        if panel is None or self.closed:
            return
        panel.sync_started()
        future = self.loop.submit(self.engine.sync())

        def done(f: concurrent.futures.Future[SyncResult]) -> None:
            if f.cancelled():  # the engine is closing
                panel.sync_finished(None, error="the sync was cancelled")
                return
            exc = f.exception()
            now = datetime.now(UTC)
            with self._lock:
                watching = self._sync_error is not None
                if exc is None:
                    self._sync_error = None
                    self._sync_ok_at = now
                else:
                    self._sync_error = (str(exc) or type(exc).__name__, now)
            panel.sync_finished(None if exc else f.result(), error=str(exc) if exc else None)
            self.update_status()
            if exc is not None and not watching and not self.closed:
                self.loop.loop.call_soon_threadsafe(self._watch_sync_error)

        future.add_done_callback(done)

    def _cancel(self, job_id: str) -> None:
        if self.closed:
            return
        future = self.loop.submit(self.engine.cancel(job_id))

        def done(f: concurrent.futures.Future[Job]) -> None:
            exc = None if f.cancelled() else f.exception()
            if exc is not None and self.panel is not None:
                self.panel.toast(f"Could not cancel {job_id}: {exc}", "error", job_id=job_id)

        future.add_done_callback(done)

    def _seen(self, visible: bool) -> None:
        self.visible = bool(visible)
        if visible and not self.closed:
            self.loop.loop.call_soon_threadsafe(self.engine.poke)
