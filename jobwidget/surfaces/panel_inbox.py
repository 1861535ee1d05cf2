"""What the panel's views say to the kernel, and what it answers: resyncs, Sync/Cancel/Retry clicks,
card details, which views are on screen, each view's search (whose totals the store counts), and the
window's query and "Show more" (which the feed answers from the store: surfaces/panel_window.py).

`PanelInbox` is the half of `JobsPanel` (surfaces/widget.py) that handles these; the other half keeps
the cards, the patches and the status the views show.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from jobwidget.surfaces.cards import _MAX_SHORT, clip, int_or_none, num
from jobwidget.surfaces.panel_window import FILTERS

if TYPE_CHECKING:
    from jobwidget.surfaces.panel_threads import Coalescer, Heartbeat

__all__ = ["PanelInbox"]

log = logging.getLogger("jobwidget.surfaces.widget")

# A view reports itself visible every 30 s (and says goodbye on unmount or page hide, best effort); one not
# heard from in this long is taken as gone. Long, because a cell that blocks (`jobs.wait()`) holds back
# every message from the browser, and taking a watched panel for gone only slows its progress updates.
_VIEW_EXPIRY_S = 600.0
# Searches kept per panel (one per view; the oldest is forgotten first) and their longest text.
_MAX_SEARCHES = 8
_MAX_SEARCH = 200


class PanelInbox:
    """Messages from views, for `JobsPanel`, which sets up these attributes."""

    if TYPE_CHECKING:
        _lock: threading.RLock
        _closed: bool
        _seq: int
        _views: dict[str, float]
        _visible: bool
        _searches: dict[str, str]
        _heartbeat: Heartbeat
        _totals_worker: Coalescer
        _totals_source: Callable[[str], Mapping[str, Mapping[str, Any]]] | None
        on_sync: Callable[[], None] | None
        on_cancel: Callable[[str], None] | None
        on_visible: Callable[[bool], None] | None
        on_retry: Callable[[str], None] | None
        on_detail: Callable[[str, bool, str], None] | None
        on_query: Callable[[str, str], None] | None
        on_more: Callable[[int], None] | None
        stats: dict[str, int]
        totals: dict[str, Any]
        snapshot: dict[str, Any]
        _cards: dict[str, dict[str, Any]]

        def toast(self, text: str, level: str = "info", *, job_id: str | None = None) -> None: ...
        def sync_started(self) -> None: ...
        def sync_finished(self, result: Any, error: str | None = None) -> None: ...
        def _emit(self, content: dict[str, Any]) -> None: ...
        def _flush_locked(self) -> None: ...
        def _publish_snapshot(self) -> None: ...

    # ----------------------------------------------------------------- messages from views

    def _on_view_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Dispatch one message from a view; never raises (the comm handler would only log it)."""
        try:
            self._dispatch(content)
        except Exception:
            log.exception("jobwidget panel: could not handle a message from the view")

    def _dispatch(self, content: Any) -> None:
        if not isinstance(content, Mapping):
            return
        self._heartbeat.start()  # a view exists (displayed in an earlier session of the page, say)
        kind = content.get("type")
        if kind == "resync":
            self._answer_resync(content.get("seq"))
        elif kind == "sync":
            self._handle_sync()
        elif kind == "cancel":
            self._handle_cancel(content.get("job_id"))
        elif kind == "visible":
            self._set_view_visible(_view_id(content), bool(content.get("visible")))
        elif kind == "search":
            self._set_search(_view_id(content), content.get("text"))
        elif kind == "retry":
            self._handle_retry(content.get("job_id"))
        elif kind == "detail":
            self._handle_detail(content)
        elif kind == "query":
            self._handle_query(content)
        elif kind == "more":
            self._handle_more(content.get("qv"))

    def _answer_resync(self, view_seq: Any) -> None:
        """Bring a view up to date: a fresh snapshot if it is behind, then a hello with the current seq."""
        with self._lock:
            self.stats["resyncs"] += 1
            self._flush_locked()
            behind = not isinstance(view_seq, int) or isinstance(view_seq, bool) or view_seq != self._seq
            if behind and self.snapshot.get("seq") != self._seq:
                self._publish_snapshot()
            self._emit({"type": "hello", "seq": self._seq, "now": _now()})

    def _handle_sync(self) -> None:
        callback = self.on_sync
        if callback is None:
            self.toast("Sync is not available: this panel is not connected to a Jobs controller", "error")
            return
        self.sync_started()
        exc = _safe_call("sync", callback)
        if exc is not None:
            self.sync_finished(None, error=_describe(exc))

    def _handle_cancel(self, job_id: Any) -> None:
        if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
            return
        with self._lock:
            card = self._cards.get(job_id)
        if card is None:
            self.toast(f"Cannot cancel {job_id}: no such job on this panel", "error", job_id=job_id)
            return
        label = card.get("name") or job_id
        if card.get("status") not in ("pending", "uploading", "queued", "running"):
            self.toast(f"{label} already finished ({card.get('status')})", "error", job_id=job_id)
            return
        callback = self.on_cancel
        if callback is None:
            self.toast(
                "Cancel is not available: this panel is not connected to a Jobs controller",
                "error",
                job_id=job_id,
            )
            return
        exc = _safe_call("cancel", callback, job_id)
        if exc is not None:
            self.toast(f"Could not cancel {label}: {_describe(exc)}", "error", job_id=job_id)
        else:
            self.toast(f"Cancel requested for {label}", job_id=job_id)

    # ----------------------------------------------------------------- retry and card details

    def _handle_retry(self, job_id: Any) -> None:
        """A confirmed Retry: only for a job that ended without a result (failed, cancelled)."""
        if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
            return
        with self._lock:
            card = self._cards.get(job_id)
        label = (card or {}).get("name") or job_id
        if card is None or card.get("status") not in ("failed", "cancelled"):
            state = "no such job on this panel" if card is None else f"it is {card.get('status')}"
            self.toast(f"Cannot retry {label}: {state}", "error", job_id=job_id)
            return
        callback = self.on_retry
        if callback is None:
            self.toast("Retry is not available: this panel is not connected to a Jobs controller", "error")
            return
        exc = _safe_call("retry", callback, job_id)
        if exc is not None:
            self.toast(f"Could not retry {label}: {_describe(exc)}", "error", job_id=job_id)

    def _handle_detail(self, content: Mapping[str, Any]) -> None:
        job_id = content.get("job_id")
        callback = self.on_detail
        if not isinstance(job_id, str) or not job_id or len(job_id) > 200 or callback is None:
            return
        _safe_call("detail", callback, job_id, bool(content.get("open")), _view_id(content))

    # ----------------------------------------------------------------- the window: query and "Show more"

    def _handle_query(self, content: Mapping[str, Any]) -> None:
        """A view chose a status filter and search text: its totals, and (through the feed) the cards."""
        filter_ = content.get("filter")
        if not isinstance(filter_, str) or filter_ not in FILTERS:
            filter_ = "all"
        text = content.get("search")
        query = text.strip()[:_MAX_SEARCH] if isinstance(text, str) else ""
        self._set_search(_view_id(content), query)
        callback = self.on_query
        if callback is not None:
            exc = _safe_call("query", callback, filter_, query)
            if exc is not None:
                self.toast(f"Could not filter the jobs: {_describe(exc)}", "error")

    def _handle_more(self, qv: Any) -> None:
        callback = self.on_more
        if callback is None or not isinstance(qv, int) or isinstance(qv, bool):
            return
        exc = _safe_call("more", callback, qv)
        if exc is not None:
            self.toast(f"Could not load more jobs: {_describe(exc)}", "error")

    def _recount(self, changed: bool) -> None:
        if changed and self._totals_source is not None:
            self._totals_worker.request()

    def _set_search(self, view: str, text: Any) -> None:
        query = text.strip()[:_MAX_SEARCH] if isinstance(text, str) else ""
        with self._lock:
            self._searches.pop(view, None)
            if query:
                self._searches[view] = query
                while len(self._searches) > _MAX_SEARCHES:
                    del self._searches[next(iter(self._searches))]
        if self._totals_source is not None:
            self._totals_worker.request(urgent=True)

    def _compute_totals(self) -> None:
        """Ask the store for the totals of every view's search (and of no search); publish if changed."""
        source = self._totals_source
        if source is None:
            return
        with self._lock:
            queries = ["", *dict.fromkeys(self._searches.values())]
        by_search = {q: _totals_wire(source(q)) for q in queries}
        with self._lock:
            if not self._closed and by_search != self.totals.get("by_search"):
                self.stats["totals"] += 1
                self.totals = {"by_search": by_search, "now": _now()}

    def _set_view_visible(self, view: str, visible: bool) -> None:
        with self._lock:
            if visible:
                self._views[view] = time.monotonic()
            else:
                self._views.pop(view, None)
            flipped = self._prune_views()
        self._notify_visible(flipped)

    def _prune_views(self) -> bool | None:
        """Forget views not heard from lately; the new "any view visible" value if it flipped, else None."""
        cutoff = time.monotonic() - _VIEW_EXPIRY_S
        for view in [v for v, seen in self._views.items() if seen < cutoff]:
            del self._views[view]
        visible = bool(self._views)
        if visible == self._visible:
            return None
        self._visible = visible
        return visible

    def _notify_visible(self, flipped: bool | None) -> None:
        """Call on_visible outside the lock: the controller may take its own lock and call us back."""
        callback = self.on_visible
        if flipped is None or callback is None:
            return
        exc = _safe_call("visible", callback, flipped)
        if exc is not None:
            self.toast(f"Panel visibility handler failed: {_describe(exc)}", "error")


