"""Run-health flags against the simulated Replicate over 127.0.0.1: each raised on the right job by the
first progress read that shows its condition, cleared when the condition ends (except NaN), and never
raised on healthy runs of any trainer style."""

from __future__ import annotations

import math

import pytest

from jobwidget.core.health import FLAG_NAMES, HealthInput, Thresholds
from jobwidget.core.health import _diverging as diverging_rule
from jobwidget.sim import SimConfig

from .healthsim import LOSS_STYLES, QUIET, STYLE_MODELS, Harness, harness

pytestmark = pytest.mark.anyio

_STALL_S = Thresholds().stall_minutes * 60
_SLOW_S = Thresholds().slow_start_minutes * 60


class Watch:
    """Per job, the read at which each flag's condition first held (seen apart from the engine) and the
    read at which the engine raised it."""

    def __init__(self, h: Harness, ids: list[str]) -> None:
        self.h = h
        self.ids = ids
        self.created = {i: h.clock() for i in ids}
        self.first_seen: dict[str, tuple[int | None, float]] = {}
        self.condition: dict[tuple[str, str], int] = {}
        self.raised: dict[tuple[str, str], int] = {}
        self.cleared: dict[tuple[str, str], int] = {}

    def _conditions(self, job_id: str) -> set[str]:
        h, now = self.h, self.h.clock()
        status = h.sim_status(job_id)
        out: set[str] = set()
        if status == "starting" and now - self.created[job_id] >= _SLOW_S:
            out.add("slow_start")
        if status != "processing":
            return out
        log = h.sim_log(job_id)
        if log.loss_nan:
            out.add("nan_loss")
        seen = self.first_seen.get(job_id)
        if seen is None or seen[0] != log.step:
            self.first_seen[job_id] = seen = (log.step, now)
        done = log.step is not None and log.total_steps is not None and log.step >= log.total_steps
        if log.step is not None and not done and now - seen[1] >= _STALL_S:
            out.add("stalled")
        return out

    async def step(self, seconds: float) -> None:
        # The log as the coming read will see it: the simulator's clock moves before the read.
        self.h.clock.advance(seconds)
        now_conditions = {i: self._conditions(i) for i in self.ids}
        self.h.clock.advance(-seconds)
        await self.h.read(seconds)
        for job_id in self.ids:
            flags = set(self.h.job(job_id).flags)
            for name in now_conditions[job_id] - {"diverging"}:
                self.condition.setdefault((job_id, name), self.h.reads)
            # diverging is judged on the history this read extended: look at it after the read
            history = self.h.store.history(job_id)
            if history and diverging_rule(
                HealthInput("running", self.h.clock(), None, history, True, Thresholds())
            ):
                self.condition.setdefault((job_id, "diverging"), self.h.reads)
            for name in flags:
                self.raised.setdefault((job_id, name), self.h.reads)
            for name in FLAG_NAMES:
                if (job_id, name) in self.raised and name not in flags:
                    self.cleared.setdefault((job_id, name), self.h.reads)


async def _run(h: Harness, watch: Watch, reads: int, seconds: float = 20.0) -> None:
    for _ in range(reads):
        await watch.step(seconds)
        if all(h.sim_status(i) in ("succeeded", "failed", "canceled") for i in watch.ids):
            return


