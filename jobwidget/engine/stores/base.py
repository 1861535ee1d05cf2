"""What any job store must do, as one typed async protocol, and the values stores hand back.

The engine talks to a `Store` only; SQLite (`stores.sqlite`, embedded, the default) and any other
implementation (a shared database for a team) must behave the same, which `tests/store_contract.py`
checks for each. The rules a store must keep:

- `upsert` applies the transition rule (`core.rules.merge_job`) inside its write transaction, so two
  writers can neither duplicate a job nor move a finished one back.
- Every write bumps one store revision; `changes_since` / `changes_in_order` answer what was written
  after a revision, so followers and event streams catch up without asking the provider.
- `upsert_delivery` records a webhook delivery id in the same transaction as its update: a repeat
  changes nothing, a failed apply records nothing.
- One lease per name: the holder may call the provider; a dead holder's lease is taken over.
"""

from __future__ import annotations

import builtins
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from jobwidget.core.health import Sample
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.rules import merge_job
from jobwidget.engine.stores.query import Cursor

__all__ = ["Lease", "Store", "UpsertResult", "fold_updates", "new_holder_id"]

StatusFilter = str | JobStatus | Iterable[str | JobStatus] | None
JobState = tuple[JobStatus, str | None, float | None, str | None]


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What an upsert changed: new jobs, and (before, after) pairs for known jobs that changed."""

    created: list[Job] = field(default_factory=list)
    updated: list[tuple[Job, Job]] = field(default_factory=list)
    unchanged: int = 0
    rev: int = 0
    duplicate: bool = False  # a webhook delivery applied before: nothing was written

    @property
    def changed(self) -> list[Job]:
        return self.created + [after for _, after in self.updated]


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    expires_at: float
    pid: int | None
    host: str | None


def fold_updates(jobs: Iterable[Job]) -> dict[str, Job]:
    """Two updates of one job in one batch: folded in order, as if applied one by one."""
    incoming: dict[str, Job] = {}
    for job in jobs:
        prev = incoming.get(job.job_id)  # kept as sent: None metadata values mark keys to clear
        incoming[job.job_id] = job if prev is None else merge_job(prev, job)
    return incoming


def new_holder_id() -> str:
    """A lease holder id unique to this process and object."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


@runtime_checkable
class Store(Protocol):
    """The engine's job store. Every method may be awaited from the engine loop without blocking it."""

    location: str  # where it lives, for people ("~/.local/share/jobwidget/jobs.sqlite3", "postgresql://...")

    async def upsert(self, jobs: Iterable[Job], *, now: datetime | None = None) -> UpsertResult: ...
    async def upsert_delivery(
        self, webhook_id: str, jobs: Iterable[Job], *, now: datetime | None = None
    ) -> UpsertResult: ...
    async def delivery_seen(self, webhook_id: str) -> bool: ...
    async def get(self, job_id: str) -> Job | None: ...
    async def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]: ...
    async def list(
        self,
        *,
        status: StatusFilter = None,
        provider: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
        model: str | Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
        before: Cursor | None = None,
    ) -> builtins.list[Job]: ...
    async def active(self, provider: str | None = None) -> builtins.list[Job]: ...
    async def count(self, *, status: StatusFilter = None) -> int: ...
    async def newer_counts(self, created: Iterable[datetime | None]) -> builtins.list[int]: ...
    async def totals(self, search: str | None = None) -> dict[str, dict[str, Any]]: ...
    # Per status: count, cost (running estimates at read time), costed, estimated, and cost's clock-free
    # parts billed, rate (summed USD/s of running jobs with a stored price), rate_t0 (summed price x
    # start, epoch s): cost = billed + rate x now - rate_t0.
    async def revision(self) -> int: ...
    async def changes_since(self, rev: int) -> tuple[int, builtins.list[Job]]: ...
    async def changes_in_order(self, rev: int) -> tuple[int, builtins.list[tuple[int, Job]]]: ...
    # (revision, job_id -> state); active_only: of active jobs only (a size that does not grow with history).
    async def states(self, *, active_only: bool = False) -> tuple[int, dict[str, JobState]]: ...
    async def frame_rows(self) -> builtins.list[tuple[Any, ...]]: ...
    async def frame_rows_with_inputs(self) -> builtins.list[tuple[Any, ...]]: ...
    async def history(self, job_id: str) -> builtins.list[Sample]: ...
    async def add_samples(self, samples: Mapping[str, Sample]) -> dict[str, builtins.list[Sample]]: ...
    async def integrity_check(self) -> str: ...
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool: ...
    async def release_lease(self, name: str, holder: str) -> None: ...
    async def lease(self, name: str) -> Lease | None: ...
    async def aclose(self) -> None: ...
