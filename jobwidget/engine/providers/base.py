"""The async provider interface the engine talks to.

A provider turns a cloud service's API into `Job`s. The engine never sees HTTP: it calls these methods,
so tests and the simulator can stand in for Replicate without touching the sync logic.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncGenerator, Collection
from dataclasses import dataclass, field
from typing import Any

from jobwidget.core.errors import PaginationStopped, ProviderError
from jobwidget.core.logtail import TAIL_LINES
from jobwidget.core.models import Job
from jobwidget.core.pricing import Pricing
from jobwidget.core.results import ProviderCheck
from jobwidget.core.training_request import TrainingRequest
from jobwidget.engine.providers.paging import walk_pages

__all__ = ["MAX_SERVER_WAIT", "JobDetail", "Page", "Provider", "ProviderStats"]

# The longest pause a provider may ask for (Retry-After and the like). A longer or absurd hint gets this
# one, and the provider is asked again after it: a typo on its side must not silence polling for a week.
MAX_SERVER_WAIT = 3600.0


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the provider's job list, newest first; `next_cursor` is opaque (None: last page)."""

    jobs: list[Job]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class JobDetail:
    """One job as the per-job GET returns it: the record plus its accumulated log (or None).

    A long log may come cut to its tail (`Provider.get_job`: at least what the log parser reads and the
    lines asked for); `log_chars` and `log_newlines` then say how long the whole log is (None: `logs` is
    the whole log)."""

    job: Job
    logs: str | None
    log_chars: int | None = None
    log_newlines: int | None = None

    @property
    def log_length(self) -> int:
        """Characters in the whole log (0 without one)."""
        return self.log_chars if self.log_chars is not None else len(self.logs or "")

    @property
    def log_lines(self) -> int:
        """Newlines in the whole log: its complete lines."""
        return self.log_newlines if self.log_newlines is not None else (self.logs or "").count("\n")


@dataclass
class ProviderStats:
    """Counters for benchmarks, tests and the panel: what this provider object has asked of the API."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    throttled: int = 0  # 429 answers received
    errors: int = 0  # calls that failed after the retry budget
    held: int = 0  # calls refused without a request during a pause the server asked for
    by_route: dict[str, int] = field(default_factory=dict)


class Provider(abc.ABC):
    """A source of jobs. Implementations are async and safe to call concurrently from one event loop."""

    name: str = "replicate"  # stored in Job.provider
    label: str = "Replicate"  # shown to people ("Discovered 3 new jobs from Replicate")
    is_demo: bool = False  # True for the simulated provider: the panel labels it as a demo
    page_size: int = 100  # jobs per list page: how the sync plans list pages against single GETs
    max_pages: int = 1000  # page budget of one walk of the job list (100,000 jobs on Replicate)
    stats: ProviderStats

    @abc.abstractmethod
    async def list_page(self, cursor: str | None = None) -> Page:
        """One page of recent jobs (100 on Replicate), newest first, without logs."""

    async def page_body(
        self, cursor: str | None, sent: asyncio.Event | None = None
    ) -> tuple[Any, int, str | None]:
        """The page at `cursor` as received, before its jobs are built: (body, how many jobs it holds,
        the next cursor or None). `pages` asks for the next page as soon as it has this. By default the
        page is built at once (`list_page`); a provider whose building is costly keeps it for `page_jobs`.
        `sent` is set once the request is on its way (the walk builds the page before only after that).
        """
        if sent is not None:
            sent.set()
        page = await self.list_page(cursor)
        return page, len(page.jobs), page.next_cursor

    async def page_jobs(self, body: Any) -> list[Job]:
        """The jobs of a page `page_body` returned, newest first."""
        assert isinstance(body, Page)
        return body.jobs

    def pages(self, *, limit: int | None = 100, all: bool = False) -> AsyncGenerator[list[Job], None]:
        """`list_jobs` page by page, the next page requested while the caller handles this one
        (`paging.walk_pages`); use it in `contextlib.aclosing` so that a caller leaving early ends the
        request in flight. `PaginationStopped` comes after the pages read, with no jobs of its own."""
        return walk_pages(self, limit=limit, all=all)

    async def list_jobs(self, *, limit: int | None = 100, all: bool = False) -> list[Job]:
        """Newest jobs: the first `limit` (following the cursor as needed), or every page with `all`.

        A list that does not end properly (an empty page that links on, a next link already followed in
        this walk, more than `max_pages` pages) raises `PaginationStopped` saying why, with the jobs read
        so far, instead of walking without end. Cancelling the caller stops the walk at once.
        """
        jobs: list[Job] = []
        try:
            async with contextlib.aclosing(self.pages(limit=limit, all=all)) as pages:
                async for page in pages:
                    jobs.extend(page)
        except PaginationStopped as exc:
            exc.jobs = jobs  # every page read, as the walk handed them over
            raise
        return jobs

    @abc.abstractmethod
    async def get_job(self, job_id: str, *, log_lines: int = TAIL_LINES) -> JobDetail:
        """One job with its log; raises `JobNotFound` on 404. A provider may cut a long log to its tail,
        keeping at least the last `log_lines` lines and the last `logparse.MAX_SCAN` characters (what the
        log parser reads), and say the whole log's length in the `JobDetail`."""

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> Job:
        """Ask the provider to cancel; returns the job as the provider reports it afterwards."""

    @abc.abstractmethod
    async def validate(self) -> ProviderCheck:
        """A cheap check that the provider is reachable and the credentials work. Never raises."""

    def detail_from_payload(self, data: object) -> JobDetail:
        """Turn a pushed payload (a webhook body) into a job; `MalformedResponse` if it is not one."""
        raise NotImplementedError(f"{type(self).__name__} does not take webhooks")

    async def create_training(self, request: TrainingRequest, *, exclude: Collection[str] = ()) -> Job:
        """Start a training; returns it as the provider reports it (usually still starting).

        `exclude`: ids of trainings known before this call, which a provider that has to look for the
        training it made (its answer was lost) must not take for it. Raises `ProviderRejected` with the
        provider's message when it refuses the request.
        """
        raise ProviderError(f"{self.label} cannot start trainings from jobwidget")

    @abc.abstractmethod
    async def webhook_secret(self) -> str:
        """The account's webhook signing secret (`whsec_...`)."""

    def configure(  # noqa: B027 - optional hook
        self,
        *,
        pricing: Pricing | None = None,
        max_requests_per_minute: float | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        """Adopt settings given to jobwidget after construction (a config file's prices and limits).

        Called before the engine sends its first request; providers without prices or limits ignore it.
        """

    def secrets(self) -> tuple[str, ...]:
        """Credentials this provider holds (its API token): surfaces mask them in anything they show."""
        return ()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
