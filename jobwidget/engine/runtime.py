"""The engine assembled: store + provider + sync service + poller + store follower + events.

Everything here runs on one asyncio loop (the controller's background thread, or the HTTP server's
loop). Surfaces talk to `Engine` and never reach into its parts' internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from jobwidget.core.errors import ConfigError
from jobwidget.engine.config import Settings
from jobwidget.engine.events import EventBus
from jobwidget.engine.poller import Poller
from jobwidget.engine.providers.base import Provider
from jobwidget.engine.store import JobStore
from jobwidget.engine.sync import SyncService

__all__ = ["Engine", "make_provider", "wants_demo"]

log = logging.getLogger("jobwidget.engine")
_FOLLOW_S = 1.0  # how often the store is checked for other processes' changes


def wants_demo(provider: Any, env: dict[str, str] | None = None) -> bool:
    """Whether the provider spec resolves to the simulated Replicate (no token, no network)."""
    env = dict(os.environ) if env is None else env
    if provider is None:
        return not env.get("REPLICATE_API_TOKEN")
    return provider == "sim"


def make_provider(spec: Any, settings: Settings) -> Provider:
    """`None` (token set -> Replicate, else the simulator), "replicate", "sim", or a Provider object."""
    if isinstance(spec, Provider):
        return spec
    if spec is None:
        spec = "replicate" if os.environ.get("REPLICATE_API_TOKEN") else "sim"
    if spec == "replicate":
        from jobwidget.engine.providers.replicate import ReplicateProvider

        return ReplicateProvider(
            pricing=settings.pricing,
            max_rpm=settings.max_requests_per_minute,
            max_concurrency=settings.max_concurrency,
        )
    if spec == "sim":
        from jobwidget.engine.providers.simulated import simulated_provider

        return simulated_provider(pricing=settings.pricing)
    raise ConfigError(
        f"provider must be 'replicate', 'sim' or a provider object such as jobwidget.ReplicateProvider(), "
        f"got {spec!r}"
    )


class Engine:
    """One provider, one store, one poller. Create and use on the loop that will run it."""

    def __init__(
        self,
        store: JobStore,
        provider: Provider,
        settings: Settings,
        *,
        visible: Callable[[], bool] = lambda: False,
        on_poll_state: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.settings = settings
        self.bus = EventBus()
        self.service = SyncService(store, provider, self.bus, max_concurrency=settings.max_concurrency)
        self.poller = Poller(
            self.service,
            store,
            self.bus,
            interval=settings.poll_interval,
            progress_interval=settings.progress_interval,
            max_requests_per_minute=settings.max_requests_per_minute,
            visible=visible,
            on_state=on_poll_state,
        )
        self._follow_task: asyncio.Task[None] | None = None

    async def start(self, *, poll: bool) -> None:
        self.bus.start()
        await self.service.load_seen()
        self._follow_task = asyncio.get_running_loop().create_task(self._follow(), name="jobwidget-follow")
        if poll:
            self.poller.start()

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(_FOLLOW_S)
            try:
                await self.service.follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a locked or vanished store must not end following
                log.warning("jobwidget: following the store failed: %s", exc)

    async def aclose(self) -> None:
        await self.poller.stop()
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
            self._follow_task = None
        await self.bus.aclose()
        with contextlib.suppress(Exception):
            await self.provider.aclose()
