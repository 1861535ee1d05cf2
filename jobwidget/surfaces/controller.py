"""`Jobs`: the kernel-side controller, a thin blocking/async facade over the engine's verbs.

The engine runs on an asyncio loop that this object owns, in a background thread (`LoopThread`), so
blocking calls work in a notebook cell and the panel keeps updating while a cell blocks the kernel.
The panel is fed by `PanelFeed`; this class only forwards.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from jobwidget.core.errors import JobNotFound, JobwidgetError
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.results import InlineProgress, ProviderCheck, SyncResult
from jobwidget.engine.config import Settings, load_settings
from jobwidget.engine.events import PUBLIC_EVENTS
from jobwidget.engine.guards import Guard, GuardAction
from jobwidget.engine.providers.base import Provider
from jobwidget.engine.runtime import Engine, make_provider, wants_demo
from jobwidget.engine.stores import BlockingStore
from jobwidget.engine.stores.urls import redact_url
from jobwidget.surfaces.arguments import narrowing
from jobwidget.surfaces.launching import Launching
from jobwidget.surfaces.loop_thread import LoopThread
from jobwidget.surfaces.panel_feed import PanelFeed

if TYPE_CHECKING:
    import pandas as pd

    from jobwidget.surfaces.panel_detail import DetailFollower
    from jobwidget.surfaces.server import ServerHandle
    from jobwidget.surfaces.widget import JobsPanel

__all__ = ["Jobs"]

log = logging.getLogger("jobwidget")
T = TypeVar("T")


# Live controllers by store path: a second Jobs on the same store replaces the first, so re-running
# the cell that creates `jobs` never leaves a second loop or poller behind.
_LIVE: dict[str, weakref.ref[Jobs]] = {}
_LIVE_LOCK = threading.Lock()


def _close_all() -> None:
    for ref in list(_LIVE.values()):
        jobs = ref()
        if jobs is not None:
            with contextlib.suppress(Exception):
                jobs.close()


atexit.register(_close_all)


class Jobs(Launching):
    """Your fine-tuning jobs: a durable local store kept in step with the provider.

    `Jobs(provider=None, store=None, poll_interval=None, config=None, autostart=True)`. `config` is a
    YAML path or a mapping; without it the file is discovered (README, Configuration). Blocking methods
    work in notebook cells and scripts; `async_*` twins can be awaited.
    """

    def __init__(
        self,
        provider: str | Provider | None = None,
        store: str | os.PathLike[str] | None = None,
        poll_interval: float | None = None,
        config: str | os.PathLike[str] | dict[str, Any] | None = None,
        autostart: bool = True,
    ) -> None:
        demo = wants_demo(provider)  # also refuses a bad spec before anything is opened
        name = provider.name if isinstance(provider, Provider) else "replicate"
        self._settings: Settings = load_settings(
            store=store, poll_interval=poll_interval, config=config, provider_name=name, demo=demo
        )
        self._key = self.settings.store if self._settings.store != ":memory:" else f":memory:{id(self)}"
        with _LIVE_LOCK:
            previous = _LIVE.pop(self._key, None)
        if previous is not None and (old := previous()) is not None:
            log.info("jobwidget: closing the previous Jobs on %s", redact_url(self.settings.store))
            old.close()
        self._closed = False
        self._feed: PanelFeed | None = None
        self._server: ServerHandle | None = None
        self._provider = make_provider(provider, self.settings)
        self._loop = LoopThread(name=f"jobwidget-engine-{id(self):x}")
        self._detail: DetailFollower | None = None  # the panel's open card details (surfaces/launching.py)
        try:
            self._engine: Engine = self._loop.run(self._make_engine())
            self._feed = PanelFeed(
                self._engine,
                self._loop,
                on_retry=self._panel_retry,
                on_detail=self._panel_detail,
                on_open=self._opened,
            )
            self._loop.run(self._engine.start(poll=autostart and self.settings.poll_enabled))
        except BaseException:
            if hasattr(self, "_engine"):
                self._loop.run(self._engine.aclose())
                self._loop.run(self._engine.close_store())
            self._loop.close()
            raise
        self._store = BlockingStore(self._engine.job_store, self._loop.run)
        with _LIVE_LOCK:
            _LIVE[self._key] = weakref.ref(self)

    async def _make_engine(self) -> Engine:
        return await Engine.open(
            self.settings,
            self._provider,
            visible=lambda: self._feed is not None and self._feed.visible,
            on_poll_state=lambda state: self._feed.on_poll_state(state) if self._feed else None,
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            self._check_open()
        return self._loop.run(coro, timeout)

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            self._check_open()
        return await self._loop.run_async(coro)

    def _check_open(self) -> None:
        if self._closed:
            raise JobwidgetError("this Jobs object is closed; create a new jobwidget.Jobs()")

    @property
    def provider(self) -> Provider:
        return self._provider

    @property
    def settings(self) -> Settings:
        """Every effective setting and where it came from (read-only; `repr` shows it as a table)."""
        return self._settings

    @property
    def store(self) -> BlockingStore:
        """The job store, as plain calls (`jobs.store.count()`); the engine's verbs are the usual way."""
        return self._store

    # -- discovery and refresh ---------------------------------------------------------------

    def sync(self, limit: int | None = 100, all: bool = False) -> SyncResult:
        """Discover the provider's recent jobs (newest `limit`, or every page with `all=True`)."""
        return self._run(self._engine.sync(limit=limit, all=all))

    async def async_sync(self, limit: int | None = 100, all: bool = False) -> SyncResult:
        return await self._arun(self._engine.sync(limit=limit, all=all))

    def list(
        self,
        status: str | JobStatus | Iterable[str | JobStatus] | None = None,
        provider: str | None = None,
        limit: int | None = 50,
        sync_active: bool = False,
        *,
        model: str | Iterable[str] | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        search: str | None = None,
    ) -> builtins.list[Job]:
        """Jobs newest first; `sync_active=True` refreshes every active job from the provider first.

        Narrow by trainer `model` ("owner/name", or several), creation time (`created_after <=
        created_at < created_before`: aware datetimes or ISO strings, "2025-06-01" counts as UTC) and
        `search`, a substring of the id, name or model. The store does the filtering, indexed by model
        and time.
        """
        if sync_active:
            self._run(self._engine.refresh_active())
        self._check_open()
        filters = narrowing(model, created_after, created_before, search)
        return _priced(self._store.list(status=status, provider=provider, limit=limit, **filters))

    async def async_list(
        self,
        status: str | JobStatus | Iterable[str | JobStatus] | None = None,
        provider: str | None = None,
        limit: int | None = 50,
        sync_active: bool = False,
        *,
        model: str | Iterable[str] | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        search: str | None = None,
    ) -> builtins.list[Job]:
        if sync_active:
            await self._arun(self._engine.refresh_active())
        self._check_open()
        filters = narrowing(model, created_after, created_before, search)
        return _priced(
            await self._arun(self._engine.list_jobs(status=status, provider=provider, limit=limit, **filters))
        )

    def get(self, job_id: str) -> Job:
        """One job from the store; `JobNotFound` (a KeyError) if unknown."""
        self._check_open()
        job = self._store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job.priced()

    async def async_get(self, job_id: str) -> Job:
        return (await self._arun(self._engine.get(job_id))).priced()

    def inline_progress(self, job_id: str) -> InlineProgress:
        """Stage, progress and last log line of a job, read fresh from its log tail while it runs."""
        return self._run(self._engine.inline_progress(job_id))

    async def async_inline_progress(self, job_id: str) -> InlineProgress:
        return await self._arun(self._engine.inline_progress(job_id))

    def cancel(self, job_id: str) -> Job:
        """Cancel an active job at the provider; a finished job is returned unchanged."""
        return self._run(self._engine.cancel(job_id))

    async def async_cancel(self, job_id: str) -> Job:
        return await self._arun(self._engine.cancel(job_id))

    def validate(self) -> ProviderCheck:
        """Check the provider is reachable and the token works (never raises)."""
        return self._run(self._engine.validate())

    async def async_validate(self) -> ProviderCheck:
        return await self._arun(self._engine.validate())

    def wait(self, job_ids: Iterable[str] | None = None, timeout: float | None = None) -> builtins.list[Job]:
        """Block until those jobs (default: every active one) are terminal; `JobsTimeout` otherwise."""
        return self._run(self._engine.wait(job_ids, timeout))

    async def async_wait(
        self, job_ids: Iterable[str] | None = None, timeout: float | None = None
    ) -> builtins.list[Job]:
        return await self._arun(self._engine.wait(job_ids, timeout))

    # -- analysis ----------------------------------------------------------------------------

    def to_dataframe(self, inputs: bool = False) -> pd.DataFrame:
        """One row per job with fixed columns and dtypes, straight from the store.

        `inputs=True` adds what runs are compared by: `retry_of`, `output_version`, `weights_url` and one
        `input.<name>` column per input (`df.groupby("input.lora_rank")["cost_usd"].mean()`).
        """
        self._check_open()
        if inputs:
            from jobwidget.core.frame_inputs import jobs_frame_with_inputs

            return jobs_frame_with_inputs(self._store.frame_rows_with_inputs())
        from jobwidget.core.frame import jobs_frame  # pandas loads here, not on `import jobwidget`

        return jobs_frame(self._run(self._engine.frame_rows()))

    async def async_to_dataframe(self, inputs: bool = False) -> pd.DataFrame:
        return await asyncio.to_thread(self.to_dataframe, inputs)

    def history(self, job_id: str) -> pd.DataFrame:
        """The job's progress history: one row per kept read (time, step, total_steps, loss, loss_nan,
        rate), oldest first, a few hundred rows at most whatever the run's length. A NaN loss is a row
        with `loss_nan` True. Empty for a job never read while running; `JobNotFound` if unknown."""
        from jobwidget.core.frame import history_frame  # pandas loads here, not on `import jobwidget`

        return history_frame(self._run(self._engine.history(job_id)))

    async def async_history(self, job_id: str) -> pd.DataFrame:
        from jobwidget.core.frame import history_frame

        return history_frame(await self._arun(self._engine.history(job_id)))

    # -- guards (opt-in: nothing is ever cancelled unless asked for here or in the config file) --

    def guard(
        self,
        max_cost_usd: float | None = None,
        on_nan: str | None = None,
        on_stall: str | None = None,
        job_id: str | None = None,
        dry_run: bool = False,
        *,
        on_diverging: str | None = None,
        on_cost: str = "cancel",
    ) -> Guard:
        """Watch jobs (`job_id`, or every job, including later ones) and act when something goes wrong.

        `max_cost_usd`: cancel (or `on_cost="notify"`) once a job's cost so far reaches it. `on_nan`,
        `on_stall`, `on_diverging`: "cancel" or "notify" when that health flag is raised. A cancel is
        recorded on the job ("cancelled by guard: loss NaN at step 1200"); `dry_run=True` only reports
        what it would have cancelled (`jobs.guard_actions()`, the `guard_action` event, the log).
        Returns the guard (`jobs.unguard(guard)` removes it).
        """
        if job_id is not None:
            self.get(job_id)  # JobNotFound now, rather than a guard that can never apply
        guard = Guard(
            max_cost_usd=max_cost_usd,
            on_cost=on_cost,
            on_nan=on_nan,
            on_stall=on_stall,
            on_diverging=on_diverging,
            job_id=job_id,
            dry_run=dry_run,
        )
        return self._run(self._engine.add_guard(guard))

    @property
    def guards(self) -> builtins.list[Guard]:
        """The guards in force (from `guard()` and the config file's `guards:`)."""
        self._check_open()
        return self._engine.guards()

    def unguard(self, guard: Guard | int | None = None) -> builtins.list[Guard]:
        """Remove a guard (or its id), or every guard with no argument; returns what was removed."""
        self._check_open()
        return self._engine.remove_guards(guard.id if isinstance(guard, Guard) else guard)

    def guard_actions(self) -> builtins.list[GuardAction]:
        """What the guards did (and, in dry runs, would have done) in this process, oldest first."""
        self._check_open()
        return self._engine.guard_actions()

    # -- events and the poller ---------------------------------------------------------------

    def on(self, event: str, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Call `callback(event_dict)` on the engine thread for each `event` (see docs/compatibility.md)."""
        if event not in PUBLIC_EVENTS:
            raise ValueError(f"unknown event {event!r}; known events: {', '.join(sorted(PUBLIC_EVENTS))}")
        self._check_open()
        self._loop.loop.call_soon_threadsafe(self._engine.on, event, callback)

    def off(self, event: str, callback: Callable[[dict[str, Any]], Any] | None = None) -> None:
        if event not in PUBLIC_EVENTS:
            raise ValueError(f"unknown event {event!r}; known events: {', '.join(sorted(PUBLIC_EVENTS))}")
        self._check_open()
        self._loop.loop.call_soon_threadsafe(self._engine.off, event, callback)

    def start(self) -> None:
        """Start the background poller (explicit start wins over configuration)."""
        self._run(self._start())

    async def _start(self) -> None:
        self._engine.start_polling()
        if self._feed is not None:
            self._feed.update_status()  # the panel's "polling off" goes at once

    def stop(self) -> None:
        """Stop the background poller; the store, panel and explicit calls keep working."""
        if not self._closed:
            self._run(self._engine.stop_polling())
            if self._feed is not None:
                self._feed.update_status()

    @property
    def polling(self) -> bool:
        return not self._closed and self._engine.polling

    # -- the panel ---------------------------------------------------------------------------

    def _opened(self, panel: JobsPanel) -> None:
        self._detail = self._make_detail_follower(panel)

    @property
    def _panel(self) -> JobsPanel | None:
        return self._feed.panel if self._feed is not None else None

    @property
    def panel(self) -> JobsPanel:
        """The live panel (one anywidget for all jobs), created on first use."""
        self._check_open()
        assert self._feed is not None
        return self._feed.open()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.panel._repr_mimebundle_(**kwargs)

    # -- the HTTP API / webhook receiver in this process ------------------------------------

    def serve(self, port: int = 8001, host: str = "127.0.0.1", **options: Any) -> str:
        """Serve the HTTP API, SSE and the webhook receiver from this kernel; returns the base URL.

        The server runs on the engine's loop, over this same store and engine, so webhooks update the
        panel and fire `jobs.on` callbacks directly. `port=0` picks a free port. Options are
        `jobwidget.surfaces.server.ServerOptions` fields (e.g. `api_token=` to bind beyond loopback).
        """
        from jobwidget.surfaces.server import start_server

        if self._server is not None and self._server.running:
            return self._server.url
        self._server = self._run(start_server(self._engine, host=host, port=port, **options))
        return self._server.url

    def stop_serving(self) -> None:
        server, self._server = self._server, None
        if server is not None and not self._closed:
            self._run(server.stop())

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the poller and release the loop thread, connections and the panel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with _LIVE_LOCK:
            ref = _LIVE.get(self._key)
            if ref is not None and ref() is self:
                del _LIVE[self._key]
        with contextlib.suppress(Exception):
            if self._server is not None:
                self._loop.run(self._server.stop(), timeout=10)
        with contextlib.suppress(Exception):
            self._loop.run(self._close_detail(), timeout=10)
        if self._feed is not None:  # first: its totals worker reads the store until it stops
            with contextlib.suppress(Exception):
                self._feed.close()
        with contextlib.suppress(Exception):
            self._loop.run(self._engine.aclose(), timeout=15)
        with contextlib.suppress(Exception):
            self._loop.run(self._engine.close_store(), timeout=15)
        self._loop.close()

    def __enter__(self) -> Jobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<Jobs closed, store={self.settings.store!r}>"
        counts = {s: self._store.count(status=s) for s in ("running", "queued")}
        total = self._store.count()
        poll = f"polling every {self.settings.poll_interval:g} s" if self.polling else "not polling"
        return (
            f"<Jobs provider={self._provider.label!r} store={self.settings.store!r} jobs={total} "
            f"running={counts['running']} queued={counts['queued']} {poll}>"
        )


def _priced(jobs: builtins.list[Job]) -> builtins.list[Job]:
    """Running jobs' cost so far as it reads now: stored rows keep only the price (see `Job.cost_at`)."""
    now = datetime.now(UTC)
    return [job.priced(now) for job in jobs]
