"""A blocking view of an async `Store`, for code outside the engine loop (a notebook cell, a test).

Each call runs the store's coroutine on the engine's loop and waits for it, so the same view works for
every store, including one whose driver is async only. Never use it on the engine loop itself: that
would wait for itself (the loop thread refuses, with a message).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from jobwidget.engine.stores.base import Store

__all__ = ["BlockingStore"]

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


class BlockingStore:
    """`store.method(...)` as a plain call: `jobs.store.count()`, `jobs.store.get(job_id)`."""

    def __init__(self, store: Store, run: Runner) -> None:
        self._store = store
        self._run = run

    @property
    def location(self) -> str:
        return self._store.location

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        run = self._run

        def call(*args: Any, **kwargs: Any) -> Any:
            return run(attr(*args, **kwargs))

        call.__name__ = call.__qualname__ = name
        call.__doc__ = attr.__doc__
        return call

    def __repr__(self) -> str:
        return f"<BlockingStore {self._store.location!r}>"
