"""The `Store` protocol over the blocking SQLite `JobStore`: each call runs on a worker thread."""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from jobwidget.core.health import Sample
from jobwidget.core.models import Job, JobStatus
from jobwidget.engine.stores.base import JobState, Lease, UpsertResult
from jobwidget.engine.stores.query import Cursor
from jobwidget.engine.stores.sqlite import JobStore

__all__ = ["SQLiteStore"]

T = TypeVar("T")
_CLOSE_WAIT_S = 30.0  # bounded: a call stuck longer than this is not waited for


class SQLiteStore:
    """The `Store` protocol over a `JobStore`: each call runs on a worker thread, never on the loop.

    SQLite has no async driver worth its cost; its calls take microseconds to milliseconds, and a worker
    thread keeps even a 100,000-row export off the engine loop. `sync` is the blocking store itself.
    """

    def __init__(self, store: JobStore) -> None:
        self.sync = store
        self.location = str(store.path)
        self._busy = 0  # calls running on worker threads: closing waits for them
        self._idle = threading.Condition()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def run() -> T:
            with self._idle:
                self._busy += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        return await asyncio.to_thread(run)

    async def upsert(self, jobs: Iterable[Job], *, now: datetime | None = None) -> UpsertResult:
        return await self._call(self.sync.upsert, list(jobs), now=now)

    async def upsert_delivery(
        self, webhook_id: str, jobs: Iterable[Job], *, now: datetime | None = None
    ) -> UpsertResult:
        return await self._call(self.sync.upsert_delivery, webhook_id, list(jobs), now=now)

    async def delivery_seen(self, webhook_id: str) -> bool:
        return await self._call(self.sync.delivery_seen, webhook_id)

    async def get(self, job_id: str) -> Job | None:
        return await self._call(self.sync.get, job_id)

    async def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        return await self._call(self.sync.get_many, list(job_ids))

    async def list(
        self,
        *,
        status: str | JobStatus | Iterable[str | JobStatus] | None = None,
        provider: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
        model: str | Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
        before: Cursor | None = None,
    ) -> builtins.list[Job]:
        return await self._call(
            self.sync.list,
            status=status,
            provider=provider,
            limit=limit,
            offset=offset,
            model=model,
            created_after=created_after,
            created_before=created_before,
            search=search,
            before=before,
        )

    async def active(self, provider: str | None = None) -> builtins.list[Job]:
        return await self._call(self.sync.active, provider)

    async def count(self, *, status: str | JobStatus | Iterable[str | JobStatus] | None = None) -> int:
        return await self._call(self.sync.count, status=status)

    async def newer_counts(self, created: Iterable[datetime | None]) -> builtins.list[int]:
        return await self._call(self.sync.newer_counts, list(created))

    async def totals(self, search: str | None = None) -> dict[str, dict[str, Any]]:
        return await self._call(self.sync.totals, search)

    async def revision(self) -> int:
        return await self._call(self.sync.revision)

    async def changes_since(self, rev: int) -> tuple[int, builtins.list[Job]]:
        return await self._call(self.sync.changes_since, rev)

    async def changes_in_order(self, rev: int) -> tuple[int, builtins.list[tuple[int, Job]]]:
        return await self._call(self.sync.changes_in_order, rev)

    async def states(self, *, active_only: bool = False) -> tuple[int, dict[str, JobState]]:
        return await self._call(self.sync.states, active_only=active_only)

    async def frame_rows(self) -> builtins.list[tuple[Any, ...]]:
        return await self._call(self.sync.frame_rows)

    async def frame_rows_with_inputs(self) -> builtins.list[tuple[Any, ...]]:
        return await self._call(self.sync.frame_rows_with_inputs)

    async def history(self, job_id: str) -> builtins.list[Sample]:
        return await self._call(self.sync.history, job_id)

    async def add_samples(self, samples: Mapping[str, Sample]) -> dict[str, builtins.list[Sample]]:
        return await self._call(self.sync.add_samples, samples)

    async def integrity_check(self) -> str:
        return await self._call(self.sync.integrity_check)

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        return await self._call(self.sync.acquire_lease, name, holder, ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._call(self.sync.release_lease, name, holder)

    async def lease(self, name: str) -> Lease | None:
        return await self._call(self.sync.lease, name)

    async def aclose(self) -> None:
        """Close once no call is still running on a worker thread (a cancelled caller's call may be)."""

        def close() -> None:
            with self._idle:
                self._idle.wait_for(lambda: self._busy == 0, timeout=_CLOSE_WAIT_S)
            self.sync.close()

        await asyncio.to_thread(close)
