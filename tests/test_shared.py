"""One provider call shared by concurrent callers (`jobwidget.engine.shared.Coalesced`)."""

from __future__ import annotations

import asyncio

import pytest

from jobwidget.engine.shared import Coalesced

pytestmark = pytest.mark.anyio


class Work:
    """Records every run with what it was asked for; each run waits until released."""

    def __init__(self) -> None:
        self.asked: list[int | None] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = 0

    async def __call__(self, limit: int | None) -> str:
        self.asked.append(limit)
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return f"synced {limit}"


def _limits(work: Work) -> Coalesced[int | None, str]:
    return Coalesced(
        work,
        covers=lambda running, wanted: running is None or (wanted is not None and running >= wanted),
        merge=lambda a, b: None if a is None or b is None else max(a, b),
    )


async def test_callers_covered_by_the_run_in_flight_share_it():
    work = Work()
    shared = _limits(work)
    calls = [asyncio.create_task(shared(100)) for _ in range(5)] + [asyncio.create_task(shared(30))]
    await work.started.wait()
    work.release.set()
    assert await asyncio.gather(*calls) == ["synced 100"] * 6
    assert work.asked == [100]


async def test_callers_wanting_more_wait_and_then_share_one_run_covering_them_all():
    work = Work()
    shared = _limits(work)
    first = asyncio.create_task(shared(10))
    await work.started.wait()
    more = [asyncio.create_task(shared(limit)) for limit in (20, 200, 50, 150)]
    everything = asyncio.create_task(shared(None))
    for _ in range(5):
        await asyncio.sleep(0)
    work.release.set()
    assert await first == "synced 10"
    results = await asyncio.gather(*more, everything)
    assert work.asked == [10, None]  # two runs, not six: the second covers every caller that waited
    assert set(results) == {"synced None"}


async def test_a_run_stops_when_its_last_caller_is_cancelled():
    work = Work()
    shared = _limits(work)
    a, b = asyncio.create_task(shared(100)), asyncio.create_task(shared(100))
    await work.started.wait()
    a.cancel()
    await asyncio.sleep(0)
    assert work.cancelled == 0 and shared.running  # b still waits for it
    b.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert work.cancelled == 1 and not shared.running
    for task in (a, b):
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_an_error_reaches_every_caller_and_the_next_call_runs_again():
    calls = 0

    async def failing(_: None) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("provider down")

    shared: Coalesced[None, str] = Coalesced(failing)
    results = await asyncio.gather(*(shared(None) for _ in range(4)), return_exceptions=True)
    assert [str(r) for r in results] == ["provider down"] * 4 and calls == 1
    with pytest.raises(RuntimeError):
        await shared(None)
    assert calls == 2
