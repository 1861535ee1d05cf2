"""Discovery (`SyncService.sync`): the provider's job list read page by page, each page stored while the
next one is on its way.

Reading every page first and storing them all at the end made a first sync of 10,000 jobs cost the paging
plus one long write (and stopped the engine loop for the whole batch's merging and announcing). Here each
page is applied in its own write as soon as it is built, while the next page is fetched, so the sync
costs about what the paging does, and a failure part way keeps every page read before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from jobwidget.core.errors import PaginationStopped
from jobwidget.core.models import Job
from jobwidget.core.results import SyncResult
from jobwidget.engine.stores import UpsertResult

if TYPE_CHECKING:
    from jobwidget.engine.sync import SyncService

__all__ = ["sync_pages"]


async def sync_pages(service: SyncService, *, limit: int | None, all: bool) -> SyncResult:
    """Read the provider's newest jobs (the first `limit`, or every page with `all`) and apply each page.

    A list that does not end properly still has the pages read before applied; the error is announced
    (`poll_error`) and raised. Any other failure raises once the page being stored is stored."""
    created: list[str] = []
    updated = 0
    applying: asyncio.Future[UpsertResult] | None = None

    async def take() -> None:
        nonlocal applying, updated
        if applying is not None:
            result, applying = await applying, None
            created.extend(job.job_id for job in result.created)
            updated += len(result.updated)

    try:
        async with contextlib.aclosing(service.provider.pages(limit=limit, all=all)) as pages:
            async for jobs in pages:
                await take()  # one write at a time, in page order
                applying = asyncio.ensure_future(_apply_page(service, jobs))
        await take()
    except PaginationStopped as exc:
        await take()  # keep what was read, say why it stopped, and fail the call
        service.bus.emit("poll_error", {"error": str(exc), "consecutive": 1, "retry_in": None})
        raise
    except asyncio.CancelledError:
        if applying is not None:  # a page being stored finishes on its own
            applying.add_done_callback(_retrieved)
        raise
    except BaseException:
        with contextlib.suppress(Exception):
            await take()
        raise
    result = SyncResult(
        synced=len(created),
        updated=updated,
        message=f"Discovered {_plural(len(created), 'new job')} from {service.provider.label}",
        job_ids=tuple(created),
    )
    if created:
        service.bus.emit("jobs_discovered", {"count": len(created), "job_ids": created})
    service.bus.emit("sync_completed", result.to_dict())
    return result


async def _apply_page(service: SyncService, jobs: list[Job]) -> UpsertResult:
    jobs = await service._settle_finishing(jobs)
    return await service.apply(jobs, source="sync")


def _retrieved(future: asyncio.Future[UpsertResult]) -> None:
    if not future.cancelled():
        future.exception()  # seen: its failure, if any, was the store's, reported by the write itself


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
