"""What a trainer's earlier runs taught: the `Prior` a running job's projection starts from.

A run that completed leaves a `RunProfile` in its health metadata (`health.learned`: its tail after the
last step, its pauses), written by the health monitor when it sees the run complete. A running job's
prior is made of the `PRIOR_RUNS` newest completed runs of the same trainer: the same model and version,
or any version of the model when none of that version completed. Only completed runs count (a failed
or cancelled run ended early, so its tail says nothing), and only runs that ended before now.

Profiles are read from the store once per model and kept for `RELOAD_S` (runs completed by other
processes sharing the store show up then); a completion this monitor sees is added at once. A completed
run from before this existed has no profile: its tail is learned from its stored history when read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from jobwidget.core.keys import HEALTH, HEALTH_LEARNED, HEALTH_PACE
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.projection import Pace, Prior, RunProfile, learn
from jobwidget.engine.stores import Store

__all__ = ["PRIOR_RUNS", "RELOAD_S", "RunProfiles"]

PRIOR_RUNS = 5  # newest completed runs a prior is made of
RELOAD_S = 300.0  # how long a model's profiles read from the store are trusted
_SCAN = 50  # completed runs of a model read at most, newest first


@dataclass(slots=True)
class _Run:
    ended: float  # epoch seconds
    version: str | None
    profile: RunProfile | None  # None: a run from before profiles, learned from its history when chosen
    pace: Pace | None = None


@dataclass(slots=True)
class _Model:
    loaded_at: float
    runs: dict[str, _Run] = field(default_factory=dict)


def profile_of(job: Job) -> RunProfile | None:
    """The profile stored on a completed job, if any."""
    health = job.metadata.get(HEALTH)
    return RunProfile.from_json(health.get(HEALTH_LEARNED)) if isinstance(health, Mapping) else None


def pace_of(job: Job) -> Pace | None:
    """The pauses recorded on a job (None: never watched while running)."""
    health = job.metadata.get(HEALTH)
    raw = health.get(HEALTH_PACE) if isinstance(health, Mapping) else None
    return Pace.from_json(raw) if raw is not None else None


class RunProfiles:
    """Earlier runs' profiles per trainer model, read from `store` and kept up to date."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._models: dict[str, _Model] = {}

    def completed(self, job: Job, profile: RunProfile) -> None:
        """Record a run the monitor just saw complete (before the store has it as completed)."""
        if job.model is None or job.completed_at is None:
            return
        known = self._models.setdefault(job.model, _Model(loaded_at=-math.inf))  # read the rest when needed
        known.runs[job.job_id] = _Run(job.completed_at.timestamp(), job.version, profile)

    async def prior(self, job: Job) -> Prior:
        """What `job`'s trainer's newest completed runs say (an empty `Prior` when there are none)."""
        if job.model is None:
            return Prior()
        now = self.clock()
        known = self._models.get(job.model)
        if known is None or now - known.loaded_at > RELOAD_S:
            loaded = await self._load(job.model, now)
            for jid, run in known.runs.items() if known is not None else ():
                loaded.runs.setdefault(jid, run)  # seen complete here, maybe not yet in what was read
            self._models[job.model] = known = loaded
        runs = {jid: r for jid, r in known.runs.items() if jid != job.job_id and r.ended <= now}
        same = {jid: r for jid, r in runs.items() if r.version == job.version}
        chosen = sorted((same or runs).items(), key=lambda item: item[1].ended)[-PRIOR_RUNS:]
        profiles: list[RunProfile] = []
        for jid, run in chosen:
            if run.profile is None:
                run.profile = learn(await self.store.history(jid), run.pace, run.ended)
            profiles.append(run.profile)
        return Prior.of(profiles)

    async def _load(self, model: str, now: float) -> _Model:
        jobs = await self.store.list(status=JobStatus.COMPLETED, model=model, limit=_SCAN)
        out = _Model(loaded_at=now)
        for job in jobs:
            if job.completed_at is not None:
                out.runs[job.job_id] = _Run(
                    job.completed_at.timestamp(), job.version, profile_of(job), pace_of(job)
                )
        return out
