"""Waiting for jobs to finish, promptly: the awaited jobs are read from the provider every few seconds
(one GET each while they are few, list pages beyond), so `wait` returns within seconds of the provider
reporting them finished instead of at the next background poll, and through a provider outage it keeps
waiting until its deadline, saying what went wrong if that passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from jobwidget.core.errors import JobNotFound, JobsTimeout, ProviderError
from jobwidget.core.keys import POLL_STOPPED
from jobwidget.core.models import Job

__all__ = ["WAIT_GETS", "WAIT_REFRESH_S", "wait_for_jobs"]

WAIT_REFRESH_S = 3.0  # the awaited jobs are read this often...
WAIT_GETS = 20  # ...one GET each up to this many, list pages beyond


class _Reads(Protocol):
    async def active(self) -> list[Job]: ...
    async def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]: ...
    async def refresh_jobs(self, job_ids: Iterable[str]) -> int: ...
    async def refresh_active(self) -> object: ...


async def wait_for_jobs(
    engine: _Reads,
    job_ids: Iterable[str] | str | None,
    timeout: float | None,
    *,
    poll_interval: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[Job]:
    """The jobs once every one is terminal (or lost by the provider); `JobsTimeout` after `timeout`."""
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")
    if job_ids is None:
        ids = [j.job_id for j in await engine.active()]
    else:
        ids = list(dict.fromkeys([job_ids] if isinstance(job_ids, str) else job_ids))
    deadline = None if timeout is None else time.monotonic() + timeout
    check_every = min(poll_interval, WAIT_REFRESH_S)
    next_refresh = time.monotonic() + min(check_every, 1.0)
    last_error: str | None = None
    while True:
        jobs = await engine.get_many(ids)
        unknown = [i for i in ids if i not in jobs]
        if unknown:
            raise JobNotFound(unknown[0])
        pending = [jobs[i] for i in ids if not jobs[i].is_terminal and not jobs[i].metadata.get(POLL_STOPPED)]
        if not pending:
            return [jobs[i] for i in ids]
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            shown = ", ".join(j.job_id for j in pending[:5]) + (" ..." if len(pending) > 5 else "")
            trouble = f" (last provider error: {last_error})" if last_error else ""
            raise JobsTimeout(
                f"{len(pending)} of {len(ids)} jobs still active after {timeout:g} s: {shown}{trouble}",
                pending,
            )
        if now >= next_refresh:
            try:
                if len(pending) <= WAIT_GETS:
                    await engine.refresh_jobs([j.job_id for j in pending])
                else:
                    await engine.refresh_active()  # list pages: a few calls for many jobs
                last_error = None
            except ProviderError as exc:
                last_error = str(exc)  # keep waiting: the outage may pass before the deadline
            next_refresh = time.monotonic() + check_every
        await sleep(0.25 if deadline is None else max(0.0, min(0.25, deadline - now)))
