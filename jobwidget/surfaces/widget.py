"""The live panel: ONE anywidget showing jobs as cards (a window onto the store: panel_window.py).

Why it looks like this:
- The ESM/CSS text travels in every comm_open, so there is one widget for all jobs, not one per job.
- Re-sending the whole job list on each change costs ~490 KB with 1,000 jobs, so the `snapshot` trait is
  the source of truth only for (re)syncs, and everyday changes go out as small sequenced `patch` messages
  (a new card whole, a changed card as the fields that changed: ~300 B for one job's progress tick).
  A view that loads late or sees a sequence gap asks for a resync and gets a fresh snapshot.
- The controller drives the panel from its engine thread while the kernel may be blocked in a cell; trait
  changes and `send` from another thread do reach the browser, so every public method here is thread-safe
  (one lock around the card table and every outgoing message, which also keeps `seq` in send order).
- Changes are coalesced: at most `max_flush_hz` patch messages a second, each carrying only changed cards.
- Displaying the panel refreshes the snapshot first, so the view that output creates is current without a
  round trip (the kernel answers a view's messages only between cells; `jobs.wait()` may block for hours).
- Once displayed, the panel beats every `heartbeat_s` (2 s) from a thread of its own, busy kernel or not; a
  view that hears nothing from the kernel for a few beats says it is disconnected (restarted, shut down)
  instead of showing stale cards as live, and disables its buttons.
- The header's counts and total cost are the store's (every job, not only the cards loaded), for each
  search text a view sent: one SQL query per search, on a worker thread, throttled while jobs change.
- The cards are a window onto the store (`PanelFeed` and `panel_window.Window` choose them): which one
  travels with the cards as `window`, so a view can say "Showing 300 of 10,000" and offer "Show more".

The protocol (the traits, every message each way, the card) is described once, as typed JSDoc, in
js/src/protocol.js, beside its pure logic; this module and the view (js/src/widget.js) follow it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import anywidget
import traitlets

from jobwidget.core.models import Job
from jobwidget.core.results import SyncResult
from jobwidget.surfaces.cards import card_diff, clip, epoch, job_to_card
from jobwidget.surfaces.front_end import front_end_module, static_path
from jobwidget.surfaces.panel_inbox import PanelInbox, _now, _safe_call
from jobwidget.surfaces.panel_threads import Coalescer, Heartbeat

__all__ = ["JobsPanel", "job_to_card", "static_path"]

log = logging.getLogger(__name__)

_MAX_SHORT = 40
_MAX_BANNER = 300
_MAX_TOAST = 300

# A flush that touches more than this share of the cards goes out as a snapshot instead of a patch: the
# bytes are the same, and it keeps the snapshot (what late views and saved notebooks see) fresh.
_SNAPSHOT_MIN_CHANGES = 64
_SNAPSHOT_SHARE = 0.5

# The view calls the kernel gone after ~3.5 missed beats (js/src/widget.js DISCONNECT_MS): keep in step.
_HEARTBEAT_S = 2.0
_TOTALS_MIN_INTERVAL_S = 1.0  # at most one totals query round a second while jobs change


class JobsPanel(PanelInbox, anywidget.AnyWidget):
    """One live panel of job cards, fed by the controller from any thread.

    Feed it with `set_jobs` (the full list: only differences go out), `upsert` and `remove`; report
    freshness and errors with `set_status`; bracket a provider sync with `sync_started`/`sync_finished`.
    Clicks in the view come back through `on_sync`, `on_cancel(job_id)` and `on_visible(bool)` (any view
    of the panel visible on screen, so the engine can refresh progress faster). `totals(search)` answers
    the header's counts and costs per status over the whole store (`JobStore.totals`); it runs on the
    panel's own worker thread.
    """

    _esm = front_end_module()  # js/src/protocol.js + widget.js as one module (surfaces/front_end.py)
    _css = static_path("widget.css")

    snapshot = traitlets.Dict().tag(sync=True)
    status = traitlets.Dict().tag(sync=True)
    syncing = traitlets.Bool(False).tag(sync=True)
    totals = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        *,
        on_sync: Callable[[], None] | None = None,
        on_cancel: Callable[[str], None] | None = None,
        on_visible: Callable[[bool], None] | None = None,
        totals: Callable[[str], Mapping[str, Mapping[str, Any]]] | None = None,
        on_retry: Callable[[str], None] | None = None,
        on_detail: Callable[[str, bool, str], None] | None = None,
        on_query: Callable[[str, str], None] | None = None,
        on_more: Callable[[int], None] | None = None,
        max_flush_hz: float = 10.0,
        heartbeat_s: float = _HEARTBEAT_S,
    ) -> None:
        for name, value in (("max_flush_hz", max_flush_hz), ("heartbeat_s", heartbeat_s)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self._lock = threading.RLock()
        self._cards: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._sent: dict[str, dict[str, Any]] = {}  # each card as views last received it (for diffs)
        self._window: dict[str, Any] | None = None  # which part of the store the cards are (panel_window)
        self._window_dirty = False
        self._pending_status: dict[str, Any] | None = None
        self._seq = 0
        self._min_interval = 1.0 / float(max_flush_hz)
        self._last_flush = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False
        self._views: dict[str, float] = {}  # view id -> monotonic time it last said it is visible
        self._visible = False
        self.on_sync = on_sync
        self.on_cancel = on_cancel
        self.on_visible = on_visible
        self.on_retry = on_retry
        self.on_detail = on_detail
        self.on_query = on_query
        self.on_more = on_more
        self.stats = {"patches": 0, "snapshots": 0, "resyncs": 0, "beats": 0, "totals": 0}
        self._totals_source = totals
        self._searches: dict[str, str] = {}  # view id -> its search text, oldest first
        self._heartbeat = Heartbeat(float(heartbeat_s), self._beat, name="jobwidget-panel-heartbeat")
        self._totals_worker = Coalescer(
            self._compute_totals, min_interval=_TOTALS_MIN_INTERVAL_S, name="jobwidget-panel-totals"
        )
        super().__init__(snapshot={"seq": 0, "now": _now(), "jobs": []})
        self.on_msg(self._on_view_msg)

    def __repr__(self) -> str:
        return f"JobsPanel(jobs={len(getattr(self, '_cards', ()))})"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """Display: bring the snapshot up to date first.

        The view that this output creates starts from the snapshot trait, and the trait update goes out
        before the display message, so the view needs no resync round trip: that matters when the cell
        goes on to block (`jobs.wait()`), since the kernel answers a view's messages only once it ends.
        """
        with self._lock:
            self._flush_locked()
            if self.snapshot.get("seq") != self._seq:
                self._publish_snapshot()
        if self._totals_source is not None and not self.totals:
            _safe_call("totals", self._compute_totals)  # the first view starts with the store's numbers
        self._heartbeat.start()
        return super()._repr_mimebundle_(**kwargs)

    # ----------------------------------------------------------------- jobs

    @property
    def seq(self) -> int:
        """Sequence number of the last patch or snapshot sent."""
        return self._seq

    @property
    def visible(self) -> bool:
        """Whether any view of this panel reported itself on screen recently."""
        with self._lock:
            flipped = self._prune_views()
            visible = self._visible
        self._notify_visible(flipped)
        return visible

    def cards(self) -> dict[str, dict[str, Any]]:
        """A copy of the current cards by job id (what a fully synced view shows)."""
        with self._lock:
            return {k: dict(v) for k, v in self._cards.items()}

    def set_jobs(self, jobs: Iterable[Job], *, window: Mapping[str, Any] | None = None) -> None:
        """Make the panel show exactly `jobs`; only cards that differ are sent. `window`: what part of the
        store they are (`Window.meta`), sent in the same message as the cards."""
        new = {}
        for job in jobs:
            new[job.job_id] = job_to_card(job)
        with self._lock:
            changed = [self._drop(job_id) for job_id in [k for k in self._cards if k not in new]]
            changed += [self._put(job_id, card) for job_id, card in new.items()]
            self._set_window(window)
            self._schedule()
        self._recount(any(changed))

    def upsert(self, jobs: Iterable[Job], *, window: Mapping[str, Any] | None = None) -> None:
        """Add or update these jobs' cards (unchanged cards send nothing)."""
        cards = [job_to_card(job) for job in jobs]
        with self._lock:
            changed = [self._put(card["id"], card) for card in cards]
            self._set_window(window)
            self._schedule()
        self._recount(any(changed))

    def remove(self, job_ids: Iterable[str], *, window: Mapping[str, Any] | None = None) -> None:
        """Drop these jobs' cards (unknown ids are ignored)."""
        ids = [str(job_id) for job_id in job_ids]
        with self._lock:
            changed = [self._drop(job_id) for job_id in ids]
            self._set_window(window)
            self._schedule()
        self._recount(any(changed))

    def recount(self) -> None:
        """The store changed (maybe beyond the cards held): ask the totals worker for fresh counts."""
        self._recount(True)

    @property
    def window(self) -> dict[str, Any] | None:
        """The window description last given with the cards (None: the cards are all there is)."""
        with self._lock:
            return None if self._window is None else dict(self._window)

    def flush(self) -> None:
        """Send pending changes now instead of waiting for the next coalescing slot."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Stop the coalescing timer, the heartbeat and the totals worker; close the comm."""
        if not hasattr(self, "_lock"):  # __init__ refused its arguments; ipywidgets' __del__ still calls us
            super().close()
            return
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._heartbeat.stop()
        self._totals_worker.stop()
        super().close()

    def _put(self, job_id: str, card: dict[str, Any]) -> bool:
        self._removed.discard(job_id)
        if self._cards.get(job_id) == card:
            return False
        self._cards[job_id] = card
        self._dirty.add(job_id)
        return True

    def _drop(self, job_id: str) -> bool:
        if self._cards.pop(job_id, None) is None:
            return False
        self._dirty.discard(job_id)
        self._removed.add(job_id)
        return True

    def _set_window(self, window: Mapping[str, Any] | None) -> None:
        if window is not None and dict(window) != self._window:
            self._window = dict(window)
            self._window_dirty = True

    def _schedule(self) -> None:
        """Flush now if the last flush is old enough, else once when it is (one timer at most)."""
        pending = self._dirty or self._removed or self._window_dirty or self._pending_status is not None
        if self._closed or self._timer is not None or not pending:
            return
        wait = self._min_interval - (time.monotonic() - self._last_flush)
        if wait <= 0:
            self._flush_locked()
            return
        timer = threading.Timer(wait, lambda: self._timer_fired(timer))
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _timer_fired(self, timer: threading.Timer) -> None:
        with self._lock:
            # A flush that ran meanwhile cancelled this timer (and maybe armed a new one): leave that alone.
            if self._timer is timer:
                self._timer = None
                self._flush_locked()

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed:
            return
        sent = False
        if self._pending_status is not None:
            self.status, self._pending_status = self._pending_status, None
            sent = True
        if self._flush_cards_locked():
            sent = True
        if sent:
            self._last_flush = time.monotonic()

    def _flush_cards_locked(self) -> bool:
        """Send the changed cards as one patch (or a snapshot when most cards changed); False if none."""
        if not (self._dirty or self._removed or self._window_dirty):
            return False
        upserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for job_id in sorted(self._dirty):
            card = self._cards[job_id]
            before = self._sent.get(job_id)
            if before is None:
                upserts.append(card)
            elif diff := card_diff(before, card):
                updates.append(diff)
            self._sent[job_id] = card
        removes = sorted(self._removed)
        for job_id in removes:
            self._sent.pop(job_id, None)
        self._dirty.clear()
        self._removed.clear()
        window, self._window_dirty = self._window_dirty, False
        changes = len(upserts) + len(updates) + len(removes)
        if not changes and not window:
            return False  # changed and changed back within one coalescing slot
        self._seq += 1
        if changes >= max(_SNAPSHOT_MIN_CHANGES, _SNAPSHOT_SHARE * len(self._cards)):
            self._publish_snapshot()
        else:
            self.stats["patches"] += 1
            patch = {"type": "patch", "seq": self._seq, "now": _now(), "upsert": upserts, "remove": removes}
            if updates:
                patch["update"] = updates
            if window and self._window is not None:
                patch["window"] = self._window
            self._emit(patch)
        return True

    def _publish_snapshot(self) -> None:
        """Set the snapshot trait to every card at the current seq (pending changes are in it already)."""
        self._dirty.clear()
        self._removed.clear()
        self._window_dirty = False
        self._sent = dict(self._cards)
        self.stats["snapshots"] += 1
        snapshot: dict[str, Any] = {"seq": self._seq, "now": _now(), "jobs": list(self._cards.values())}
        if self._window is not None:
            snapshot["window"] = self._window
        self.snapshot = snapshot

    def _emit(self, content: dict[str, Any]) -> None:
        if not self._closed:
            self.send(content)

    # ----------------------------------------------------------------- status and sync

    def set_status(
        self,
        *,
        provider_label: str,
        demo: bool,
        source: str | None = None,
        updated_at: datetime | None = None,
        error: str | None = None,
        last_success: datetime | None = None,
        polling: bool | None = None,
    ) -> None:
        """Replace the toolbar status: provider, demo badge, freshness mark, error banner.

        Each call replaces the whole status, so pass the last successful `updated_at` along with an
        `error` (the mark then shows how stale the cards are); `error=None` clears the banner, which
        otherwise stays up, saying when the provider last answered (`last_success`, shown only with an
        error). Cheap to call on every engine event: an unchanged status sends nothing, and changes share
        the cards' flushes.
        """
        error_text = clip(error, _MAX_BANNER)
        value = {
            "provider": clip(provider_label, _MAX_SHORT) or "provider",
            "demo": bool(demo),
            "source": clip(source, _MAX_SHORT),
            "updated_at": None if updated_at is None else round(updated_at.timestamp(), 3),
            "error": error_text,
            "last_success": None if error_text is None or last_success is None else epoch(last_success),
            "polling": None if polling is None else bool(polling),
            "now": _now(),
        }
        with self._lock:
            current = self._pending_status if self._pending_status is not None else self.status
            if _without_now(value) != _without_now(current):
                self._pending_status = value  # goes out with the next flush: same rate limit as cards
                self._schedule()
            flipped = self._prune_views()
        self._notify_visible(flipped)  # a view that stopped reporting expires here (called every poll)

    def sync_started(self) -> None:
        """Spinner on (the Sync button is disabled in every view)."""
        with self._lock:
            self.syncing = True

    def sync_finished(self, result: SyncResult | None, error: str | None = None) -> None:
        """Spinner off, and a toast: the result's message ("Discovered N new jobs from ...") or the error."""
        with self._lock:
            self.syncing = False
            if error:
                self._toast(f"Sync failed: {error}", "error")
            elif result is not None:
                synced = result.synced if isinstance(result.synced, int) else None
                text = result.message if isinstance(result.message, str) and result.message else None
                if text is None:
                    status = self._pending_status if self._pending_status is not None else self.status
                    provider = status.get("provider") or "the provider"
                    text = f"Discovered {synced or 0} new job{'' if synced == 1 else 's'} from {provider}"
                self._toast(text, "info", synced=synced)

    def toast(self, text: str, level: str = "info", *, job_id: str | None = None) -> None:
        """Show a short transient message in every view ("info" or "error").

        With `job_id`, an error toast also re-enables that card's Cancel button (the cancel failed).
        """
        with self._lock:
            self._toast(text, level, job_id=job_id)

    def _toast(self, text: str, level: str, synced: int | None = None, job_id: str | None = None) -> None:
        msg: dict[str, Any] = {
            "type": "toast",
            "level": "error" if level == "error" else "info",
            "text": clip(text, _MAX_TOAST) or "",
            "now": _now(),
        }
        if synced is not None:
            msg["synced"] = synced
        if job_id is not None:
            msg["job_id"] = job_id
        self._emit(msg)

    def send_detail(self, content: Mapping[str, Any]) -> None:
        """Send a card's detail or log message (surfaces/panel_detail.py) to every view; views that do not
        have that card open ignore it. Never kept in a trait."""
        with self._lock:
            self._emit({**content, "now": _now()})

    # ----------------------------------------------------------------- heartbeat and totals

    @property
    def beating(self) -> bool:
        """Whether the heartbeat thread runs (from the first display or view message until close)."""
        return self._heartbeat.alive

    def _beat(self) -> None:
        with self._lock:
            if not self._closed:
                self.stats["beats"] += 1
                self._emit({"type": "beat", "seq": self._seq, "now": _now()})


def _without_now(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "now"}
