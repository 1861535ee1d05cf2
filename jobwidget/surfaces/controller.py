"""`Jobs`: the kernel-side controller, a thin blocking/async facade over the engine.

The engine runs on an asyncio loop that this object owns, in a background thread. That is what lets
blocking calls work in a plain notebook cell (the kernel's own loop is already running there, so
`asyncio.run` is not an option), and what keeps the panel updating while a cell blocks the kernel.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from jobwidget.core.errors import JobNotFound, JobwidgetError, ProviderError
from jobwidget.core.models import InlineProgress, Job, JobStatus, ProviderCheck, SyncResult
from jobwidget.engine.config import Settings, load_settings
from jobwidget.engine.events import PUBLIC_EVENTS
from jobwidget.engine.guards import Guard, GuardAction
from jobwidget.engine.providers.base import Provider
from jobwidget.engine.runtime import Engine, make_provider, wants_demo
from jobwidget.engine.store import JobStore
from jobwidget.engine.sync import POLL_STOPPED

if TYPE_CHECKING:
    import pandas as pd

    from jobwidget.surfaces.server import ServerHandle
    from jobwidget.surfaces.widget import JobsPanel

__all__ = ["Jobs", "JobsTimeout"]

log = logging.getLogger("jobwidget")
T = TypeVar("T")
_PANEL_JOBS = 1000  # newest jobs the panel starts with (active ones are always included)
_WAIT_REFRESH_S = 3.0  # while `wait` waits, the awaited jobs are read this often...
_WAIT_GETS = 20  # ...one GET each up to this many, list pages beyond


class JobsTimeout(JobwidgetError, TimeoutError):
    """`jobs.wait()` ran out of time; `.pending` holds the jobs still active."""

    def __init__(self, message: str, pending: list[Job]) -> None:
        super().__init__(message)
        self.pending = pending


class _LoopThread:
    """An asyncio loop running forever in a daemon thread, with a blocking and an awaitable bridge."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait(timeout=10)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a blocking jobwidget call was made from inside a jobwidget callback (the engine's own "
                "loop); use the async_ variant and await it instead"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
        except BaseException:  # KeyboardInterrupt in a cell: stop the engine-side work too
            future.cancel()
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop after its executor threads finish (they may hold store connections)."""
        if self.loop.is_closed():
            return
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.submit(self.loop.shutdown_default_executor()).result(timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.close()


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


class Jobs:
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
            log.info("jobwidget: closing the previous Jobs on %s", self.settings.store)
            old.close()
        self._closed = False
        self._panel: JobsPanel | None = None
        self._panel_visible = False
        # A failed panel Sync: (message, when); its banner stays until a later success.
        self._sync_error: tuple[str, datetime] | None = None
        self._sync_ok_at: datetime | None = None
        self._poll_error_at: datetime | None = None  # the poller's last failed round
        self._status_lock = threading.Lock()
        self._server: ServerHandle | None = None
        self._store = JobStore(self.settings.store)
        try:
            self._provider = make_provider(provider, self.settings)
            self._loop = _LoopThread(name=f"jobwidget-engine-{id(self):x}")
            self._engine: Engine = self._loop.run(self._make_engine())
            # Every successful sync counts as the provider's last answer, on the panel made later too.
            self._loop.loop.call_soon_threadsafe(
                self._engine.bus.on, "sync_completed", self._on_sync_completed
            )
            self._loop.run(self._engine.start(poll=autostart and self.settings.poll_enabled))
        except BaseException:
            self._store.close()
            if hasattr(self, "_loop"):
                self._loop.close()
            raise
        with _LIVE_LOCK:
            _LIVE[self._key] = weakref.ref(self)

    async def _make_engine(self) -> Engine:
        return Engine(
            self._store,
            self._provider,
            self.settings,
            visible=lambda: self._panel_visible,
            on_poll_state=self._on_poll_state,
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
    def store(self) -> JobStore:
        return self._store

    # -- discovery and refresh ---------------------------------------------------------------

    def sync(self, limit: int | None = 100, all: bool = False) -> SyncResult:
        """Discover the provider's recent jobs (newest `limit`, or every page with `all=True`)."""
        return self._run(self._engine.service.sync(limit=limit, all=all))

    async def async_sync(self, limit: int | None = 100, all: bool = False) -> SyncResult:
        return await self._arun(self._engine.service.sync(limit=limit, all=all))

    def list(
        self,
        status: str | JobStatus | Iterable[str | JobStatus] | None = None,
        provider: str | None = None,
        limit: int | None = 50,
        sync_active: bool = False,
    ) -> list[Job]:
        """Jobs newest first; `sync_active=True` refreshes every active job from the provider first."""
        if sync_active:
            self._run(self._engine.service.refresh_active())
        self._check_open()
        return self._store.list(status=status, provider=provider, limit=limit)

    async def async_list(
        self,
        status: str | JobStatus | Iterable[str | JobStatus] | None = None,
        provider: str | None = None,
        limit: int | None = 50,
        sync_active: bool = False,
    ) -> list[Job]:
        if sync_active:
            await self._arun(self._engine.service.refresh_active())
        self._check_open()
        return await asyncio.to_thread(self._store.list, status=status, provider=provider, limit=limit)

    def get(self, job_id: str) -> Job:
        """One job from the store; `JobNotFound` (a KeyError) if unknown."""
        self._check_open()
        job = self._store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def async_get(self, job_id: str) -> Job:
        return await asyncio.to_thread(self.get, job_id)

    def inline_progress(self, job_id: str) -> InlineProgress:
        """Stage, progress and last log line of a job, read fresh from its log tail while it runs."""
        return self._run(self._engine.service.inline_progress(job_id))

    async def async_inline_progress(self, job_id: str) -> InlineProgress:
        return await self._arun(self._engine.service.inline_progress(job_id))

    def cancel(self, job_id: str) -> Job:
        """Cancel an active job at the provider; a finished job is returned unchanged."""
        return self._run(self._engine.service.cancel(job_id))

    async def async_cancel(self, job_id: str) -> Job:
        return await self._arun(self._engine.service.cancel(job_id))

    def validate(self) -> ProviderCheck:
        """Check the provider is reachable and the token works (never raises)."""
        return self._run(self._engine.service.validate())

    async def async_validate(self) -> ProviderCheck:
        return await self._arun(self._engine.service.validate())

    def wait(self, job_ids: Iterable[str] | None = None, timeout: float | None = None) -> list[Job]:
        """Block until those jobs (default: every active one) are terminal; `JobsTimeout` otherwise."""
        return self._run(self._wait(job_ids, timeout))

    async def async_wait(
        self, job_ids: Iterable[str] | None = None, timeout: float | None = None
    ) -> list[Job]:
        return await self._arun(self._wait(job_ids, timeout))

    async def _wait(self, job_ids: Iterable[str] | None, timeout: float | None) -> list[Job]:
        """Poll the awaited jobs themselves every few seconds, so `wait` returns within seconds of the
        provider reporting them finished rather than at the next background poll."""
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")
        store, service = self._store, self._engine.service
        if job_ids is None:
            ids = [j.job_id for j in await asyncio.to_thread(store.active)]
        else:
            ids = list(dict.fromkeys([job_ids] if isinstance(job_ids, str) else job_ids))
        deadline = None if timeout is None else time.monotonic() + timeout
        check_every = min(self.settings.poll_interval, _WAIT_REFRESH_S)
        next_refresh = time.monotonic() + min(check_every, 1.0)
        last_error: str | None = None
        while True:
            jobs = await asyncio.to_thread(store.get_many, ids)
            unknown = [i for i in ids if i not in jobs]
            if unknown:
                raise JobNotFound(unknown[0])
            pending = [
                jobs[i] for i in ids if not jobs[i].is_terminal and not jobs[i].metadata.get(POLL_STOPPED)
            ]
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
                    if len(pending) <= _WAIT_GETS:
                        await service.refresh_jobs([j.job_id for j in pending])
                    else:
                        await service.refresh_active()  # list pages: a few calls for many jobs
                    last_error = None
                except ProviderError as exc:
                    last_error = str(exc)  # keep waiting: the outage may pass before the deadline
                next_refresh = time.monotonic() + check_every
            sleep = 0.25 if deadline is None else max(0.0, min(0.25, deadline - now))
            await asyncio.sleep(sleep)

    # -- analysis ----------------------------------------------------------------------------

    def to_dataframe(self) -> pd.DataFrame:
        """One row per job with fixed columns and dtypes, straight from the store."""
        from jobwidget.core.frame import jobs_frame  # pandas loads here, not on `import jobwidget`

        self._check_open()
        return jobs_frame(self._store.frame_rows())

    async def async_to_dataframe(self) -> pd.DataFrame:
        return await asyncio.to_thread(self.to_dataframe)

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
    def guards(self) -> list[Guard]:
        """The guards in force (from `guard()` and the config file's `guards:`)."""
        self._check_open()
        return self._engine.guards()

    def unguard(self, guard: Guard | int | None = None) -> list[Guard]:
        """Remove a guard (or its id), or every guard with no argument; returns what was removed."""
        self._check_open()
        return self._engine.remove_guards(guard.id if isinstance(guard, Guard) else guard)

    def guard_actions(self) -> list[GuardAction]:
        """What the guards did (and, in dry runs, would have done) in this process, oldest first."""
        self._check_open()
        return self._engine.guard_actions()

    # -- events and the poller ---------------------------------------------------------------

    def on(self, event: str, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Call `callback(event_dict)` on the engine thread for each `event` (see docs/compatibility.md)."""
        if event not in PUBLIC_EVENTS:
            raise ValueError(f"unknown event {event!r}; known events: {', '.join(sorted(PUBLIC_EVENTS))}")
        self._check_open()
        self._loop.loop.call_soon_threadsafe(self._engine.bus.on, event, callback)

    def off(self, event: str, callback: Callable[[dict[str, Any]], Any] | None = None) -> None:
        if event not in PUBLIC_EVENTS:
            raise ValueError(f"unknown event {event!r}; known events: {', '.join(sorted(PUBLIC_EVENTS))}")
        self._check_open()
        self._loop.loop.call_soon_threadsafe(self._engine.bus.off, event, callback)

    def start(self) -> None:
        """Start the background poller (explicit start wins over configuration)."""
        self._run(self._start())

    async def _start(self) -> None:
        self._engine.poller.start()
        self._update_panel_status()  # the panel's "polling off" goes at once

    def stop(self) -> None:
        """Stop the background poller; the store, panel and explicit calls keep working."""
        if not self._closed:
            self._run(self._engine.poller.stop())
            self._update_panel_status()

    @property
    def polling(self) -> bool:
        return not self._closed and self._engine.poller.running

    # -- the panel ---------------------------------------------------------------------------

    @property
    def panel(self) -> JobsPanel:
        """The live panel (one anywidget for all jobs), created on first use."""
        self._check_open()
        if self._panel is None:
            from jobwidget.surfaces.widget import JobsPanel

            panel = JobsPanel(
                on_sync=self._panel_sync,
                on_cancel=self._panel_cancel,
                on_visible=self._panel_seen,
                totals=self._panel_totals,
            )
            active = self._store.active()
            recent = self._store.list(limit=_PANEL_JOBS)
            panel.set_jobs({j.job_id: j for j in [*recent, *active]}.values())
            self._panel = panel
            self._loop.loop.call_soon_threadsafe(self._engine.bus.on, "jobs_changed", self._to_panel)
            self._update_panel_status()
        return self._panel

    def _to_panel(self, event: dict[str, Any]) -> None:
        if self._panel is not None:
            self._panel.upsert(event["jobs"])
            self._update_panel_status()

    def _panel_totals(self, search: str) -> Mapping[str, Mapping[str, Any]]:
        """Counts and cost per status over the whole store, for the panel header (its worker thread)."""
        if self._closed:
            return {}
        return self._store.totals(search)

    def _update_panel_status(self, error: str | None = None) -> None:
        """Push provider, freshness and the error banner to the panel.

        The banner shows the poller's error while polling fails, else a failed panel Sync's, each until
        the provider next answers (a poll round or any sync), with the time it last did.
        """
        panel = self._panel
        if panel is None:
            return
        service = self._engine.service
        poller = self._engine.poller
        with self._status_lock:
            successes = [t for t in (poller.last_success, self._sync_ok_at) if t is not None]
            last_success = max(successes) if successes else None
            failed = self._sync_error
            if failed is not None and last_success is not None and last_success > failed[1]:
                self._sync_error = failed = None
            poll_error = error or poller.last_error
            failed_at = self._poll_error_at
            if poll_error and failed_at and last_success and last_success > failed_at:
                poll_error = None  # a sync got through since; the poller retries at once (poked)
        shown = poll_error or (failed[0] if failed else None)
        panel.set_status(
            provider_label=self._provider.label,
            demo=self._provider.is_demo,
            source=service.last_source,
            updated_at=service.last_update,
            error=shown,
            last_success=last_success,
            polling=poller.running,
        )

    def _on_poll_state(self, state: dict[str, Any]) -> None:
        if state.get("error"):
            with self._status_lock:
                self._poll_error_at = datetime.now(UTC)
        self._update_panel_status(error=state.get("error"))

    def _on_sync_completed(self, _event: dict[str, Any]) -> None:
        """Any successful sync (the panel's, `jobs.sync()`, the HTTP API's) is a success to show; a poller
        backing off after errors retries now instead of keeping its stale error up for minutes."""
        with self._status_lock:
            self._sync_ok_at = datetime.now(UTC)
        poller = self._engine.poller
        if poller.errors and poller.running:
            poller.poke()
        self._update_panel_status()

    def _watch_sync_error(self) -> None:
        """While a failed Sync's banner is up, look every 2 s for a poll round that reached the provider
        (a round that changes no job sends no event). On the engine loop; ends with the banner."""
        if self._closed or self._sync_error is None:
            return
        self._update_panel_status()
        if self._sync_error is not None:
            self._loop.loop.call_later(2.0, self._watch_sync_error)

    def _panel_sync(self) -> None:
        panel = self._panel
        if panel is None or self._closed:
            return
        panel.sync_started()
        future = self._loop.submit(self._engine.service.sync())

        def done(f: concurrent.futures.Future[SyncResult]) -> None:
            if f.cancelled():  # the engine is closing
                panel.sync_finished(None, error="the sync was cancelled")
                return
            exc = f.exception()
            now = datetime.now(UTC)
            with self._status_lock:
                watching = self._sync_error is not None
                if exc is None:
                    self._sync_error = None
                    self._sync_ok_at = now
                else:
                    self._sync_error = (str(exc) or type(exc).__name__, now)
            panel.sync_finished(None if exc else f.result(), error=str(exc) if exc else None)
            self._update_panel_status()
            if exc is not None and not watching and not self._closed:
                self._loop.loop.call_soon_threadsafe(self._watch_sync_error)

        future.add_done_callback(done)

    def _panel_cancel(self, job_id: str) -> None:
        if self._closed:
            return
        future = self._loop.submit(self._engine.service.cancel(job_id))

        def done(f: concurrent.futures.Future[Job]) -> None:
            exc = f.exception()
            if exc is not None and self._panel is not None:
                self._panel.toast(f"Could not cancel {job_id}: {exc}", "error", job_id=job_id)

        future.add_done_callback(done)

    def _panel_seen(self, visible: bool) -> None:
        self._panel_visible = bool(visible)
        if visible and not self._closed:
            self._loop.loop.call_soon_threadsafe(self._engine.poller.poke)

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
            self._loop.run(self._engine.aclose(), timeout=15)
        self._loop.close()
        if self._panel is not None:
            with contextlib.suppress(Exception):
                self._panel.close()
        self._store.close()

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