def _view_id(content: Mapping[str, Any]) -> str:
    view = content.get("view")
    return view[:100] if isinstance(view, str) and view else "default"


def _totals_wire(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The store's per-status totals, compact and finite, for one search."""
    out: dict[str, dict[str, Any]] = {}
    for status, rec in list(raw.items())[:32]:
        label = clip(status, _MAX_SHORT)
        if label is None or not isinstance(rec, Mapping):
            continue
        out[label] = {
            "n": int_or_none(rec.get("count")) or 0,
            # The clock-free parts only (the view adds rate x now - t0): totals move when jobs do.
            "cost": num(rec.get("billed", rec.get("cost")), 4) or 0.0,
            "costed": int_or_none(rec.get("costed")) or 0,
            "est": int_or_none(rec.get("estimated")) or 0,
        }
        rate, t0 = rec.get("rate"), rec.get("rate_t0")
        if isinstance(rate, int | float) and isinstance(t0, int | float) and rate > 0 and math.isfinite(t0):
            out[label]["rate"] = float(rate)
            out[label]["t0"] = float(t0)
    return out


def _safe_call(what: str, fn: Callable[..., Any], *args: Any) -> Exception | None:
    """Run a controller callback; hand back its exception instead of letting it reach the comm handler."""
    try:
        fn(*args)
    except Exception as exc:
        log.warning("jobwidget panel: %s callback failed", what, exc_info=True)
        return exc
    return None


def _now() -> float:
    return round(time.time(), 3)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return clip(text, 200) or type(exc).__name__
