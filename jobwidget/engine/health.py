"""The health monitor: turns each update the sync writes into history samples, flags and projections.

It runs inside the sync's write path (`SyncService.apply`, on a worker thread, before the upsert), so
every source of updates (poll, progress read, webhook, final read) is seen once and in order:

- an update that carries a progress read (the `inline` figures a parsed log tail gives) appends a sample
  to the job's history in the store;
- the flag rules (`core.health.FLAG_RULES`) run on the job's history and status, and the projection is
  recomputed; both land in the job's `health` metadata, written by the same upsert;
- jobs still waiting to start are judged on every poll (slow starts), running ones on their reads;
- each read of a running job also notes whether its log is in a validation or save pause (`Pace`, kept
  in `health.pace`), and the projection starts from what the trainer's earlier completed runs taught
  (`run_profiles.RunProfiles`); a run that completes leaves its own profile (`health.learned`: its tail
  after the last step, its pauses) for the next ones. See `core.projection`.

What a flag needs that no update carries (minutes passing with no new step) is judged at the next read,
so a flag is raised by the first read that shows its condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobwidget.core.health import (
    HealthInput,
    Sample,
    Thresholds,
    evaluate,
    sparkline,
)
from jobwidget.core.keys import (
    HEALTH,
    HEALTH_COST,
    HEALTH_FINISH_AT,
    HEALTH_FLAGS,
    HEALTH_LEARNED,
    HEALTH_PACE,
    HEALTH_SPARK,
    INLINE,
    INLINE_LOSS,
    INLINE_LOSS_NAN,
    INLINE_RATE,
    INLINE_STEP,
    INLINE_TOTAL_STEPS,
    SETTLED,
)
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.projection import Pace, Prior, RunProfile, learn, note_read, project
from jobwidget.core.rules import merge_job
from jobwidget.engine.run_profiles import RunProfiles, pace_of
from jobwidget.engine.stores import Store

__all__ = ["FlagRaised", "HealthMonitor"]

_WAITING = frozenset({JobStatus.PENDING, JobStatus.UPLOADING, JobStatus.QUEUED})


@dataclass(frozen=True, slots=True)
class FlagRaised:
    """A flag an update raised, for the `job_flagged` event."""

    job_id: str
    flag: str
    reason: str
    raised_at: float
    flags: tuple[str, ...]  # every flag the job has now

    def to_event(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "flag": self.flag,
            "reason": self.reason,
            "raised_at": self.raised_at,
            "flags": list(self.flags),
        }


def _epoch(job: Job, name: str) -> float | None:
    value = getattr(job, name)
    return None if value is None else value.timestamp()


def _sample(job: Job, now: float) -> Sample | None:
    """The progress read this update carries, if it carries one."""
    inline = job.metadata.get(INLINE)
    if not isinstance(inline, Mapping):
        return None
    if job.is_terminal and not job.metadata.get(SETTLED):
        return None  # a list page's copy of a finished job: its figures are the stored ones
    step, total, loss, rate = (
        inline.get(k) for k in (INLINE_STEP, INLINE_TOTAL_STEPS, INLINE_LOSS, INLINE_RATE)
    )
    if inline.get(INLINE_LOSS_NAN):
        loss = float("nan")
    numbers = (step, total, loss, rate)
    if all(v is None for v in numbers[:3]):
        return None  # nothing a history or a rule can use (a log still loading weights)
    return Sample(
        t=now,
        step=int(step) if isinstance(step, int | float) else None,
        total=int(total) if isinstance(total, int | float) else None,
        loss=float(loss) if isinstance(loss, int | float) else None,
        rate=float(rate) if isinstance(rate, int | float) else None,
    )


class HealthMonitor:
    """Samples, flags and projections for the updates of one store (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        thresholds: Thresholds | None = None,
        price_per_s: Callable[[Job], float | None] = lambda job: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.thresholds = thresholds or Thresholds()
        self.price_per_s = price_per_s
        self.clock = clock
        self.profiles = RunProfiles(store, clock=lambda: self.clock())

    async def prepare(self, batch: Iterable[Job]) -> tuple[list[Job], list[FlagRaised]]:
        """The batch with each judged job's health metadata set (the store work leaves the loop)."""
        jobs = list(batch)
        now = self.clock()
        stored = await self.store.get_many([j.job_id for j in jobs])
        samples: dict[str, Sample] = {}
        for job in jobs:
            sample = _sample(job, now)
            if sample is not None:
                samples[job.job_id] = sample
        histories = await self.store.add_samples(samples)
        out: list[Job] = []
        raised: list[FlagRaised] = []
        for job in jobs:
            before = stored.get(job.job_id)
            after = merge_job(before, job)  # what the store will hold: its status decides the rules
            fresh = job.job_id in samples
            if not (
                fresh or after.status in _WAITING or (before is not None and before.status != after.status)
            ):
                out.append(job)
                continue
            history = histories.get(job.job_id)
            if history is None:
                needed = after.status in (JobStatus.RUNNING, JobStatus.COMPLETED)
                history = await self.store.history(job.job_id) if needed else []
            prior = await self.profiles.prior(after) if after.status is JobStatus.RUNNING else None
            health, new = self._judge(after, history, fresh, now, prior)
            if after.status is JobStatus.COMPLETED and HEALTH_LEARNED in health:
                self.profiles.completed(after, learned_profile(health))
            out.append(job.evolve(metadata={**job.metadata, HEALTH: health}))
            flags = health[HEALTH_FLAGS]
            raised += [FlagRaised(job.job_id, name, flags[name]["reason"], now, tuple(flags)) for name in new]
        return out, raised

    def _judge(
        self, job: Job, history: list[Sample], fresh: bool, now: float, prior: Prior | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        previous = job.metadata.get(HEALTH)
        previous = previous if isinstance(previous, Mapping) else {}
        prev_flags = previous.get(HEALTH_FLAGS)
        h = HealthInput(
            status=job.status.value,
            now=now,
            created_at=_epoch(job, "created_at"),
            history=history,
            fresh=fresh,
            thresholds=self.thresholds,
        )
        flags, raised = evaluate(h, prev_flags if isinstance(prev_flags, Mapping) else {})
        health: dict[str, Any] = {HEALTH_FLAGS: flags}
        pace = pace_of(job)
        if fresh and history and job.status is JobStatus.RUNNING:
            last = history[-1]
            pace = note_read(pace or Pace(), last.t, last.step, last.total, job.stage)
        if pace is not None:
            health[HEALTH_PACE] = pace.to_json()
        completed_at = _epoch(job, "completed_at")
        if job.status is JobStatus.COMPLETED and completed_at is not None:
            health[HEALTH_LEARNED] = learn(history, pace, completed_at).to_json()
        if job.status is JobStatus.RUNNING and "stalled" not in flags:
            cost = job.cost_usd
            updated = _epoch(job, "updated_at")
            projection = project(
                history,
                started_at=_epoch(job, "started_at"),
                price_per_s=self.price_per_s(job),
                cost_so_far=(cost, updated) if cost is not None and updated is not None else None,
                pace=pace,
                prior=prior,
            )
            if projection is not None:
                health[HEALTH_FINISH_AT] = round(projection.finish_at, 3)
                health[HEALTH_COST] = projection.cost_usd
        spark = sparkline(history) if history else previous.get(HEALTH_SPARK)
        if spark:
            health[HEALTH_SPARK] = spark
        return health, raised


def learned_profile(health: Mapping[str, Any]) -> RunProfile:
    """The profile `_judge` just wrote (always well formed: it wrote it)."""
    return RunProfile.from_json(health.get(HEALTH_LEARNED)) or RunProfile()
