"""Sharing one provider call among concurrent callers ("single flight"), for calls that cost requests.

Twenty panels or HTTP readers asking for the same refresh at once must cost one refresh, not twenty; a
caller asking for *more* than the call in flight (a larger `limit`) must neither start a second call beside
it nor be handed less than it asked for. And work nobody waits for any more (every HTTP client left) stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Coalesced"]

R = TypeVar("R")  # what a caller asks for
T = TypeVar("T")  # what the call returns

_MAX_ROUNDS = 8  # a caller waits for at most this many runs not covering it (in practice: one)


@dataclass(eq=False)
class _Run(Generic[R, T]):
    request: R
    task: asyncio.Task[T]
    waiters: int = field(default=0)


class Coalesced(Generic[R, T]):
    """At most one run of `fn` in flight. A caller whose request the running one `covers` shares it; any
    other caller waits for it to end, and the next run asks for everything the waiters wanted (`merge`),
    so they all share that one. A run is cancelled when its last caller is cancelled."""

    def __init__(
        self,
        fn: Callable[[R], Awaitable[T]],
        *,
        covers: Callable[[R, R], bool] = lambda running, wanted: True,
        merge: Callable[[R, R], R] = lambda a, b: a,
        name: str = "jobwidget-shared",
    ) -> None:
        self._fn = fn
        self._covers = covers
        self._merge = merge
        self._name = name
        self._run: _Run[R, T] | None = None
        self._pending: R | None = None
        self._has_pending = False
        self.runs = 0  # runs started: for tests and counters

    @property
    def running(self) -> bool:
        return self._run is not None and not self._run.task.done()

    async def __call__(self, request: R) -> T:
        for _ in range(_MAX_ROUNDS):
            run = self._run
            if run is not None and not run.task.done():
                if self._covers(run.request, request):
                    return await self._join(run)
                self._pending = self._merge(self._pending, request) if self._has_pending else request  # type: ignore[arg-type]
                self._has_pending = True
                await asyncio.wait([run.task])
                continue
            return await self._join(self._start(request))
        return await self._fn(request)  # not reached unless runs keep starting without this request

    def _start(self, request: R) -> _Run[R, T]:
        if self._has_pending:
            request = self._merge(self._pending, request)  # type: ignore[arg-type]
            self._pending, self._has_pending = None, False
        task = asyncio.get_running_loop().create_task(self._call(request), name=self._name)
        task.add_done_callback(_retrieve)  # an error nobody waits for any more is not logged as lost
        self._run = _Run(request, task)
        self.runs += 1
        return self._run

    async def _call(self, request: R) -> T:
        return await self._fn(request)

    async def _join(self, run: _Run[R, T]) -> T:
        run.waiters += 1
        try:
            return await asyncio.shield(run.task)
        finally:
            run.waiters -= 1
            if run.waiters == 0 and not run.task.done():
                run.task.cancel()  # every caller is gone: the work stops with them


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()
