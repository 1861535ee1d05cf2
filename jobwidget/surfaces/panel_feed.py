"""What feeds the panel: engine events in, cards and a status banner out, clicks back to the engine.

Kept apart from the view (`widget.JobsPanel`) as dask's progress widgets keep their feed apart: the
panel only renders what it is given, and this object decides what the banner says and when.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobwidget.core.models import Job
from jobwidget.core.results import SyncResult
from jobwidget.engine.runtime import Engine
from jobwidget.surfaces.loop_thread import LoopThread

if TYPE_CHECKING:
    from jobwidget.surfaces.widget import JobsPanel

__all__ = ["PANEL_JOBS", "PanelFeed"]

PANEL_JOBS = 1000  # newest jobs the panel starts with (active ones are always included)


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
        # Every successful sync counts as the provider's last answer, on a panel made later too.
        loop.loop.call_soon_threadsafe(engine.on, "sync_completed", self._on_sync_completed)

    def open(self) -> JobsPanel:
        """The panel, created (with the newest jobs and every active one) on first use."""
        if self.panel is None:
            from jobwidget.surfaces.widget import JobsPanel

            panel = JobsPanel(
                on_sync=self._sync,
                on_cancel=self._cancel,
                on_visible=self._seen,
                totals=self._totals,
                on_retry=self._on_retry,
                on_detail=self._on_detail,
            )
            if self._on_open is not None:
                self._on_open(panel)
            jobs = [
                *self.loop.run(self.engine.list_jobs(limit=PANEL_JOBS)),
                *self.loop.run(self.engine.active()),
            ]
            panel.set_jobs({j.job_id: j for j in jobs}.values())
            self.panel = panel
            self.loop.loop.call_soon_threadsafe(self.engine.on, "jobs_changed", self._changed)
            self.update_status()
        return self.panel

    def close(self) -> None:
        self.closed = True
        if self.panel is not None:
            self.panel.close()

    # -- engine -> panel ---------------------------------------------------------------------

    def _changed(self, event: dict[str, Any]) -> None:
        if self.panel is not None:
            self.panel.upsert(event["jobs"])
            self.update_status()

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
