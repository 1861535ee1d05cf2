"""Projections that learn from earlier runs, against the simulated Replicate over 127.0.0.1: a run that
completes leaves its tail after the last step and its validation pauses on the job, and the next run
of the same trainer projects its finish with them; a run of another trainer, or after a run that
failed, learns nothing. Which earlier runs count is checked on a real store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from jobwidget.core.models import HEALTH, SETTLED, Job, JobStatus
from jobwidget.core.projection import Prior, RunProfile, project
from jobwidget.engine.run_profiles import RunProfiles, pace_of
from jobwidget.engine.stores import JobStore, SQLiteStore

from .healthsim import STYLE_MODELS, Harness, harness

pytestmark = pytest.mark.anyio

T0 = 1_790_000_000.0
SDXL = STYLE_MODELS["cog-sdxl"]  # its log has no validation pass: the tail is the only thing learned
DIFFUSERS = STYLE_MODELS["diffusers"]  # validates every 250 or 500 steps, saves every 500


async def _read_until(h: Harness, what: str, done: Callable[[], Job | None], seconds: float) -> Job:
    for _ in range(1_000):
        await h.read(seconds)
        job = done()
        if job is not None:
            return job
    raise AssertionError(f"after 1000 reads of {seconds:g} s, still waiting for {what}")


def _settled(h: Harness, job_id: str) -> Callable[[], Job | None]:
    def check() -> Job | None:
        job = h.store.get(job_id)
        return job if job is not None and job.is_terminal and job.metadata.get(SETTLED) else None

    return check


def _projected(h: Harness, job_id: str, at_progress: float = 0.0) -> Callable[[], Job | None]:
    def check() -> Job | None:
        job = h.store.get(job_id)
        if job is None or job.projected_finish_at is None or (job.progress or 0) < at_progress:
            return None
        return job

    return check


def _alone(h: Harness, job: Job, prior: Prior | None = None) -> float:
    """The projection from the job's own history and pauses (and `prior`), recomputed from the store."""
    assert job.started_at is not None
    p = project(
        h.store.history(job.job_id), started_at=job.started_at.timestamp(), pace=pace_of(job), prior=prior
    )
    assert p is not None, f"no projection from {job.job_id}'s history"
    return p.finish_at


def _learned(job: Job) -> RunProfile:
    profile = RunProfile.from_json(job.metadata[HEALTH].get("learned"))
    assert profile is not None, f"{job.job_id} completed without a learned profile: {job.metadata[HEALTH]}"
    return profile


async def test_a_second_run_of_a_trainer_projects_its_finish_with_the_tail_of_the_first():
    async with harness() as h:
        first = h.add(SDXL, steps=300, queue=5)
        job = await _read_until(h, "a projection of the first run", _projected(h, first, 25.0), 10.0)
        assert job.projected_finish_at.timestamp() == pytest.approx(
            _alone(h, job), abs=0.01
        )  # nothing learned yet
        done = await _read_until(h, "the first run to end", _settled(h, first), 10.0)
        assert done.status is JobStatus.COMPLETED
        tail = _learned(done).tail_s
        real_tail = h.running.sim.fleet.training(first).plan.final_s
        assert tail == pytest.approx(real_tail, abs=10.0)  # within the time between two reads

        second = h.add(SDXL, steps=300, queue=5)
        other = h.add(STYLE_MODELS["hf-trainer"], steps=900, queue=5)  # another trainer: nothing to learn
        job = await _read_until(h, "a projection of the second run", _projected(h, second, 25.0), 10.0)
        assert tail is not None and tail > 0
        assert job.projected_finish_at.timestamp() == pytest.approx(_alone(h, job) + tail, abs=0.05)
        theirs = await _read_until(h, "a projection of the other trainer's run", _projected(h, other), 10.0)
        assert theirs.projected_finish_at.timestamp() == pytest.approx(_alone(h, theirs), abs=0.05)


