"""The sync engine and poller against the simulated Replicate over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from jobwidget.core.models import Job, JobStatus
from jobwidget.engine.config import load_settings
from jobwidget.engine.events import EventBus
from jobwidget.engine.job_reads import MISS_LIMIT
from jobwidget.engine.runtime import Engine
from jobwidget.engine.stores import JobStore
from jobwidget.engine.sync import SyncService
from jobwidget.sim import SimConfig

from .simhelpers import GET, LIST, ManualClock, loopback_sim, provider_for, route_count

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self, bus: EventBus, *events: str) -> None:
        self.events: list[dict] = []
        for name in events:
            bus.on(name, self.events.append)


async def _service(running, store: JobStore | None = None, **kw) -> tuple[SyncService, EventBus]:
    bus = EventBus()
    bus.start()
    service = SyncService(store or JobStore(":memory:"), provider_for(running, **kw), bus)
    await service.load_seen()
    return service, bus


async def test_discovery_counts_and_paging():
    with loopback_sim(SimConfig(seed=2, fleet_size=250, active=10, arrival_interval=0)) as running:
        service, bus = await _service(running)
        rec = Recorder(bus, "jobs_discovered", "sync_completed")
        first = await service.sync()
        assert (first.synced, first.updated) == (100, 0)
        assert first.message == "Discovered 100 new jobs from Replicate"
        everything = await service.sync(all=True)
        # known jobs seen again count as updated only if something changed (running jobs' cost estimates)
        assert everything.synced == 150 and everything.updated <= 10
        assert service.store.sync.count() == 250
        again = await service.sync(limit=None, all=True)
        assert again.synced == 0
        assert route_count(running, LIST) == 1 + 3 + 3
        await bus.drain()
        discovered = [e for e in rec.events if e["type"] == "jobs_discovered"]
        assert [e["count"] for e in discovered] == [100, 150]
        assert len(set(discovered[0]["job_ids"]) | set(discovered[1]["job_ids"])) == 250
        assert [e["synced"] for e in rec.events if e["type"] == "sync_completed"] == [100, 150, 0]


async def test_concurrent_syncs_coalesce_into_one_provider_sync():
    with loopback_sim(SimConfig(seed=3, fleet_size=120, latency=0.05)) as running:
        service, _ = await _service(running)
        results = await asyncio.gather(*(service.sync() for _ in range(5)))
        assert {r.synced for r in results} == {100}
        assert route_count(running, LIST) == 1


async def test_active_refresh_reads_statuses_from_list_pages():
    clock = ManualClock()
    cfg = SimConfig(seed=4, fleet_size=400, active=30, arrival_interval=0, time_scale=60)
    with loopback_sim(cfg, clock=clock) as running:
        service, _ = await _service(running)
        await service.sync(all=True)
        was_active = [j.job_id for j in service.store.sync.active()]
        assert len(was_active) == 30
        running.sim.reset_stats()
        clock.advance(30 * 60)  # half an hour of wall time: every simulated run has finished
        result = await service.refresh_active()
        assert result.checked == 30 and result.get_calls == 0 and result.list_calls == 1
        # Statuses came from one list page; each job that finished had its final log read once.
        assert route_count(running, GET) == 30
        assert service.store.sync.active() == []
        for job in service.store.sync.get_many(was_active).values():  # settled: the final log, no stage
            assert job.stage is None and job.last_log, job
        # terminal jobs are never polled again
        running.sim.reset_stats()
        again = await service.refresh_active()
        assert again.checked == 0 and again.list_calls == 1  # the newest page, for new jobs only
        assert running.sim.stats_snapshot()["total"] == 1 and route_count(running, GET) == 0


async def test_jobs_beyond_recent_pages_and_404s_use_gets_and_stop_being_polled():
    clock = ManualClock()
    with loopback_sim(
        SimConfig(seed=5, fleet_size=300, active=3, arrival_interval=0), clock=clock
    ) as running:
        service, _bus = await _service(running)
        service.clock = clock  # the miss backoff runs on the same clock as the simulator
        await service.sync(all=True)
        old = service.store.sync.list(status="completed", limit=None)[-1]  # deep in history
        # The store wrongly believes an old job still runs, and knows a job the provider never had.
        ghost = Job(job_id="ghostghostghostghostghost1", provider="replicate", status=JobStatus.RUNNING)
        service.store.sync.upsert([old.evolve(status=JobStatus.RUNNING), ghost])
        # (the transition rule keeps `old` completed; force the stale row as a damaged store would)
        with service.store.sync._write() as conn:
            conn.execute("UPDATE jobs SET status = 'running' WHERE job_id = ?", (old.job_id,))
        clock.advance(3600)
        running.sim.reset_stats()
        result = await service.refresh_active()
        assert result.not_found == 1
        assert service.store.sync.get(old.job_id).status is JobStatus.COMPLETED
        missed = service.store.sync.get(ghost.job_id)
        assert missed.metadata["missing"]["count"] == 1 and "poll_stopped" not in missed.metadata
        # Within its backoff the job is not asked for again...
        running.sim.reset_stats()
        await service.refresh_active()
        assert route_count(running, GET) == 0
        # ...and only repeated misses over minutes end its polling, after which it is never asked again.
        for _ in range(MISS_LIMIT * 3):
            clock.advance(301)
            await service.refresh_active()
            if service.store.sync.get(ghost.job_id).metadata.get("poll_stopped"):
                break
        stopped = service.store.sync.get(ghost.job_id)
        assert stopped.status is JobStatus.RUNNING and "404" in stopped.metadata["poll_stopped"]
        assert "missing" not in stopped.metadata
        running.sim.reset_stats()
        clock.advance(3600)
        await service.refresh_active()
        assert route_count(running, GET) == 0  # the lost job is not polled forever


async def test_a_404_then_a_sighting_clears_the_misses_and_the_job_ends_correct():
    with loopback_sim(SimConfig(seed=5, fleet_size=50, active=3, arrival_interval=0)) as running:
        service, _bus = await _service(running)
        clock = [1000.0]
        service.clock = lambda: clock[0]
        await service.sync()
        job = service.store.sync.active()[0]
        vanished = job.evolve(job_id="x" + job.job_id[1:])  # an id the provider doesn't know (yet)
        service.store.sync.upsert([vanished])
        await service.refresh_jobs([vanished.job_id])
        await service.refresh_jobs([vanished.job_id])
        assert service.store.sync.get(vanished.job_id).metadata["missing"]["count"] == 2
        # The provider shows it again (a webhook or list page carrying the job): the misses are forgotten.
        sighting = vanished.evolve(status=JobStatus.COMPLETED, metadata={})
        await service.apply([sighting], source="webhook")
        back = service.store.sync.get(vanished.job_id)
        assert back.status is JobStatus.COMPLETED and "missing" not in back.metadata
        assert back.stage is None and back.progress == 100.0


async def test_stale_poll_after_terminal_update_leaves_job_terminal():
    with loopback_sim(SimConfig(seed=6, fleet_size=20, active=5, arrival_interval=0)) as running:
        service, bus = await _service(running)
        rec = Recorder(bus, "job_status_changed")
        await service.sync()
        job = service.store.sync.active()[0]
        await service.apply([job.evolve(status=JobStatus.COMPLETED, cost_usd=1.0)], source="webhook")
        await service.apply([job.evolve(status=JobStatus.RUNNING, progress=10.0)], source="poll")
        assert service.store.sync.get(job.job_id).status is JobStatus.COMPLETED
        await bus.drain()
        assert [(e["previous"], e["status"]) for e in rec.events] == [(job.status.value, "completed")]


async def test_event_sequence_of_one_jobs_whole_life():
    clock = ManualClock()
    cfg = SimConfig(
        seed=7, fleet_size=5, active=0, arrival_interval=0, time_scale=60, fail_fraction=0, cancel_fraction=0
    )
    with loopback_sim(cfg, clock=clock) as running:
        async with httpx.AsyncClient(base_url=running.base_url) as client:
            created = await client.post(
                "/v1/models/ostris/flux-dev-lora-trainer/versions/" + "a" * 64 + "/trainings",
                headers={"Authorization": "Bearer t"},
                json={"destination": "me/my-lora", "input": {"steps": 1000}},
            )
        job_id = created.json()["id"]
        service, bus = await _service(running)
        rec = Recorder(bus, "job_status_changed", "job_progress", "jobs_discovered")
        await service.sync()
        for _ in range(600):  # bounded: at most 20 wall minutes = 20 simulated hours
            clock.advance(2)
            await service.refresh_active()
            await service.refresh_progress()
            if service.store.sync.get(job_id).is_terminal:
                break
        await bus.drain()
        mine = [e for e in rec.events if e.get("job_id") == job_id or job_id in e.get("job_ids", ())]
        kinds = [e["type"] for e in mine]
        assert kinds[0] == "jobs_discovered"
        statuses = [(e["previous"], e["status"]) for e in mine if e["type"] == "job_status_changed"]
        assert statuses == [("queued", "running"), ("running", "completed")]
        progress = [e["progress"] for e in mine if e["type"] == "job_progress" and e["progress"] is not None]
        assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] == 100.0
        first_run = kinds.index("job_status_changed")
        assert all(k != "job_progress" or i > first_run for i, k in enumerate(kinds))
        final = service.store.sync.get(job_id)
        assert final.cost_usd and final.cost_usd > 0 and final.completed_at is not None


async def test_poller_backs_off_reports_and_recovers(tmp_path: Path):
    with loopback_sim(SimConfig(seed=8, fleet_size=30, active=5, arrival_interval=0)) as running:
        settings = load_settings(store=tmp_path / "p.sqlite3", poll_interval=0.2, env={})
        engine = Engine(JobStore(settings.store), provider_for(running, retries=0), settings)
        errors: list[dict] = []
        engine.bus.on("poll_error", errors.append)
        await engine.start(poll=False)
        await engine.service.sync()
        running.sim.configure(error_rate=1.0)
        engine.poller.start()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if errors:
                break
        assert errors and errors[0]["consecutive"] == 1 and engine.poller.last_error
        running.sim.configure(error_rate=0.0)
        for _ in range(200):  # backoff after one error is 1 s
            await asyncio.sleep(0.05)
            if engine.poller.errors == 0:
                break
        assert engine.poller.errors == 0 and engine.poller.last_error is None and engine.poller.running
        await engine.aclose()


_FOLLOWER = textwrap.dedent(
    """
    import sys, time
    import jobwidget
    from jobwidget.engine.providers.replicate import ReplicateProvider
    jobs = jobwidget.Jobs(provider=ReplicateProvider(token="t", base_url=sys.argv[1]), store=sys.argv[2],
                          poll_interval=0.2)
    print("up", flush=True)
    time.sleep(float(sys.argv[3]))
    jobs.close()
    """
)


def _poll_calls(running, store: Path, processes: int, seconds: float) -> int:
    running.sim.reset_stats()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FOLLOWER, running.base_url, str(store), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "up"
    for p in procs:
        assert p.wait(60) == 0
    return route_count(running, LIST) + route_count(running, GET)


def test_processes_sharing_a_store_poll_no_more_than_one(tmp_path: Path):
    with loopback_sim(
        SimConfig(seed=9, fleet_size=60, active=10, arrival_interval=0, time_scale=1)
    ) as running:
        store = tmp_path / "shared.sqlite3"
        with JobStore(store) as _s:
            pass
        seed = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, jobwidget\n"
                "p = jobwidget.ReplicateProvider(token='t', base_url=sys.argv[1])\n"
                "j = jobwidget.Jobs(provider=p, store=sys.argv[2], autostart=False)\nj.sync()\nj.close()",
                running.base_url,
                str(store),
            ],
            check=True,
            timeout=60,
        )
        assert seed.returncode == 0
        one = _poll_calls(running, store, 1, 3.0)
        three = _poll_calls(running, store, 3, 3.0)
        print(f"provider calls in 3 s: one process {one}, three processes {three}")
        assert one >= 5  # the single poller did poll
        assert three <= one * 1.5 + 2, (one, three)


async def _old_active_refresh_calls(k: int) -> tuple[int, int]:
    """(list calls, GETs) for one poll with `k` active jobs deep in a 3,000-job history."""
    clock = ManualClock()
    cfg = SimConfig(seed=8, fleet_size=3000, active=0, arrival_interval=0)
    with loopback_sim(cfg, clock=clock) as running:
        service, _bus = await _service(running)
        await service.sync(all=True)
        history = service.store.sync.list(limit=None)
        old = [j.job_id for j in history[1500 : 1500 + 40 * k : 40]]  # pages 16 to 30 and beyond
        with service.store.sync._write() as conn:  # the store believes these still run
            conn.executemany("UPDATE jobs SET status = 'running' WHERE job_id = ?", [(i,) for i in old])
        running.sim.reset_stats()
        result = await service.refresh_active()
        assert result.checked == k
        assert all(service.store.sync.get(i).is_terminal for i in old), "every job got its true status"
        return route_count(running, LIST), route_count(running, GET)


@pytest.mark.parametrize("k", [2, 20])
async def test_old_active_jobs_cost_about_one_call_each_not_a_walk(k: int):
    lists, gets = await _old_active_refresh_calls(k)
    # k+1 at most: the newest page (discovery) plus one GET each, whose log settles the finished job.
    assert lists + gets <= k + 1, (lists, gets)
    assert lists < 15, f"walked {lists} pages to reach {k} old jobs"
