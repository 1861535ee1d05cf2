"""The engine assembled: store + provider + sync service + poller + store follower + events.

Everything here runs on one asyncio loop (the controller's background thread, or the HTTP server's
loop). Surfaces talk to `Engine` and never reach into its parts' internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from jobwidget.core.errors import ConfigError
from jobwidget.engine.config import Settings
from jobwidget.engine.events import EventBus
from jobwidget.engine.poller import Poller
from jobwidget.engine.providers.base import Provider
from jobwidget.engine.store import JobStore
from jobwidget.engine.sync import SyncService

__all__ = ["Engine", "make_provider", "resolve_provider", "wants_demo"]

log = logging.getLogger("jobwidget.engine")
_FOLLOW_S = 1.0  # how often the store is checked for other processes' changes
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
