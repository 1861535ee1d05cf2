"""A team on one PostgreSQL store, over a real server (`./dev test` starts one) and the simulated
Replicate on 127.0.0.1: an outage of the database mid-sync, a crashed lease holder."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest

from jobwidget.core.models import JobStatus
from jobwidget.engine.config import load_settings
from jobwidget.engine.runtime import Engine
from jobwidget.engine.stores import open_store
from jobwidget.sim import SimConfig

from .deadlines import DEADLINE
from .fakes import make_job
from .pg import pg_ctl
from .simhelpers import ManualClock, loopback_sim, provider_for

pytestmark = pytest.mark.anyio


async def until(predicate: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g} s, still waiting for {what}")
        await asyncio.sleep(0.05)


async def test_killing_postgres_mid_sync_loses_nothing_and_the_engine_recovers(postgres_url: str) -> None:
    clock = ManualClock()
    config = SimConfig(seed=3, fleet_size=30, active=8, arrival_interval=0)
    with loopback_sim(config, clock=clock) as running:
        settings = load_settings(store=postgres_url, poll_interval=0.2)
        poller = await Engine.open(settings, provider_for(running, retries=0))
        follower = await Engine.open(settings, provider_for(running))
        changes: list[dict] = []
        follower.on("job_status_changed", changes.append)
        try:
            await poller.sync(all=True)
            await poller.start(poll=True)
            await follower.start(poll=False)
            active = {j.job_id for j in await poller.active()}
            assert active, "the simulated fleet has running trainings"
            await asyncio.to_thread(pg_ctl, "stop", "-m", "immediate")  # the server dies mid-sync
            clock.advance(6 * 3600.0)  # meanwhile every training finishes at the provider
            await until(lambda: follower.status().error is not None, "the follower to report the lost store")
            assert "unreachable" in (follower.status().error or "")
            await asyncio.to_thread(pg_ctl, "start")
            await until(lambda: follower.status().error is None, "the follower to reconnect by itself")

            finished: dict[str, JobStatus] = {}

            async def settled() -> bool:
                jobs = await follower.get_many(active)
                finished.update({k: j.status for k, j in jobs.items() if not j.status.is_active})
                return len(finished) == len(active)

            deadline = time.monotonic() + DEADLINE
            while not await settled():
                assert time.monotonic() < deadline, f"only {len(finished)}/{len(active)} trainings finished"
                await asyncio.sleep(0.1)
            assert await follower.list_jobs(limit=None) and len(await follower.list_jobs(limit=None)) == 30
            await until(
                lambda: {e["job_id"] for e in changes if e["status"] == finished.get(e["job_id"])} == active,
                "the follower to announce every finished training",
            )
            transitions = [(e["job_id"], e["previous"], e["status"]) for e in changes]
            assert len(transitions) == len(set(transitions)), f"a change was announced twice: {transitions}"
        finally:
            for engine in (poller, follower):
                await engine.aclose()
                await engine.close_store()


_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from jobwidget.engine.stores import open_store

    async def main():
        store = await open_store(sys.argv[1])
        assert await store.acquire_lease("poll", "crashing-holder", 3600.0)
        print("held", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_a_crashed_lease_holder_is_replaced(postgres_url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, postgres_url],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    store = await open_store(postgres_url)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert not await store.acquire_lease("poll", "me", 30.0)  # a live holder keeps its lease
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE)
        assert await store.acquire_lease("poll", "me", 30.0)  # its process is gone: taken over at once
        lease = await store.lease("poll")
        assert lease is not None and lease.holder == "me" and lease.pid == os.getpid()
        # A holder on another machine cannot be checked for life: its lease runs out instead.
        assert await store.acquire_lease("other-host", "far", 0.1)
        await asyncio.sleep(0.3)
        assert await store.acquire_lease("other-host", "me", 30.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await store.aclose()


async def test_reading_changes_after_a_server_restart_needs_no_further_commit(postgres_url: str) -> None:
    """The follower's reads have a connection of their own; one left over from before a restart is
    replaced on the spot, so catching up after the outage does not wait for another process's commit."""
    store = await open_store(postgres_url)
    try:
        first = await store.upsert([make_job(1)])
        assert (await store.changes_since(0))[0] == first.rev  # the reader's connection is open now
        await asyncio.to_thread(pg_ctl, "stop", "-m", "immediate")
        await asyncio.to_thread(pg_ctl, "start")
        second = await store.upsert([make_job(2)])  # the pool replaces its own lost connections
        rev, jobs = await store.changes_since(first.rev)
        assert rev == second.rev and [j.job_id for j in jobs] == [make_job(2).job_id]
        rev, jobs = await store.changes_since(second.rev)
        assert (rev, jobs) == (second.rev, [])  # nothing newer: the revision alone, no empty job
    finally:
        await store.aclose()
