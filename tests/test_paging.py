"""A full sync reads the job list page by page, asking for the next page while it builds and stores this
one (providers/paging.py, engine/sync_walk.py), against the simulated Replicate over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from jobwidget.core.errors import ProviderUnavailable
from jobwidget.core.models import Job
from jobwidget.engine.events import EventBus
from jobwidget.engine.providers.base import Page
from jobwidget.engine.stores import JobStore
from jobwidget.engine.sync import SyncService
from jobwidget.sim import SimConfig

from .fakes import FakeProvider, make_job
from .simhelpers import LIST, loopback_sim, provider_for, route_count

pytestmark = pytest.mark.anyio


async def _until(condition: object, what: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {deadline_s:.0f} s: {what}")
        await asyncio.sleep(0.01)


async def test_the_next_page_is_asked_for_while_this_one_is_handled() -> None:
    with loopback_sim(
        SimConfig(seed=21, fleet_size=350, active=5, arrival_interval=0, latency=0.02)
    ) as running:
        provider = provider_for(running)
        seen: list[Job] = []
        async with contextlib.aclosing(provider.pages(all=True)) as pages:
            async for jobs in pages:
                if not seen:  # holding the first page: the second is already on its way
                    await _until(lambda: route_count(running, LIST) == 2, "a request for page 2")
                seen += jobs
        assert len(seen) == 350 and len({j.job_id for j in seen}) == 350
        assert route_count(running, LIST) == 4  # no page asked for twice, none past the last
        await provider.aclose()


async def test_a_limit_asks_for_no_page_past_it() -> None:
    with loopback_sim(SimConfig(seed=22, fleet_size=350, arrival_interval=0)) as running:
        provider = provider_for(running)
        jobs = await provider.list_jobs(limit=150)
        assert len(jobs) == 150 and route_count(running, LIST) == 2
        await provider.aclose()


async def test_leaving_the_walk_early_drops_the_request_in_flight() -> None:
    with loopback_sim(SimConfig(seed=23, fleet_size=350, arrival_interval=0, latency=0.2)) as running:
        provider = provider_for(running)
        async with contextlib.aclosing(provider.pages(all=True)) as pages:
            async for _jobs in pages:
                break
        await asyncio.sleep(0.5)  # longer than the simulator's latency: a walk still going would ask again
        assert route_count(running, LIST) <= 2
        await provider.aclose()


class _FailingAt(FakeProvider):
    """Fails every list page from cursor `at` on, as a provider gone down part way through a walk."""

    def __init__(self, jobs: list[Job], at: str) -> None:
        super().__init__(jobs)
        self.at = at

    async def list_page(self, cursor: str | None = None) -> Page:
        if cursor == self.at:
            self._call("list")
            raise ProviderUnavailable("the provider went away")
        return await super().list_page(cursor)


async def test_a_walk_that_fails_part_way_keeps_the_pages_read_before() -> None:
    jobs = [make_job(i, "completed") for i in range(450)]
    bus = EventBus()
    bus.start()
    store = JobStore(":memory:")
    service = SyncService(store, _FailingAt(jobs, at="300"), bus)
    with pytest.raises(ProviderUnavailable):
        await service.sync(all=True)
    assert store.count() == 300  # pages 1-3 were stored as they came
    service.provider = FakeProvider(jobs)
    result = await service.sync(all=True)
    assert result.synced == 150 and store.count() == 450
    store.close()


async def test_a_full_sync_announces_every_job_once_and_discovers_them_in_one_event() -> None:
    jobs = [make_job(i, "completed") for i in range(250)]
    bus = EventBus()
    bus.start()
    created: list[str] = []
    discovered: list[dict[str, object]] = []
    bus.on("jobs_changed", lambda e: created.extend(j.job_id for j in e["jobs"]))
    bus.on("jobs_discovered", discovered.append)
    store = JobStore(":memory:")
    service = SyncService(store, FakeProvider(jobs, page_size=60), bus)
    result = await service.sync(all=True)
    await bus.drain()
    assert result.synced == 250 and sorted(result.job_ids) == sorted(j.job_id for j in jobs)
    assert sorted(created) == sorted(j.job_id for j in jobs)
    assert [d["count"] for d in discovered] == [250]
    store.close()