async def test_validation_passes_are_timed_and_the_next_run_expects_them_before_its_first():
    async with harness() as h:
        first = h.add(DIFFUSERS, steps=1000, queue=5)
        done = await _read_until(h, "the first run to end", _settled(h, first), 5.0)
        plan = h.running.sim.fleet.training(first).plan
        pauses: dict[int, float] = {}  # the simulated run's pauses: step -> seconds
        for every, seconds in ((plan.sample_every, plan.sample_s), (plan.save_every, plan.save_s)):
            for step in range(every, plan.steps, every) if every else ():
                pauses[step] = pauses.get(step, 0.0) + seconds
        pace = pace_of(done)
        assert pace is not None and pace.pauses == len(pauses) > 0
        # Each pause is timed to within the time between two reads, at either end.
        assert abs(pace.paused_s - sum(pauses.values())) <= 2 * 5.0 * len(pauses)
        profile = _learned(done)
        assert profile.pause_every == pytest.approx(max(pauses) / len(pauses))

        second = h.add(DIFFUSERS, steps=1000, queue=5)
        job = await _read_until(h, "a projection of the second run", _projected(h, second), 5.0)
        assert job.progress is not None and job.progress * 10 < min(pauses)  # before its first pause
        prior = Prior.of([profile])
        assert job.projected_finish_at.timestamp() == pytest.approx(_alone(h, job, prior), abs=0.05)
        without = _alone(h, job)
        expected_pauses = job.projected_finish_at.timestamp() - without - (profile.tail_s or 0.0)
        assert expected_pauses > 0.5 * sum(pauses.values()) * (1 - job.progress / 100)


async def test_a_run_that_failed_teaches_nothing():
    async with harness() as h:
        failed = h.add(SDXL, steps=300, queue=5, outcome="failed")
        done = await _read_until(h, "the failed run to end", _settled(h, failed), 10.0)
        assert done.status is JobStatus.FAILED and "learned" not in done.metadata.get(HEALTH, {})
        second = h.add(SDXL, steps=300, queue=5)
        job = await _read_until(h, "a projection of the next run", _projected(h, second, 25.0), 10.0)
        assert job.projected_finish_at.timestamp() == pytest.approx(_alone(h, job), abs=0.05)


# -- which earlier runs count --------------------------------------------------------------------


def _done(job_id: str, status: JobStatus, version: str, tail: float, ended: float, model: str = "a/t") -> Job:
    return Job(
        job_id=job_id,
        provider="replicate",
        status=status,
        model=model,
        version=version,
        created_at=datetime.fromtimestamp(ended - 600, UTC),
        started_at=datetime.fromtimestamp(ended - 500, UTC),
        completed_at=datetime.fromtimestamp(ended, UTC),
        metadata={HEALTH: {"learned": RunProfile(tail, 0.0, None).to_json()}},
    )


async def test_a_prior_is_made_of_the_newest_completed_runs_of_the_same_model_and_version():
    now = T0 + 10_000
    store = SQLiteStore(JobStore(":memory:"))
    try:
        await store.upsert(
            [
                *(_done(f"v1-{i}", JobStatus.COMPLETED, "v1", 10.0 + i, T0 + i * 100) for i in range(8)),
                _done("v2-a", JobStatus.COMPLETED, "v2", 50.0, T0 + 50),
                _done("v2-b", JobStatus.COMPLETED, "v2", 70.0, T0 + 60),
                _done("v2-failed", JobStatus.FAILED, "v2", 999.0, T0 + 70),
                _done("v2-cancelled", JobStatus.CANCELLED, "v2", 999.0, T0 + 80),
                _done("v2-later", JobStatus.COMPLETED, "v2", 500.0, now + 60),  # ends after now
                _done("other", JobStatus.COMPLETED, "v2", 77.0, T0 + 90, model="b/u"),
            ]
        )
        profiles = RunProfiles(store, clock=lambda: now)
        running = Job(job_id="r", provider="replicate", status=JobStatus.RUNNING, model="a/t", version="v2")
        prior = await profiles.prior(running)
        assert prior.runs == 2 and prior.tail_s == 60.0  # v2-a and v2-b only
        newest_v1 = await profiles.prior(running.evolve(version="v9"))  # no run of v9: any version
        assert newest_v1.runs == 5 and newest_v1.tail_s == 15.0  # v1-3 ... v1-7 (v2-later not yet)
        assert await profiles.prior(running.evolve(model=None)) == Prior()
        # A run this monitor sees complete counts at once, without reading the store again.
        fresh = _done("v2-c", JobStatus.COMPLETED, "v2", 100.0, now - 1)
        profiles.completed(fresh, RunProfile(100.0, 0.0, None))
        assert (await profiles.prior(running)).tail_s == 70.0
        # ...and when it completes before the store was read for its model, both count.
        other = RunProfiles(store, clock=lambda: now)
        other.completed(fresh, RunProfile(100.0, 0.0, None))
        both = await other.prior(running)
        assert both.runs == 3 and both.tail_s == 70.0
    finally:
        await store.aclose()
