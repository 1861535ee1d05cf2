"""Opt-in (`gc_freeze` setting, off by default): make the process's full garbage collections cheap.

CPython's full (generation-2) collection walks every object the collector tracks, with every thread
stopped: about 40 ms for the ~75,000 objects a notebook's imports leave (jupyter, traitlets, httpx,
starlette, jobwidget), longer on a larger heap. The engine already keeps what survives its own work
small (see docs/benchmarks.md, issue 15), so such collections are rare; when one does come, it stops
the engine loop, the panel and every other thread of the process for that long.

`gc.freeze()` moves every object tracked at that moment into a permanent generation that later
collections skip, so a full collection walks only what was created after it (a few milliseconds).
What it costs: an object frozen here that later becomes garbage *only through a reference cycle* is
never reclaimed (reference counting still frees everything else), and freezing is process-wide, not
the engine's alone. That is the user's call, so it is a setting, never a default; it runs once per
process, after a full collection so that no garbage present then is frozen.
"""

from __future__ import annotations

import gc
import logging
import threading

__all__ = ["freeze_once"]

log = logging.getLogger("jobwidget.engine")

_lock = threading.Lock()
_done = False


def freeze_once() -> bool:
    """Collect, then freeze every object tracked now (once per process). True if this call froze."""
    global _done
    with _lock:
        if _done:
            return False
        _done = True
        gc.collect()
        gc.freeze()
    log.info("gc_freeze: %d objects frozen; full collections now skip them", gc.get_freeze_count())
    return True
