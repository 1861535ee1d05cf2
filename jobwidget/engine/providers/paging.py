"""Walking a provider's job list page by page, the next page already asked for while this one is used.

A list is followed by its cursors, so pages come one after another. What can overlap is the rest: the
next page is requested as soon as this one's cursor is known, before its jobs are built (a hundred
trainings take ~15 ms of Python) and while the caller stores them, so a full sync costs about what plain
paging of the endpoint does. The walk stops, as `Provider.list_jobs` promises, on a list that does not end
properly (`PaginationStopped`) and at once when its caller is cancelled (the request in flight with it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from jobwidget.core.errors import PaginationStopped
from jobwidget.core.models import Job

if TYPE_CHECKING:
    from jobwidget.engine.providers.base import Provider

__all__ = ["walk_pages"]

_SEND_WAIT_S = 0.05  # a request held longer (the rate limit, a slow connect) is not waited for


async def walk_pages(provider: Provider, *, limit: int | None, all: bool) -> AsyncGenerator[list[Job], None]:
    """The newest jobs page by page: the first `limit` (None: no limit), or every page with `all`.

    `PaginationStopped` is raised after the page that shows the list does not end properly was handed
    over, with no jobs of its own: the caller has had every page read (`list_jobs` collects them)."""
    capped = not all and limit is not None
    read = 0
    seen: set[str] = set()
    ahead: asyncio.Future[tuple[Any, int, str | None]] | None
    ahead = asyncio.ensure_future(provider.page_body(None))
    try:
        for number in range(1, provider.max_pages + 1):
            assert ahead is not None
            body, count, cursor = await ahead
            ahead = None
            last = not cursor or (capped and read + count >= limit)  # type: ignore[operator]
            why = None
            if not last:
                if count == 0:
                    why = "sent an empty page that links to another"
                elif cursor in seen:
                    why = "sent a next-page link it had already sent in this walk (a loop)"
                else:
                    assert cursor is not None
                    seen.add(cursor)
                    if number < provider.max_pages:
                        sent = asyncio.Event()
                        ahead = asyncio.ensure_future(provider.page_body(cursor, sent))
                        await _on_the_wire(sent)
            jobs = await provider.page_jobs(body)
            if capped:
                jobs = jobs[: limit - read]  # type: ignore[operator]
            read += len(jobs)
            yield jobs
            if last:
                return
            if why is not None:
                raise PaginationStopped(
                    f"{provider.label}'s job list stopped after {number} pages ({read} jobs): it {why}",
                    jobs=[],
                    pages=number,
                )
        raise PaginationStopped(
            f"{provider.label}'s job list did not end within {provider.max_pages} pages ({read} jobs read); "
            "stopped there. If the account really holds more, raise the provider's max_pages",
            jobs=[],
            pages=provider.max_pages,
        )
    finally:
        if ahead is not None:  # the caller stopped early (an error, a cancel): the request goes too
            ahead.cancel()
            ahead.add_done_callback(_retrieved)


async def _on_the_wire(sent: asyncio.Event) -> None:
    """Wait (briefly) for the next page's request to leave before this page's jobs are built: that work
    holds the GIL, and a request still being written would wait for it."""
    if not sent.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sent.wait(), _SEND_WAIT_S)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a dropped request's outcome as seen (asyncio would log an error nobody waited for)."""
    if not future.cancelled():
        future.exception()
