"""The fleet's status changes, told to subscribers (the hook a webhook deliverer uses)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from jobwidget.sim.training import Training

__all__ = ["Listener", "Subscribers", "TrainingEvent"]


@dataclass(frozen=True, slots=True)
class TrainingEvent:
    """A status change, for subscribers (a future webhook deliverer): `at` is the wall time it happened."""

    training_id: str
    previous: str
    status: str
    at: float
    webhook: str | None
    webhook_events_filter: tuple[str, ...] | None


Listener = Callable[[TrainingEvent], None]


class Subscribers:
    """Who hears of status changes; they are told under the fleet's lock, so a listener must be quick
    and one that raises is skipped (the fleet moves on whatever its listeners do)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def emit(self, tr: Training, previous: str, status: str, at: float) -> None:
        if not self._listeners:
            return
        event = TrainingEvent(
            tr.id,
            previous,
            status,
            at,
            tr.webhook,
            tuple(tr.webhook_events_filter) if tr.webhook_events_filter is not None else None,
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                continue