async def test_each_flag_is_raised_on_its_job_by_the_first_read_that_shows_it():
    async with harness() as h:
        faulty: dict[str, str] = {}  # job id -> the flag its fault should raise
        for style in LOSS_STYLES:
            faulty[h.add(STYLE_MODELS[style], steps=600, fault={"kind": "nan_loss", "at_step": 250})] = (
                "nan_loss"
            )
            faulty[h.add(STYLE_MODELS[style], steps=1500, fault={"kind": "diverging", "at_step": 150})] = (
                "diverging"
            )
        for style in ("cog-sdxl", "hf-trainer"):
            faulty[
                h.add(
                    STYLE_MODELS[style], steps=600, fault={"kind": "stall", "at_step": 300, "seconds": 1800}
                )
            ] = "stalled"
        faulty[h.add(STYLE_MODELS["kohya"], steps=400, fault={"kind": "cold_boot", "seconds": 1500})] = (
            "slow_start"
        )
        healthy = [h.add(model, steps=600, queue=10) for model in STYLE_MODELS.values()]
        watch = Watch(h, [*faulty, *healthy])
        await _run(h, watch, reads=250)

        for job_id, flag in faulty.items():
            assert (job_id, flag) in watch.condition, (
                f"{flag} never appeared on {job_id}: the fault did not show"
            )
            assert watch.raised.get((job_id, flag)) == watch.condition[(job_id, flag)], (
                f"{flag} on {job_id}: condition at read {watch.condition[(job_id, flag)]}, "
                f"raised at read {watch.raised.get((job_id, flag))}"
            )
            others = {name for (jid, name) in watch.raised if jid == job_id} - {flag}
            assert not others, f"{job_id} ({flag} fault) was also flagged {others}"
        for job_id in healthy:
            assert not {name for (jid, name) in watch.raised if jid == job_id}, (
                f"healthy {job_id} was flagged"
            )

        # Each raise was announced once, with its reason; the reasons say what happened.
        flagged = {(e["job_id"], e["flag"]) for e in h.of("job_flagged")}
        assert flagged == set(watch.raised)
        for e in h.of("job_flagged"):
            assert e["reason"] and e["raised_at"] > 0 and e["flag"] in e["flags"]
        nan_reasons = [e["reason"] for e in h.of("job_flagged") if e["flag"] == "nan_loss"]
        assert all(r.startswith("loss NaN at step ") for r in nan_reasons), nan_reasons

        # Flags clear with their condition: a stall once steps move again, a slow start once running;
        # a NaN never clears.
        for job_id, flag in faulty.items():
            if flag in ("stalled", "slow_start"):
                assert (job_id, flag) in watch.cleared, f"{flag} never cleared on {job_id}"
                assert flag not in h.job(job_id).flags
            if flag == "nan_loss":
                assert (job_id, flag) not in watch.cleared
                assert "nan_loss" in h.job(job_id).flags  # still there on the finished job

        # A NaN is kept in the history, marked, not dropped.
        nan_job = next(i for i, f in faulty.items() if f == "nan_loss")
        history = h.store.history(nan_job)
        assert any(s.nan for s in history) and any(s.loss is not None and not s.nan for s in history)
        assert all(s.step is None or s.step >= 250 for s in history if s.nan)


async def test_no_flag_on_a_long_healthy_fleet_of_every_trainer_style():
    """Four hours of a healthy fleet (arrivals, every trainer style, validation pauses, saves, slow but
    normal cold boots), read every minute: no flag, ever."""
    config = SimConfig(
        seed=23,
        fleet_size=40,
        active=12,
        arrival_interval=420,
        time_scale=1.0,
        fail_fraction=0.0,
        cancel_fraction=0.0,
    )
    async with harness(config) as h:
        await h.engine.sync(all=True)
        styles_read: dict[str, int] = {}
        for _ in range(240):
            await h.read(60.0)
        for job in h.store.list(limit=None):
            assert not job.flags, f"healthy {job.job_id} ({job.model}) flagged {job.flags}"
            samples = h.store.history(job.job_id)
            if len(samples) >= 5 and job.model:
                styles_read[job.model] = styles_read.get(job.model, 0) + 1
        assert h.of("job_flagged") == []
        assert set(styles_read) == set(STYLE_MODELS.values()), f"styles read: {styles_read}"
        assert sum(styles_read.values()) >= 30, styles_read


async def test_projection_appears_with_evidence_and_is_close_for_a_steady_run():
    async with harness(QUIET) as h:
        job_id = h.add(STYLE_MODELS["simpletuner"], steps=2000, queue=5)
        seen: list[tuple[float, float | None, float | None]] = []
        for _ in range(200):
            await h.read(30.0)
            job = h.job(job_id)
            if job.is_terminal:
                break
            finish = job.projected_finish_at
            seen.append((job.progress or 0.0, finish.timestamp() if finish else None, job.projected_cost_usd))
        job = h.job(job_id)
        assert job.status.value == "completed" and job.completed_at and job.started_at and job.cost_usd
        assert seen[0][1] is None  # no projection before there is evidence
        quarter = next((p for p in seen if p[0] >= 25.0 and p[1] is not None), None)
        assert quarter is not None, "no projection by 25 % progress"
        duration = (job.completed_at - job.started_at).total_seconds()
        finish_error = abs(quarter[1] - job.completed_at.timestamp()) / duration
        cost_error = abs(quarter[2] - job.cost_usd) / job.cost_usd
        assert finish_error < 0.10 and cost_error < 0.10, (finish_error, cost_error)
        assert job.projected_finish_at is None and job.projected_cost_usd is None  # finished: no projection
        d = job.to_dict()
        assert {"projected_finish_at", "projected_cost_usd", "flags"} <= set(d)
        progress = [e for e in h.of("job_progress") if e["job_id"] == job_id and e["projected_finish_at"]]
        assert progress and all(isinstance(e["projected_cost_usd"], float) for e in progress)
        assert not math.isnan(quarter[2])
