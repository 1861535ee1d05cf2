"""The sync service: keeps the store true to the provider with as few calls as it can.

- `sync()` discovers jobs from the list endpoint; concurrent calls share one provider sync.
- `refresh_active()` reads the newest list page on every poll (new jobs are discovered there, so a
  training started elsewhere appears without a Sync), more pages while they answer for several active
  jobs, and per-job GETs only for active jobs the pages did not reach: the reference made one GET per job.
- A job that finishes is settled in the same write: its final log is read once (`last_log` is the real
  last line), and it keeps no stage, ETA or rate (`core.rules.settle`).
- A 404 is not the end: the job is retried with backoff and only stops being polled after repeated
  misses over minutes; any later sighting (list page, GET, webhook) clears the misses.
- `refresh_progress()` fetches logs (only the per-job GET has them) for running jobs, within a budget of
  the rate limit, least recently refreshed first.
- Every write goes through one lock, so events leave in commit order and per job in order.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from jobwidget.core.errors import JobNotFound, ProviderError
from jobwidget.core.keys import INLINE, INLINE_FIELDS, INLINE_LOSS_NAN, MISSING, POLL_STOPPED, SETTLED
from jobwidget.core.logtail import TAIL_LINES
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.results import InlineProgress, ProviderCheck, RefreshResult, SyncResult
from jobwidget.engine.events import EventBus
from jobwidget.engine.health import FlagRaised, HealthMonitor
from jobwidget.engine.job_reads import final_read, missed, with_progress
from jobwidget.engine.job_reads import sighted as mark_sighted
from jobwidget.engine.providers.base import JobDetail, Provider
from jobwidget.engine.shared import Coalesced
from jobwidget.engine.stores import JobStore, Store, UpsertResult, as_store
from jobwidget.engine.sync_walk import sync_pages

__all__ = ["SyncService"]

_MAX_LIST_PAGES = 50  # beyond this, per-job GETs are cheaper than walking history


# What was last announced of a job: (status value, stage, progress, last log). Plain values only, so the
# garbage collector stops tracking these tuples: a full sync keeps one per job, and ten thousand tracked
# ones brought on a full collection (tens of milliseconds holding the GIL) during the sync.
_State = tuple[str, str | None, float | None, str | None]


def _state(job: Job) -> _State:
    return (job.status.value, job.stage, job.progress, job.last_log)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class SyncService:
    """Provider <-> store synchronisation for one provider. Runs on the engine loop."""

    def __init__(
        self,
        store: Store | JobStore,
        provider: Provider,
        bus: EventBus,
        *,
        max_concurrency: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = as_store(store)
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
        self._unaddressable: set[str] = set()  # ids the provider refused as invalid: a miss is final
        # What this process last announced per job, so following the store (changes written by other
        # processes) neither misses a status change nor repeats our own.
        self._seen: dict[str, _State] = {}
        self._rev = 0
        self.last_update: datetime | None = None
        self.last_source: str | None = None
        # Run health (flags, projections, history) judged on every write; None: not judged.
        self.health: HealthMonitor | None = None
        # Called with the jobs each write changed, after their events (the engine's guards).
        self.after_apply: Callable[[list[Job]], None] | None = None

    # -- writing -----------------------------------------------------------------------------

    async def apply(
        self,
        jobs: Iterable[Job],
        *,
        source: str,
        sighted: bool = True,
        delivery_id: str | None = None,
    ) -> UpsertResult:
        """Upsert and announce what changed. The lock keeps events in commit order.

        `sighted`: the jobs come from the provider itself, so any record of it having lost them ends.
        With `delivery_id` (a webhook's id) the update and the record of the delivery commit together,
        and a delivery applied before changes nothing (`result.duplicate`).
        """
        batch = [mark_sighted(job) for job in jobs] if sighted else list(jobs)
        async with self._write_lock:
            raised: list[FlagRaised] = []
            if self.health is not None and batch:
                batch, raised = await self.health.prepare(batch)
            if delivery_id is None:
                result = await self.store.upsert(batch)
            else:
                result = await self.store.upsert_delivery(delivery_id, batch)
            if result.changed and result.rev == self._rev + 1:
                # Our own write, right after the last revision known: `follow` need not read it back.
                self._rev = result.rev
            changes: list[tuple[_State | None, Job]] = [(None, job) for job in result.created]
            changes += [(_state(before), after) for before, after in result.updated]
            self.announce(changes, source=source, rev=result.rev)
            if raised:
                changed = {job.job_id for job in result.changed}
                for flag in raised:
                    if flag.job_id in changed:
                        self.bus.emit("job_flagged", flag.to_event())
        if self.after_apply is not None:
            # A running job's cost grows with the clock though its row does not change: the guards see
            # the ones this write left alone too, so a cost limit is still met on time.
            changed = {job.job_id for job in result.changed}
            ticking = [
                job
                for job in batch
                if job.job_id not in changed
                and job.status is JobStatus.RUNNING
                and job.price_per_s is not None
            ]
            if result.changed or ticking:
                self.after_apply([*result.changed, *ticking])
        return result

    async def load_seen(self) -> None:
        """Remember the store's revision and its active jobs' states, so `follow()` reports only later
        changes. Only active jobs: the time to open does not grow with the store's history, and a finished
        job another process changes later (late billing) is announced as a change with no earlier state."""
        async with self._write_lock:
            self._rev, states = await self.store.states(active_only=True)
            self._seen = {job_id: (s.value, stage, p, log) for job_id, (s, stage, p, log) in states.items()}

    async def follow(self) -> int:
        """Announce jobs that other processes (another notebook, `jobwidget serve`) changed in the store."""
        async with self._write_lock:
            rev, jobs = await self.store.changes_since(self._rev)
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
            if before[0] != after.status.value:
                self.bus.emit(
                    "job_status_changed",
                    {
                        "job_id": after.job_id,
                        "status": after.status.value,
                        "previous": before[0],
                        "stage": after.stage,
                        "progress": after.progress,
                        "last_log": after.last_log,
                        "error_message": after.error_message,
                    },
                )
            if before[1:] != _state(after)[1:]:
                finish = after.projected_finish_at
                self.bus.emit(
                    "job_progress",
                    {
                        "job_id": after.job_id,
                        "stage": after.stage,
                        "progress": after.progress,
                        "last_log": after.last_log,
                        "projected_finish_at": finish.isoformat().replace("+00:00", "Z") if finish else None,
                        "projected_cost_usd": after.projected_cost_usd,
                        "flags": sorted(after.flags),
                    },
                )
        self.bus.emit("changes_announced", {"rev": rev})

    # -- discovery ---------------------------------------------------------------------------

    async def sync(self, *, limit: int | None = 100, all: bool = False) -> SyncResult:
        """Discover and update the provider's recent jobs. Concurrent calls share one provider sync: a
        caller asking for more than the one in flight waits for it, then shares one that covers all."""
        return await self._syncs(None if all else limit)

    async def _sync(self, *, limit: int | None, all: bool) -> SyncResult:
        return await sync_pages(self, limit=limit, all=all)  # page by page, stored as read

    # -- active refresh ----------------------------------------------------------------------

    def _pollable(self, jobs: Iterable[Job]) -> list[Job]:
        return [j for j in jobs if j.provider == self.provider.name and not j.metadata.get(POLL_STOPPED)]

    async def _plan_pages(self, active: list[Job]) -> int:
        """How many list pages to read this poll: the count P that minimises P + (jobs beyond page P),
        each job placed by how many stored jobs are newer than it. So k active jobs cost at most k+1
        calls, and a few old ones deep in history are fetched by id instead of walking to them."""
        if not active:
            return 1
        size = max(1, self.provider.page_size)
        newer = await self.store.newer_counts([j.created_at for j in active])
        page_of = sorted(n // size + 1 for n in newer)  # 1-based page each job is expected on
        best_pages, best_cost = 1, len(page_of) - bisect.bisect_right(page_of, 1) + 1
        for p in dict.fromkeys(page_of):  # each distinct page, ascending
            if p > _MAX_LIST_PAGES:
                break
            cost = p + len(page_of) - bisect.bisect_right(page_of, p)
            if cost < best_cost:
                best_pages, best_cost = p, cost
        return best_pages

    def _may_get(self, job: Job) -> bool:
        """False while a job that 404'd waits out its backoff (list pages may still sight it)."""
        missing = job.metadata.get(MISSING)
        return not (isinstance(missing, dict) and float(missing.get("retry_at") or 0) > self.clock())

    async def refresh_active(self) -> RefreshResult:
        """Discover new jobs and bring every active job's status, timestamps, cost and error up to date.

        The newest page is read on every call: that is where trainings started elsewhere show up.
        """
        active = self._pollable(await self.store.active(self.provider.name))
        missing = {job.job_id: job for job in active}
        pages = await self._plan_pages(active)
        found: list[Job] = []
        list_calls = 0
        cursor: str | None = None
        seen: set[str] = set()
        # Page 1 always (discovery), then as many pages as the plan says beat one GET per job.
        while list_calls < pages and (list_calls == 0 or missing):
            page = await self.provider.list_page(cursor)
            list_calls += 1
            for job in page.jobs:
                if missing.pop(job.job_id, None) is not None or list_calls == 1:
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
        to_get = [job_id for job_id, job in missing.items() if self._may_get(job)]
        details, not_found, errors = await self._get_many(to_get)
        found.extend(d.job for d in details)
        found = await self._settle_finishing(found)
        result = await self.apply(found, source="poll") if found else UpsertResult()
        if not_found:
            await self.apply([self._missed(missing[i]) for i in not_found], source="poll", sighted=False)
        self._announce_discovered(result)
        if errors:
            raise errors[0]  # what succeeded is stored; the poller retries the rest next tick
        return RefreshResult(
            checked=len(active),
            updated=len(result.updated),
            list_calls=list_calls,
            get_calls=len(to_get),
            not_found=len(not_found),
            discovered=len(result.created),
        )

    async def refresh_jobs(self, job_ids: Iterable[str]) -> int:
        """GET these jobs now (a caller is waiting on them), settling any that finished. Returns how many."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return 0
        stored = await self.store.get_many(ids)
        wanted = [i for i in ids if i in stored and stored[i].provider == self.provider.name]
        details, not_found, errors = await self._get_many(wanted)
        jobs = await self._settle_finishing([d.job for d in details])
        if jobs:
            await self.apply(jobs, source="poll")
        if not_found:
            await self.apply([self._missed(stored[i]) for i in not_found], source="poll", sighted=False)
        if errors:
            raise errors[0]
        return len(wanted)

    def _announce_discovered(self, result: UpsertResult) -> None:
        if result.created:
            ids = [job.job_id for job in result.created]
            self.bus.emit("jobs_discovered", {"count": len(ids), "job_ids": ids})

    def _missed(self, job: Job) -> Job:
        """One more 404 for `job` (see `job_reads.missed`)."""
        return missed(job, self.clock(), self.provider.label, final=job.job_id in self._unaddressable)

    async def _settle_finishing(self, jobs: list[Job]) -> list[Job]:
        """Read the final log of jobs that are finishing with this update, so they settle in one write.

        List pages carry no logs; a job whose stored copy is still active and whose update is terminal
        gets one GET, and its last line, step counts and final figure come from that log.
        """
        finishing = [j for j in jobs if j.is_terminal and not j.metadata.get(SETTLED)]
        if not finishing:
            return jobs
        stored = await self.store.get_many([j.job_id for j in finishing])
        ids = [j.job_id for j in finishing if (s := stored.get(j.job_id)) is not None and s.is_active]
        if not ids:
            return jobs

        async def final(job_id: str) -> JobDetail | None:
            try:
                async with self._gets:
                    return await self.provider.get_job(job_id)
            except (ProviderError, JobNotFound):
                return None  # the status still lands; only the final log line is missed

        details = await asyncio.gather(*(final(i) for i in ids))
        settled = {d.job.job_id: self._final_read(d) for d in details if d is not None and d.job.is_terminal}
        return [settled.get(j.job_id, j) for j in jobs]

    _final_read = staticmethod(final_read)

    async def _get(self, job_id: str) -> JobDetail:
        """GET one job and read its log tail at once, returning it without the log.

        Logs reach tens of MB: parsed as each answer arrives and then let go, a poll of many running
        jobs holds at most the answers in flight, not every log until the last GET is back.
        """
        async with self._gets:
            detail = await self.provider.get_job(job_id)
        self._log_fetched[job_id] = self.clock()
        if detail.job.is_terminal:  # this answer is the final log: no second GET to settle the job
            return JobDetail(job=self._final_read(detail), logs=None)
        return JobDetail(job=self._with_progress(detail).job, logs=None)

    async def _get_many(self, job_ids: list[str]) -> tuple[list[JobDetail], list[str], list[BaseException]]:
        """Concurrent GETs (bounded by the semaphore and the provider's limiter): (found, 404s, errors).

        A permanent 404 (an id the provider cannot even address) is recorded at once as a job it lost.
        """
        results = await asyncio.gather(*(self._get(i) for i in job_ids), return_exceptions=True)
        details: list[JobDetail] = []
        not_found: list[str] = []
        errors: list[BaseException] = []
        for job_id, res in zip(job_ids, results, strict=True):
            if isinstance(res, JobNotFound):
                not_found.append(job_id)
                if res.permanent:
                    self._unaddressable.add(job_id)
            elif isinstance(res, BaseException):
                errors.append(res)
            else:
                details.append(res)
        return details, not_found, errors

    _with_progress = staticmethod(with_progress)

    async def refresh_progress(self, *, budget: int | None = None) -> int:
        """Read the log tail of running jobs (least recently read first), at most `budget` GETs."""
        running = self._pollable(
            await self.store.list(status=JobStatus.RUNNING, provider=self.provider.name, limit=None)
        )
        if not running:
            return 0
        running.sort(key=lambda j: self._log_fetched.get(j.job_id, 0.0))
        chosen = running if budget is None else running[: max(1, budget)]
        details, not_found, errors = await self._get_many([j.job_id for j in chosen if self._may_get(j)])
        by_id = {j.job_id: j for j in chosen}
        updates = await self._settle_finishing([d.job for d in details])
        if updates:
            await self.apply(updates, source="poll")
        if not_found:
            await self.apply([self._missed(by_id[i]) for i in not_found], source="poll", sighted=False)
        if errors:
            raise errors[0]
        return len(chosen)

    # -- single jobs -------------------------------------------------------------------------

    async def fetch(self, job_id: str) -> JobDetail:
        """GET one job, store it (with progress parsed from its logs) and return it."""
        try:
            detail = await self._get(job_id)
        except JobNotFound:
            stored = await self.store.get(job_id)
            if stored is not None and stored.is_active:
                await self.apply([self._missed(stored)], source="poll", sighted=False)
            raise
        (job,) = await self._settle_finishing([detail.job])
        await self.apply([job], source="poll")
        return JobDetail(job=job, logs=None)

    async def read(self, job_id: str, log_lines: int = TAIL_LINES) -> JobDetail:
        """GET one job and store it as `fetch` does, handing its log to the caller (a log viewer): at
        least its last `log_lines` lines, with the whole log's length (`Provider.get_job`)."""
        try:
            async with self._gets:
                detail = await self.provider.get_job(job_id, log_lines=log_lines)
        except JobNotFound:
            stored = await self.store.get(job_id)
            if stored is not None and stored.is_active:
                await self.apply([self._missed(stored)], source="poll", sighted=False)
            raise
        self._log_fetched[job_id] = self.clock()
        job = self._final_read(detail) if detail.job.is_terminal else self._with_progress(detail).job
        await self.apply([job], source="poll")
        return dataclasses.replace(detail, job=job)

    async def ingest(
        self, payload: object, *, source: str = "webhook", delivery_id: str | None = None
    ) -> UpsertResult:
        """Apply a job pushed by the provider (a verified webhook body), logs feeding inline progress.

        `delivery_id` (the webhook-id) makes it exactly-once: applied and recorded in one transaction, a
        repeat is `result.duplicate` and changes nothing; a delivery that fails is not recorded.
        """
        detail = self.provider.detail_from_payload(payload)
        job = self._final_read(detail) if detail.job.is_terminal else self._with_progress(detail).job
        result = await self.apply([job], source=source, delivery_id=delivery_id)
        self._announce_discovered(result)  # a job first heard of by webhook is a discovery too
        return result

    async def inline_progress(self, job_id: str) -> InlineProgress:
        """Compact progress of one job: fresh from its logs while it runs, from the store otherwise."""
        stored = await self.store.get(job_id)
        if stored is None:
            raise JobNotFound(job_id)
        job = stored
        if stored.status is JobStatus.RUNNING and stored.provider == self.provider.name:
            # Provider trouble or a job it no longer knows (now marked): answer from the store.
            with contextlib.suppress(ProviderError, JobNotFound):
                detail = await self.fetch(job_id)
                fresh = await self.store.get(job_id)
                job = fresh or detail.job
        inline = job.metadata.get(INLINE) or {}
        return InlineProgress(
            job_id=job.job_id,
            stage=job.stage,
            last_log=job.last_log,
            progress=job.progress,
            **{k: inline.get(k) for k in INLINE_FIELDS},
            loss_nan=bool(inline.get(INLINE_LOSS_NAN)),
        )

    async def cancel(self, job_id: str, *, metadata: dict[str, Any] | None = None) -> Job:
        """Cancel at the provider; `metadata` is recorded on the job with the cancellation (why)."""
        stored = await self.store.get(job_id)
        if stored is not None and stored.is_terminal:
            return stored  # nothing to cancel; never turn a finished job into "cancelled"
        job = await self.provider.cancel(job_id)
        (job,) = await self._settle_finishing([job])
        if metadata:
            job = job.evolve(metadata={**job.metadata, **metadata})
        await self.apply([job], source="cancel")
        return await self.store.get(job_id) or job

    async def validate(self) -> ProviderCheck:
        return await self.provider.validate()
