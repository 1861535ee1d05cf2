"""Provider client and sync engine against the simulated Replicate on loopback, 50 ms per request.

- client: GETs per second through `ReplicateProvider` (bounded concurrency under the limiter) beside a
  plain sequential loop of GETs with httpx, as a script would do.
- sync: refreshing 1,000 active jobs with the engine (list pages, GETs only where needed) beside the
  naive loop (one GET per active job, as the reference implementation and a user with the official
  client do): provider calls, wall time, and the engine loop's longest stall during the refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

import httpx

from bench._harness import Row, bench
from jobwidget.engine.events import EventBus
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.engine.stores import JobStore
from jobwidget.engine.sync import SyncService
from jobwidget.sim import SimConfig, SimulatedReplicate, start_in_thread

LATENCY = 0.05


class StallMonitor:
    """Longest delay of a 5 ms ticker on the loop: how long the engine ever blocked its own loop.

    Full garbage collections (generation 2) pause every thread of the process, whoever triggers them; they
    are timed too (`gc_pauses`), and `worst_outside_gc` is the longest delay that overlapped none of them.
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_outside_gc = 0.0
        self.gc_pauses: list[float] = []
        self._gc_spans: list[tuple[float, float]] = []
        # A collection under way: the "stop" callback is Python code, and the loop may take the GIL
        # before it runs, so a delay is matched against the open collection too.
        self._gc_open: float | None = None
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_open = time.perf_counter()
        elif self._gc_open is not None:
            end = time.perf_counter()
            self._gc_spans.append((self._gc_open, end))
            self.gc_pauses.append(end - self._gc_open)
            self._gc_open = None

    async def _tick(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            late = now - t - 0.005
            self.worst = max(self.worst, late)
            opened = self._gc_open
            during_gc = opened is not None and opened < now
            if not during_gc and not any(start < now and end > t for start, end in self._gc_spans):
                self.worst_outside_gc = max(self.worst_outside_gc, late)

    def __enter__(self) -> StallMonitor:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)


def _sim(active: int, fleet: int) -> SimulatedReplicate:
    # time_scale 1: nothing finishes during the measurement, so both sides see the same work
    return SimulatedReplicate(
        SimConfig(seed=11, fleet_size=fleet, active=active, arrival_interval=0, time_scale=1, latency=LATENCY)
    )


async def _client(base_url: str, ids: list[str]) -> tuple[float, float]:
    provider = ReplicateProvider(token="r8_bench", base_url=base_url)
    t = time.perf_counter()
    await asyncio.gather(*(provider.get_job(i) for i in ids))
    fast = time.perf_counter() - t
    await provider.aclose()
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": "Bearer r8_bench"}) as plain:
        t = time.perf_counter()
        for i in ids:
            (await plain.get(f"/v1/trainings/{i}")).json()
        slow = time.perf_counter() - t
    return fast, slow


@bench("client")
def run_client(quick: bool) -> list[Row]:
    n = 60 if quick else 200
    sim = _sim(active=5, fleet=n)
    with start_in_thread(sim=sim) as running:
        ids = sim.fleet.ids()[:n]
        fast, slow = asyncio.run(_client(running.base_url, ids))
    return [
        Row(
            "client",
            f"{n} GETs at {LATENCY * 1000:.0f} ms latency",
            n / fast,
            "req/s",
            None,
            note=f"sequential loop: {n / slow:.1f} req/s ({slow / fast:.1f}x slower)",
        ),
    ]


async def _refresh(base_url: str, sim: SimulatedReplicate) -> tuple[int, float, float, int]:
    store = JobStore(":memory:")
    bus = EventBus()
    bus.start()
    service = SyncService(store, ReplicateProvider(token="r8_bench", base_url=base_url), bus)
    await service.sync(all=True)
    active = len(store.active())
    sim.reset_stats()
    with StallMonitor() as monitor:
        t = time.perf_counter()
        await service.refresh_active()
        wall = time.perf_counter() - t
    calls = sim.stats_snapshot()["total"]
    await service.provider.aclose()
    return calls, wall, monitor.worst, active


async def _naive(base_url: str, ids: list[str], sim: SimulatedReplicate) -> tuple[int, float]:
    sim.reset_stats()
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": "Bearer r8_bench"}) as plain:
        t = time.perf_counter()
        for i in ids:
            (await plain.get(f"/v1/trainings/{i}")).json()
        wall = time.perf_counter() - t
    return sim.stats_snapshot()["total"], wall


@bench("sync")
def run_sync(quick: bool) -> list[Row]:
    active = 200 if quick else 1000
    sim = _sim(active=active, fleet=active + 500)
    with start_in_thread(sim=sim) as running:
        calls, wall, stall, n = asyncio.run(_refresh(running.base_url, sim))
        store_ids = sim.fleet.ids()[:active]
        naive_calls, naive_wall = asyncio.run(_naive(running.base_url, store_ids, sim))
    assert n == active, (n, active)
    return [
        Row(
            "sync",
            f"refresh {active} active jobs: provider calls",
            calls,
            "calls",
            naive_calls,
            target=">= 30x fewer",
            note="vs one GET per job",
        ),
        Row(
            "sync",
            f"refresh {active} active jobs: wall time",
            wall * 1e3,
            "ms",
            naive_wall * 1e3,
            target=">= 20x less",
            note="vs sequential GET loop",
        ),
        Row("sync", "engine loop's longest stall during refresh", stall * 1e3, "ms", None, target="< 25 ms"),
    ]


# -- the refresh planner: k active jobs deep in history --------------------------------------------


async def _walk_calls(service: SyncService, ids: set[str]) -> int:
    """The previous rule, as a baseline: walk list pages while more than one active job is unfound
    (up to 50 pages), then GET the rest."""
    missing, calls, cursor = set(ids), 0, None
    while calls == 0 or (len(missing) > 1 and calls < 50):
        page = await service.provider.list_page(cursor)
        calls += 1
        missing -= {j.job_id for j in page.jobs}
        cursor = page.next_cursor
        if not cursor:
            break
    return calls + len(missing)


async def _planner(base_url: str, sim: SimulatedReplicate, k: int) -> tuple[int, int]:
    store = JobStore(":memory:")
    bus = EventBus()
    bus.start()
    service = SyncService(store, ReplicateProvider(token="r8_bench", base_url=base_url), bus)
    await service.sync(all=True)
    history = store.list(limit=None)
    old = [j.job_id for j in history[2000 : 2000 + 25 * k : 25]]
    with store._write() as conn:  # the store believes these still run (as a missed poll would leave it)
        conn.executemany("UPDATE jobs SET status = 'running' WHERE job_id = ?", [(i,) for i in old])
    walk = await _walk_calls(service, set(old))
    sim.reset_stats()
    await service.refresh_active()
    planned = sim.stats_snapshot()["total"]
    await service.provider.aclose()
    return planned, walk


@bench("planner")
def run_planner(quick: bool) -> list[Row]:
    rows = []
    for k in (2, 20):
        sim = SimulatedReplicate(SimConfig(seed=12, fleet_size=3000, active=0, arrival_interval=0))
        with start_in_thread(sim=sim) as running:
            planned, walk = asyncio.run(_planner(running.base_url, sim, k))
        rows.append(
            Row(
                "planner",
                f"{k} active jobs beyond page 20 of 30: calls per poll",
                planned,
                "calls",
                walk,
                target=f"<= {k + 1} (k+1)",
                note=f"baseline: the previous page walk; one GET per job + the discovery page = {k + 1}",
            )
        )
    return rows
