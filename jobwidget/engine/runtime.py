"""The engine assembled: store + provider + sync service + poller + store follower + events.

Everything here runs on one asyncio loop (the controller's background thread, or the HTTP server's
loop). Surfaces talk to `Engine` and never reach into its parts' internals.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobwidget.core.errors import ConfigError, JobNotFound
from jobwidget.core.health import Sample
from jobwidget.core.logtail import TAIL_LINES, LogTail
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.results import InlineProgress, ProviderCheck, RefreshResult, SyncResult
from jobwidget.core.training_request import TrainingRequest
from jobwidget.engine.actions import launch, read_log, relaunch
from jobwidget.engine.config import Settings
from jobwidget.engine.events import Callback, EventBus
from jobwidget.engine.follower import StoreFollower
from jobwidget.engine.gc_freeze import freeze_once
from jobwidget.engine.guards import Guard, GuardAction, GuardKeeper
from jobwidget.engine.health import HealthMonitor
from jobwidget.engine.poller import Poller
from jobwidget.engine.providers.base import Provider
from jobwidget.engine.stores import JobStore, Store, UpsertResult, as_store, open_store
from jobwidget.engine.sync import SyncService
from jobwidget.engine.waiting import wait_for_jobs

__all__ = ["Engine", "EngineStatus", "make_provider", "resolve_provider", "wants_demo"]

log = logging.getLogger("jobwidget.engine")
_PROVIDER_SETTINGS = ("pricing", "max_requests_per_minute", "max_concurrency")


def resolve_provider(spec: Any, env: Mapping[str, str] | None = None) -> Provider | str:
    """ "replicate", "sim" or the provider object itself; `None` means Replicate when a token is set.

    A base URL without a token is refused rather than read as "run the demo": someone pointing
    jobwidget at a proxy or a `jobwidget sim` expects to talk to it, not to the built-in simulator.
    """
    env = os.environ if env is None else env
    if isinstance(spec, Provider) or spec in ("replicate", "sim"):
        return spec
    if spec is None:
        if env.get("REPLICATE_API_TOKEN", "").strip():
            return "replicate"
        if env.get("REPLICATE_BASE_URL", "").strip():
            raise ConfigError(
                "REPLICATE_BASE_URL is set (environment) but REPLICATE_API_TOKEN is not: set the token "
                "(any value works for a local `jobwidget sim`), or unset REPLICATE_BASE_URL to run the "
                "built-in simulated demo (or choose it explicitly: provider='sim', --provider sim)"
            )
        return "sim"
    raise ConfigError(
        f"provider must be 'replicate', 'sim' or a provider object such as jobwidget.ReplicateProvider(), "
        f"got {spec!r}"
    )


def wants_demo(provider: Any, env: Mapping[str, str] | None = None) -> bool:
    """Whether the provider spec resolves to the simulated Replicate (no token, no network)."""
    resolved = resolve_provider(provider, env)
    return resolved.is_demo if isinstance(resolved, Provider) else resolved == "sim"


def make_provider(spec: Any, settings: Settings, env: Mapping[str, str] | None = None) -> Provider:
    """The provider for a spec (see `resolve_provider`), with the settings given to jobwidget applied.

    A provider object takes the prices and request limits that were configured (argument, environment
    or config file) and keeps its own where the setting is only a default.
    """
    resolved = resolve_provider(spec, env)
    if isinstance(resolved, Provider):
        provider = resolved
    elif resolved == "replicate":
        from jobwidget.engine.providers.replicate import ReplicateProvider

        return ReplicateProvider(
            pricing=settings.pricing,
            max_rpm=settings.max_requests_per_minute,
            max_concurrency=settings.max_concurrency,
        )
    else:
        from jobwidget.engine.providers.simulated import simulated_provider

        provider = simulated_provider(pricing=settings.pricing)
    given = {name: getattr(settings, name) for name in _PROVIDER_SETTINGS if settings.is_set(name)}
    if given:
        provider.configure(**given)
    return provider


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """What a surface shows about the engine: which provider, how fresh, what is wrong."""

    provider_label: str
    demo: bool
    polling: bool
    updated_at: datetime | None  # the last change written to the store by this process
    source: str | None  # what wrote it: "poll", "sync", "webhook", "store" (another process)...
    error: str | None  # the poller's current error, None while the provider answers
    last_success: datetime | None  # the end of the last poll that reached the provider


class Engine:
    """The engine's one door: one provider, one store, one poller, and the verbs surfaces call.

    Surfaces (the controller, the panel, the HTTP server, the CLI) use these methods and never the
    parts behind them. Every coroutine runs on the loop that runs the engine; store reads go to a
    worker thread so the loop never waits on SQLite.
    """

    def __init__(
        self,
        store: Store | JobStore,
        provider: Provider,
        settings: Settings,
        *,
        visible: Callable[[], bool] = lambda: False,
        on_poll_state: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = as_store(store)
        self.provider = provider
        self.settings = settings
        self.bus = EventBus()
        self.service = SyncService(self.store, provider, self.bus, max_concurrency=settings.max_concurrency)
        self._attach_health()
        self.poller = Poller(
            self.service,
            self.store,
            self.bus,
            interval=settings.poll_interval,
            progress_interval=settings.progress_interval,
            max_requests_per_minute=settings.max_requests_per_minute,
            # Guards that read health flags need log reads even when no panel is on screen.
            visible=lambda: visible() or self.guard_keeper.needs_logs,
            on_state=on_poll_state,
        )
        # Other processes' changes: pushed (PostgreSQL NOTIFY) or read each second (SQLite).
        self.follower = StoreFollower(self.store, self.service, on_state=on_poll_state)
        self._follow_task: asyncio.Task[None] | None = None
        self._owns_store = False

    def _attach_health(self) -> None:
        """Run health on every write (flags, projections, history) and the guards after it."""
        pricing = getattr(self.provider, "pricing", None)

        def price(job: Job) -> float | None:
            return pricing.price_per_second(job.hardware) if pricing is not None else None

        service = self.service
        service.health = HealthMonitor(
            self.store, thresholds=self.settings.health, price_per_s=price, clock=lambda: service.clock()
        )
        self.guard_keeper = GuardKeeper(
            cancel=lambda job_id, meta: service.cancel(job_id, metadata=meta),
            record=lambda job: service.apply([job], source="guard", sighted=False),
            emit=self.bus.emit,
            clock=lambda: service.clock(),
        )
        for guard in self.settings.guards:
            self.guard_keeper.add(guard)
        service.after_apply = self.guard_keeper.check

    async def start(self, *, poll: bool) -> None:
        if self.settings.gc_freeze:
            freeze_once()  # opt-in, process-wide (engine/gc_freeze.py)
        self.bus.start()
        await self.service.load_seen()
        self._follow_task = asyncio.get_running_loop().create_task(
            self.follower.run(), name="jobwidget-follow"
        )
        if poll:
            self.poller.start()

    @classmethod
    async def open(
        cls,
        settings: Settings,
        provider: Provider,
        *,
        visible: Callable[[], bool] = lambda: False,
        on_poll_state: Callable[[dict[str, Any]], None] | None = None,
    ) -> Engine:
        """An engine over the store the settings name (opened here, closed by `aclose`)."""
        store = await open_store(settings.store)
        engine = cls(store, provider, settings, visible=visible, on_poll_state=on_poll_state)
        engine._owns_store = True
        return engine

    @property
    def job_store(self) -> Store:
        """The store itself (async), for a surface's blocking view of it (`jobs.store`)."""
        return self.store

    # -- reads ------------------------------------------------------------------------------

    async def list_jobs(
        self,
        status: str | JobStatus | Iterable[str | JobStatus] | None = None,
        provider: str | None = None,
        limit: int | None = 50,
        **narrowing: Any,
    ) -> builtins.list[Job]:
        """Newest first; `narrowing`: model, created_after, created_before, search, and `before` (a
        `stores.Cursor`: the page after one that ended at that job) as `JobStore.list` takes them."""
        return await self.store.list(status=status, provider=provider, limit=limit, **narrowing)

    async def get(self, job_id: str) -> Job:
        """One job from the store; `JobNotFound` if unknown."""
        job = await self.find(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def find(self, job_id: str) -> Job | None:
        return await self.store.get(job_id)

    async def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        return await self.store.get_many(job_ids)

    async def active(self) -> builtins.list[Job]:
        return await self.store.active()

    async def totals(self, search: str | None = None) -> dict[str, dict[str, Any]]:
        """Counts and cost per status over the whole store, matching `search` (id, name or model)."""
        return await self.store.totals(search)

    async def frame_rows(self) -> builtins.list[tuple[Any, ...]]:
        return await self.store.frame_rows()

    async def frame_rows_with_inputs(self) -> builtins.list[tuple[Any, ...]]:
        return await self.store.frame_rows_with_inputs()

    async def history(self, job_id: str) -> builtins.list[Sample]:
        """The job's progress history (downsampled), oldest first; `JobNotFound` for an unknown job."""
        if await self.store.get(job_id) is None:
            raise JobNotFound(job_id)
        return await self.store.history(job_id)

    # -- guards (opt-in: nothing is cancelled unless one was added) ------------------------------

    async def add_guard(self, guard: Guard) -> Guard:
        """Watch with `guard` from now on; jobs it already applies to are checked at once."""
        self.guard_keeper.add(guard)
        if guard.needs_logs:
            self.poller.poke()  # log reads start now, not at the next panel view
        active = await self.store.active()
        self.guard_keeper.check([j for j in active if guard.applies(j)])
        return guard

    def remove_guards(self, guard_id: int | None = None) -> builtins.list[Guard]:
        return self.guard_keeper.remove(guard_id)

    def guards(self) -> builtins.list[Guard]:
        return self.guard_keeper.guards

    def guard_actions(self) -> builtins.list[GuardAction]:
        return builtins.list(self.guard_keeper.actions)

    async def drain_guards(self) -> None:
        await self.guard_keeper.drain()

    # -- provider verbs ----------------------------------------------------------------------

    async def sync(self, *, limit: int | None = 100, all: bool = False) -> SyncResult:
        return await self.service.sync(limit=limit, all=all)

    async def refresh_active(self) -> RefreshResult:
        """Discover new jobs and bring every active one up to date (what a poll does, now)."""
        return await self.service.refresh_active()

    async def refresh_jobs(self, job_ids: Iterable[str]) -> int:
        return await self.service.refresh_jobs(job_ids)

    async def wait(self, job_ids: Iterable[str] | str | None, timeout: float | None) -> builtins.list[Job]:
        """Until those jobs (default: every active one) are terminal; `JobsTimeout` after `timeout`."""
        return await wait_for_jobs(self, job_ids, timeout, poll_interval=self.settings.poll_interval)

    async def inline_progress(self, job_id: str) -> InlineProgress:
        return await self.service.inline_progress(job_id)

    async def cancel(self, job_id: str) -> Job:
        return await self.service.cancel(job_id)

    async def validate(self) -> ProviderCheck:
        return await self.service.validate()

    # -- starting trainings and reading logs (engine/actions.py) ------------------------------

    async def create(self, request: TrainingRequest) -> Job:
        """Start a training; it is stored (and on every panel) as soon as the provider accepts it."""
        return await launch(self.service, request)

    async def retry(
        self,
        job_id: str,
        changes: Mapping[str, Any],
        *,
        destination: str | None = None,
        webhook: str | None = None,
        webhook_events_filter: Iterable[str] | None = None,
    ) -> Job:
        """Start a training like `job_id`, its inputs overridden by `changes`, linked by `retry_of`."""
        return await relaunch(
            self.service,
            job_id,
            changes,
            destination=destination,
            webhook=webhook,
            webhook_events_filter=webhook_events_filter,
        )

    async def read_log(self, job_id: str, lines: int = TAIL_LINES) -> tuple[Job, LogTail]:
        """The job fresh from the provider (and stored) with the last `lines` lines of its log."""
        return await read_log(self.service, job_id, lines)

    # -- events and polling ------------------------------------------------------------------

    def on(self, event: str, callback: Callback) -> None:
        """Subscribe (call on the engine loop; `EventBus` checks the event name)."""
        self.bus.on(event, callback)

    def off(self, event: str, callback: Callback | None = None) -> None:
        self.bus.off(event, callback)

    def start_polling(self) -> None:
        self.poller.start()

    async def stop_polling(self) -> None:
        await self.poller.stop()

    @property
    def polling(self) -> bool:
        return self.poller.running

    def poke(self) -> None:
        """Refresh soon (a panel became visible)."""
        self.poller.poke()

    def status(self) -> EngineStatus:
        return EngineStatus(
            provider_label=self.provider.label,
            demo=self.provider.is_demo,
            polling=self.poller.running,
            updated_at=self.service.last_update,
            source=self.service.last_source,
            error=self.follower.error or self.poller.last_error,
            last_success=self.poller.last_success,
        )

    @property
    def provider_label(self) -> str:
        return self.provider.label

    @property
    def is_demo(self) -> bool:
        return self.provider.is_demo

    # -- settings a surface needs -------------------------------------------------------------

    @property
    def poll_enabled(self) -> bool:
        """Whether configuration asks for background polling (a webhook URL turns it off by default)."""
        return self.settings.poll_enabled

    @property
    def poll_interval(self) -> float:
        return self.settings.poll_interval

    @property
    def webhook_url(self) -> str | None:
        return self.settings.webhook_url

    @property
    def configured_webhook_secret(self) -> str | None:
        return self.settings.webhook_secret

    def secrets(self) -> builtins.list[str]:
        """Every credential this engine holds, for surfaces to mask wherever text could carry one."""
        held = [*self.provider.secrets(), self.settings.webhook_secret]
        return [s for s in held if isinstance(s, str) and s]

    # -- webhooks and the change log -----------------------------------------------------------

    async def fetch_webhook_secret(self) -> str:
        """The provider's webhook signing secret (one provider call)."""
        return await self.provider.webhook_secret()

    async def ingest(self, payload: object, *, delivery_id: str | None = None) -> UpsertResult:
        """Apply a verified webhook body exactly once: the delivery id is recorded in the same write."""
        return await self.service.ingest(payload, delivery_id=delivery_id)

    async def revision(self) -> int:
        return await self.store.revision()

    async def changes_in_order(self, rev: int) -> tuple[int, builtins.list[tuple[int, Job]]]:
        """What an event stream replays to a client that last saw revision `rev`."""
        return await self.store.changes_in_order(rev)

    @property
    def provider_name(self) -> str:
        return self.provider.name

    async def aclose(self) -> None:
        await self.poller.stop()
        await self.guard_keeper.aclose()
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
            self._follow_task = None
        await self.bus.aclose()
        with contextlib.suppress(Exception):
            await self.provider.aclose()

    async def close_store(self) -> None:
        """Close the store this engine opened (after `aclose`)."""
        if self._owns_store:
            await self.store.aclose()
