"""The live view tells the truth (over loopback to the simulator): new jobs appear by themselves,
finished jobs read finished everywhere, and `wait` learns of an ending from the provider, not the poll.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pandas as pd

from jobwidget import Jobs
from jobwidget.core.models import JobStatus
from jobwidget.sim import SimConfig
from jobwidget.surfaces.widget import job_to_card

from .deadlines import DEADLINE, wait_for
from .simhelpers import GET, LIST, ManualClock, loopback_sim, provider_for, route_count

CREATE = "/v1/models/ostris/flux-dev-lora-trainer/versions/" + "b" * 64 + "/trainings"


def _create_elsewhere(base_url: str) -> str:
    """Start a training the way another tool would: straight at the provider, not through jobwidget."""
    r = httpx.post(
        base_url + CREATE,
        json={"destination": "me/elsewhere", "input": {"steps": 1000}},
        headers={"Authorization": "Bearer r8_someone_else"},
        timeout=DEADLINE,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_training_started_elsewhere_appears_without_sync(tmp_path: Path) -> None:
    cfg = SimConfig(seed=21, fleet_size=30, active=2, arrival_interval=0)
    with loopback_sim(cfg) as running:
        jobs = Jobs(provider=provider_for(running), store=tmp_path / "jobs.sqlite3", poll_interval=0.5)
        try:
            events: list[dict] = []
            jobs.on("jobs_discovered", events.append)
            jobs.on("sync_completed", events.append)
            panel = jobs.panel
            wait_for(lambda: jobs.store.count() == 30, "the first poll to discover the fleet's newest page")
            new_id = _create_elsewhere(running.base_url)
            wait_for(lambda: jobs.store.get(new_id), f"the poller to discover {new_id}")
            wait_for(lambda: new_id in panel._cards, f"{new_id} to reach the panel")
            wait_for(
                lambda: any(new_id in e.get("job_ids", ()) for e in events),
                "a jobs_discovered event naming it",
            )
            assert not [e for e in events if e["type"] == "sync_completed"], "nobody called sync()"
        finally:
            jobs.close()


def test_a_finished_job_reads_finished_on_card_dataframe_and_event(tmp_path: Path) -> None:
    clock = ManualClock()
    cfg = SimConfig(seed=22, fleet_size=20, active=4, arrival_interval=0, fail_fraction=0, cancel_fraction=0)
    with loopback_sim(cfg, clock=clock) as running:
        jobs = Jobs(provider=provider_for(running), store=tmp_path / "jobs.sqlite3", autostart=False)
        try:
            jobs.sync()
            running_ids = [j.job_id for j in jobs.list(status="running", limit=None)]
            assert running_ids, "the fleet has running jobs"
            for job_id in running_ids:
                jobs.inline_progress(job_id)  # a progress read while it runs: a stage and a log line
            assert any(jobs.get(i).stage for i in running_ids)
            changed: list[dict] = []
            jobs.on("job_status_changed", changed.append)
            panel = jobs.panel
            clock.advance(6 * 3600)  # every simulated run has finished
            jobs.list(sync_active=True)
            done = [jobs.get(i) for i in running_ids]
            assert all(j.status is JobStatus.COMPLETED for j in done), done
            wait_for(lambda: len(changed) >= len(done), "a job_status_changed event per finished job")
            frame = jobs.to_dataframe().set_index("job_id")
            for job in done:
                # The final log was read once: the last line is the log's real last line, not a stale bar.
                assert job.last_log and job.metadata.get("settled"), job
                assert job.stage is None and job.progress == 100.0
                assert "eta_seconds" not in job.metadata.get("inline", {})
                event = next(e for e in changed if e["job_id"] == job.job_id)
                assert (event["status"], event["stage"], event["last_log"]) == (
                    "completed",
                    None,
                    job.last_log,
                )
                row = frame.loc[job.job_id]
                assert row["last_log"] == job.last_log and pd.isna(row["stage"]) and row["progress"] == 100.0
                card = wait_for(
                    lambda j=job: (
                        panel._cards.get(j.job_id, {}).get("status") == "completed" and panel._cards[j.job_id]
                    ),
                    f"{job.job_id}'s card to read completed",
                )
                assert card["log"] == job_to_card(job)["log"]
                assert "stage" not in card and "eta" not in card and card["pct"] == 100.0
        finally:
            jobs.close()


def test_wait_returns_from_its_own_reads_not_the_next_poll(tmp_path: Path) -> None:
    clock = ManualClock()
    cfg = SimConfig(seed=23, fleet_size=20, active=3, arrival_interval=0, fail_fraction=0, cancel_fraction=0)
    with loopback_sim(cfg, clock=clock) as running:
        # An hour between polls: if `wait` relied on the poller it would wait for an hour.
        jobs = Jobs(provider=provider_for(running), store=tmp_path / "jobs.sqlite3", poll_interval=3600)
        try:
            wait_for(lambda: jobs.store.count() > 0, "the first poll")
            target = jobs.list(status="running", limit=None)[0].job_id
            lists_before, gets_before = route_count(running, LIST), route_count(running, GET)
            finisher = threading.Timer(0.5, clock.advance, args=(6 * 3600,))
            finisher.start()
            (done,) = jobs.wait([target], timeout=DEADLINE)
            finisher.join()
            assert done.status is JobStatus.COMPLETED
            assert route_count(running, GET) > gets_before, "wait read the job itself"
            assert route_count(running, LIST) == lists_before, "no background poll ran meanwhile"
        finally:
            jobs.close()


def test_starting_then_aborted_ends_cancelled_and_wait_returns(tmp_path: Path) -> None:
    clock = ManualClock()
    with loopback_sim(
        SimConfig(seed=24, fleet_size=10, active=0, arrival_interval=0), clock=clock
    ) as running:
        job_id = running.sim.add_training(outcome="aborted", queue=120)
        jobs = Jobs(provider=provider_for(running), store=tmp_path / "jobs.sqlite3", autostart=False)
        try:
            jobs.sync()
            assert jobs.get(job_id).status is JobStatus.QUEUED
            finisher = threading.Timer(0.5, clock.advance, args=(3600,))
            finisher.start()
            (done,) = jobs.wait([job_id], timeout=DEADLINE)
            finisher.join()
            assert done.status is JobStatus.CANCELLED and done.is_terminal
            assert done.provider_status == "aborted"
            assert done.error_message and "aborted" in done.error_message
            assert jobs.list(status="queued", limit=None) == [], "an aborted job is not polled as queued"
        finally:
            jobs.close()


def test_a_job_that_404s_twice_and_comes_back_is_polled_again_and_ends_correct(tmp_path: Path) -> None:
    clock = ManualClock()
    cfg = SimConfig(seed=25, fleet_size=10, active=0, arrival_interval=0, fail_fraction=0, cancel_fraction=0)
    with loopback_sim(cfg, clock=clock) as running:
        job_id = running.sim.add_training(outcome="succeeded", queue=10, steps=3000)
        clock.advance(1)  # 60 nominal seconds at the default time scale: it is running now
        jobs = Jobs(provider=provider_for(running), store=tmp_path / "jobs.sqlite3", autostart=False)
        try:
            jobs.sync()
            assert jobs.get(job_id).status is JobStatus.RUNNING
            running.sim.vanish(job_id, times=2)
            for n in (1, 2):
                jobs.inline_progress(job_id)  # answered from the store: the provider says 404
                assert jobs.get(job_id).metadata["missing"]["count"] == n
                assert "poll_stopped" not in jobs.get(job_id).metadata, "two 404s must not end polling"
            clock.advance(6 * 3600)  # back at the provider, and finished meanwhile
            jobs.list(sync_active=True)
            back = jobs.get(job_id)
            assert back.status is JobStatus.COMPLETED, back
            assert "missing" not in back.metadata and "poll_stopped" not in back.metadata
            assert back.stage is None and back.progress == 100.0 and back.last_log
        finally:
            jobs.close()
