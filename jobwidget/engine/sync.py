"""The sync service: keeps the store true to the provider with as few calls as it can.

- `sync()` discovers jobs from the list endpoint; concurrent calls share one provider sync.
- `refresh_active()` reads statuses from list pages (100 jobs a call, newest first) and falls back to
  per-job GETs only for active jobs the pages did not reach: the reference made one GET per job.
- `refresh_progress()` fetches logs (only the per-job GET has them) for running jobs, within a budget of
  the rate limit, least recently refreshed first.
- Every write goes through one lock, so events leave in commit order and per job in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jobwidget.core.errors import JobNotFound, PaginationStopped, ProviderError
from jobwidget.core.logparse import parse_logs
from jobwidget.core.models import InlineProgress, Job, JobStatus, ProviderCheck, SyncResult
from jobwidget.engine.events import EventBus
from jobwidget.engine.providers.base import JobDetail, Provider
from jobwidget.engine.shared import Coalesced
from jobwidget.engine.store import JobStore, UpsertResult

__all__ = ["RefreshResult", "SyncService"]

POLL_STOPPED = "poll_stopped"
_MAX_LIST_PAGES = 50  # beyond this, per-job GETs are cheaper than walking history
_INLINE_FIELDS = ("step", "total_steps", "rate", "eta_seconds", "loss")


_State = tuple[JobStatus, str | None, float | None, str | None]


def _state(job: Job) -> _State:
    return (job.status, job.stage, job.progress, job.last_log)


@dataclass(frozen=True, slots=True)
class RefreshResult:
    checked: int
    updated: int
    list_calls: int
    get_calls: int
    not_found: int


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def progress_fields(progress: InlineProgress) -> dict[str, Any]:
    """Job fields (and the `inline` metadata cards show) from a parsed log tail."""
    inline = {k: getattr(progress, k) for k in _INLINE_FIELDS if getattr(progress, k) is not None}
    return {
        "stage": progress.stage,
        "progress": progress.progress,
        "last_log": progress.last_log,
        "metadata": {"inline": inline},
    }


class SyncService:
    """Provider <-> store synchronisation for one provider. Runs on the engine loop."""

    def __init__(
        self,
        store: JobStore,
        provider: Provider,
        bus: EventBus,
        *,
        max_concurrency: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.provider = provider
        self.bus = bus
        self.clock = clock
        self._write_lock = asyncio.Lock()
        self._gets = asyncio.Semaphore(max_concurrency)
        # One discovery in flight whatever `limit` callers pass (None: every page); see `Coalesced`.
        self._syncs: Coalesced[int | None, SyncResult] = Coalesced(
            lambda limit: self._sync(limit=limit, all=limit is None),
            covers=lambda running, wanted: running is None or (wanted is not None and running >= wanted),
            merge=lambda a, b: None if a is None or b is None else max(a, b),
            name="jobwidget-sync",
        )
        self._log_fetched: dict[str, float] = {}  # job_id -> when its logs were last read
        # What this process last announced per job, so following the store (changes written by other
        # processes) neither misses a status change nor repeats our own.
        self._seen: dict[str, _State] = {}
        self._rev = 0
        self.last_update: datetime | None = None
        self.last_source: str | None = None

    # -- writing -----------------------------------------------------------------------------

    async def apply(
        self, jobs: Iterable[Job], *, source: str, delivery_id: str | None = None
    ) -> UpsertResult:
        """Upsert and announce what changed. The lock keeps events in commit order.

        With `delivery_id` (a webhook's id) the update and the record of the delivery commit together,
        and a delivery applied before changes nothing (`result.duplicate`).
        """
        batch = list(jobs)
        async with self._write_lock:
            if delivery_id is None:
                result = await asyncio.to_thread(self.store.upsert, batch)
            else:
                result = await asyncio.to_thread(self.store.upsert_delivery, delivery_id, batch)
            changes = [(None, job) for job in result.created]
            changes += [(_state(before), after) for before, after in result.updated]
            self.announce(changes, source=source, rev=result.rev)
        return result

    async def load_seen(self) -> None:
        """Remember the store's current state, so `follow()` reports only later changes."""
        async with self._write_lock:
            self._rev, self._seen = await asyncio.to_thread(self.store.states)

    async def follow(self) -> int:
        """Announce jobs that other processes (another notebook, `jobwidget serve`) changed in the store."""
        async with self._write_lock:
            rev, jobs = await asyncio.to_thread(self.store.changes_since, self._rev)
            self._rev = max(self._rev, rev)
            changes = [(self._seen.get(j.job_id), j) for j in jobs if self._seen.get(j.job_id) != _state(j)]
            self.announce(changes, source="store", rev=rev)
        return len(changes)

    def announce(self, changes: list[tuple[_State | None, Job]], *, source: str, rev: int = 0) -> None:
        """Emit what changed. `rev` is the store revision holding it; the public events of one write are
        framed by `jobs_changed` and `changes_announced`, so the event stream can keep them together."""
        if not changes:
            return
        self.last_update, self.last_source = datetime.now(UTC), source
        self.bus.emit("jobs_changed", {"jobs": [after for _, after in changes], "source": source, "rev": rev})
        for before, after in changes:
            self._seen[after.job_id] = _state(after)
            if before is None:
                continue
            if before[0] is not after.status:
                self.bus.emit(
                    "job_status_changed",
                    {"job_id": after.job_id, "status": after.status.value, "previous": before[0].value},
                )
            if before[1:] != _state(after)[1:]:
                self.bus.emit(
                    "job_progress",
                    {
                        "job_id": after.job_id,
                        "stage": after.stage,
                        "progress": after.progress,
                        "last_log": after.last_log,
                    },
                )
        self.bus.emit("changes_announced", {"rev": rev})

    # -- discovery ---------------------------------------------------------------------------

    async def sync(self, *, limit: int | None = 100, all: bool = False) -> SyncResult:
        """Discover and update the provider's recent jobs. Concurrent calls share one provider sync: a
        caller asking for more than the one in flight waits for it, then shares one that covers all."""
        return await self._syncs(None if all else limit)

    async def _sync(self, *, limit: int | None, all: bool) -> SyncResult:
        try:
            jobs = await self.provider.list_jobs(limit=limit, all=all)
        except PaginationStopped as exc:
            # A list that does not end: keep what was read, say why it stopped, and fail the call.
            if exc.jobs:
                await self.apply(exc.jobs, source="sync")
            self.bus.emit("poll_error", {"error": str(exc), "consecutive": 1, "retry_in": None})
            raise
        result = await self.apply(jobs, source="sync")
        created = [job.job_id for job in result.created]
        sync_result = SyncResult(
            synced=len(created),
            updated=len(result.updated),
            message=f"Discovered {_plural(len(created), 'new job')} from {self.provider.label}",
            job_ids=tuple(created),
        )
        if created:
            self.bus.emit("jobs_discovered", {"count": len(created), "job_ids": created})
        self.bus.emit("sync_completed", sync_result.to_dict())
        return sync_result

    # -- active refresh ----------------------------------------------------------------------

    def _pollable(self, jobs: Iterable[Job]) -> list[Job]:
        return [j for j in jobs if j.provider == self.provider.name and not j.metadata.get(POLL_STOPPED)]

    async def refresh_active(self) -> RefreshResult:
        """Bring every active job's status, timestamps, cost and error up to date."""
        active = self._pollable(await asyncio.to_thread(self.store.active, self.provider.name))
        if not active:
            return RefreshResult(0, 0, 0, 0, 0)
        missing = {job.job_id: job for job in active}
        found: list[Job] = []
        list_calls = 0
        cursor: str | None = None
        seen: set[str] = set()
        # Walk list pages while a page is likely to answer for more than one missing job.
        while len(missing) > 1 and list_calls < _MAX_LIST_PAGES:
            page = await self.provider.list_page(cursor)
            list_calls += 1
            for job in page.jobs:
                if job.job_id in missing:
                    del missing[job.job_id]
                    found.append(job)
            cursor = page.next_cursor
            if not cursor or cursor in seen or not page.jobs:
                break
            seen.add(cursor)
            oldest = page.jobs[-1].created_at
            if oldest is not None and not any(
                j.created_at is None or j.created_at <= oldest for j in missing.values()
            ):
                break  # the remaining jobs are newer than this page: the list no longer has them
        details, not_found, errors = await self._get_many(list(missing))
        found.extend(d.job for d in details)
        found.extend(self._stopped(missing[job_id]) for job_id in not_found)
        result = await self.apply(found, source="poll") if found else UpsertResult()
        if errors:
            raise errors[0]  # what succeeded is stored; the poller retries the rest next tick
        return RefreshResult(
            checked=len(active),
            updated=len(result.updated),
            list_calls=list_calls,
            get_calls=len(missing),
            not_found=len(not_found),
        )

    def _stopped(self, job: Job) -> Job:
        reason = f"{self.provider.label} no longer knows this job (404); it is no longer polled"
        return job.evolve(metadata={**job.metadata, POLL_STOPPED: reason})

    async def _get(self, job_id: str) -> JobDetail:
        """GET one job and read its log tail at once, returning it without the log.

        Logs reach tens of MB: parsed as each answer arrives and then let go, a poll of many running
        jobs holds at most the answers in flight, not every log until the last GET is back.
        """
        async with self._gets:
            detail = await self.provider.get_job(job_id)
        self._log_fetched[job_id] = self.clock()
        return JobDetail(job=self._with_progress(detail).job, logs=None)

    async def _get_many(self, job_ids: list[str]) -> tuple[list[JobDetail], list[str], list[BaseException]]:
        """Concurrent GETs (bounded by the semaphore and the provider's limiter): (found, 404s, errors)."""
        results = await asyncio.gather(*(self._get(i) for i in job_ids), return_exceptions=True)
        details: list[JobDetail] = []
        not_found: list[str] = []
        errors: list[BaseException] = []
        for job_id, res in zip(job_ids, results, strict=True):
            if isinstance(res, JobNotFound):
                not_found.append(job_id)
            elif isinstance(res, BaseException):
                errors.append(res)
            else:
                details.append(res)
        return details, not_found, errors

    @staticmethod
    def _with_progress(detail: JobDetail) -> JobDetail:
        job = detail.job
        if detail.logs is None or job.status is not JobStatus.RUNNING:
            return detail
        fields = progress_fields(parse_logs(detail.logs, job_id=job.job_id))
        # The log's length orders two snapshots of it (it only grows): see `merge_job`.
        fields["metadata"] = {**job.metadata, **fields["metadata"], "log_chars": len(detail.logs)}
        return JobDetail(job=job.evolve(**fields), logs=detail.logs)

    async def refresh_progress(self, *, budget: int | None = None) -> int:
        """Read the log tail of running jobs (least recently read first), at most `budget` GETs."""
        running = self._pollable(
            await asyncio.to_thread(
                self.store.list, status=JobStatus.RUNNING, provider=self.provider.name, limit=None
            )
        )
        if not running:
            return 0
        running.sort(key=lambda j: self._log_fetched.get(j.job_id, 0.0))
        chosen = running if budget is None else running[: max(1, budget)]
        details, not_found, errors = await self._get_many([j.job_id for j in chosen])
        by_id = {j.job_id: j for j in chosen}
        updates = [d.job for d in details] + [self._stopped(by_id[i]) for i in not_found]
        if updates:
            await self.apply(updates, source="poll")
        if errors:
            raise errors[0]
        return len(chosen)

    # -- single jobs -------------------------------------------------------------------------

    async def fetch(self, job_id: str) -> JobDetail:
        """GET one job, store it (with progress parsed from its logs) and return it."""
        try:
            detail = await self._get(job_id)
        except JobNotFound:
            stored = await asyncio.to_thread(self.store.get, job_id)
            if stored is not None and stored.is_active:
                await self.apply([self._stopped(stored)], source="poll")
            raise
        await self.apply([detail.job], source="poll")
        return detail

    async def ingest(
        self, payload: object, *, source: str = "webhook", delivery_id: str | None = None
    ) -> UpsertResult:
        """Apply a job pushed by the provider (a verified webhook body), logs feeding inline progress.

        `delivery_id` (the webhook-id) makes it exactly-once: applied and recorded in one transaction, a
        repeat is `result.duplicate` and changes nothing; a delivery that fails is not recorded.
        """
        detail = self._with_progress(self.provider.detail_from_payload(payload))
        result = await self.apply([detail.job], source=source, delivery_id=delivery_id)
        if result.created:  # a job first heard of by webhook is a discovery too
            ids = [job.job_id for job in result.created]
            self.bus.emit("jobs_discovered", {"count": len(ids), "job_ids": ids})
        return result

    async def inline_progress(self, job_id: str) -> InlineProgress:
        """Compact progress of one job: fresh from its logs while it runs, from the store otherwise."""
        stored = await asyncio.to_thread(self.store.get, job_id)
        if stored is None:
            raise JobNotFound(job_id)
        job = stored
        if stored.status is JobStatus.RUNNING and stored.provider == self.provider.name:
            # Provider trouble or a job it no longer knows (now marked): answer from the store.
            with contextlib.suppress(ProviderError, JobNotFound):
                detail = await self.fetch(job_id)
                job = await asyncio.to_thread(self.store.get, job_id) or detail.job
        inline = job.metadata.get("inline") or {}
        return InlineProgress(
            job_id=job.job_id,
            stage=job.stage,
            last_log=job.last_log,
            progress=job.progress,
            **{k: inline.get(k) for k in _INLINE_FIELDS},
        )

    async def cancel(self, job_id: str) -> Job:
        stored = await asyncio.to_thread(self.store.get, job_id)
        if stored is not None and stored.is_terminal:
            return stored  # nothing to cancel; never turn a finished job into "cancelled"
        job = await self.provider.cancel(job_id)
        await self.apply([job], source="cancel")
        return await asyncio.to_thread(self.store.get, job_id) or job

    async def validate(self) -> ProviderCheck:
        return await self.provider.validate()
