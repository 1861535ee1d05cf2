"""An engine over the simulated Replicate on 127.0.0.1, driven one progress read at a time on a manual
clock: what the run-health tests use to see flags, projections and guards at each read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobwidget.core.logparse import parse_logs
from jobwidget.core.models import Job
from jobwidget.core.results import InlineProgress
from jobwidget.engine.config import load_settings
from jobwidget.engine.runtime import Engine
from jobwidget.engine.stores import JobStore
from jobwidget.sim import RunningSim, SimConfig

from .simhelpers import ManualClock, loopback_sim, provider_for

# One trainer per log style the simulator writes (jobwidget/sim/catalog.py).
STYLE_MODELS = {
    "ai-toolkit": "ostris/flux-dev-lora-trainer",
    "diffusers": "replicate/fast-flux-trainer",
    "cog-sdxl": "stability-ai/sdxl",
    "simpletuner": "bghira/simpletuner",
    "kohya": "kohya/sd-scripts",
    "hf-trainer": "huggingface/trainer",
}
LOSS_STYLES = tuple(s for s in STYLE_MODELS if s != "cog-sdxl")  # cog-sdxl's log prints no loss
QUIET = SimConfig(
    seed=11,
    fleet_size=0,
    active=0,
    arrival_interval=0,
    time_scale=1.0,
    fail_fraction=0.0,
    cancel_fraction=0.0,
)


@dataclass
class Harness:
    """The engine, the simulator, the clock, and every event the engine sent."""

    engine: Engine
    running: RunningSim
    clock: ManualClock
    events: list[dict[str, Any]] = field(default_factory=list)
    reads: int = 0

    @property
    def store(self) -> JobStore:
        """The SQLite store itself, for plain reads from the test."""
        return self.engine.store.sync  # type: ignore[attr-defined]

    def add(self, model: str, **kw: Any) -> str:
        return self.running.sim.add_training(model, **kw)

    async def read(self, seconds: float = 60.0) -> None:
        """Let `seconds` pass, then one poll round: statuses from the list, then every running log."""
        self.clock.advance(seconds)
        await self.engine.service.refresh_active()
        await self.engine.service.refresh_progress()
        await self.engine.drain_guards()
        await self.engine.bus.drain()
        self.reads += 1

    def job(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        assert job is not None, f"{job_id} is not in the store"
        return job

    def sim_status(self, job_id: str) -> str:
        data = self.running.sim.fleet.get(job_id, self.running.base_url)
        assert data is not None
        return str(data["status"])

    def sim_log(self, job_id: str) -> InlineProgress:
        """What the job's log says right now, parsed apart from the engine."""
        data = self.running.sim.fleet.get(job_id, self.running.base_url)
        assert data is not None
        return parse_logs(data.get("logs"), job_id=job_id)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


@asynccontextmanager
async def harness(config: SimConfig = QUIET, **settings: Any) -> AsyncIterator[Harness]:
    clock = ManualClock()
    with loopback_sim(config, clock=clock) as running:
        provider = provider_for(running, now=lambda: datetime.fromtimestamp(clock(), UTC))
        cfg = load_settings(store=":memory:", config=settings, env={})
        engine = Engine(JobStore(":memory:"), provider, cfg)
        engine.service.clock = clock
        h = Harness(engine, running, clock)
        for name in ("job_flagged", "guard_action", "job_status_changed", "job_progress"):
            engine.on(name, h.events.append)
        await engine.start(poll=False)
        try:
            yield h
        finally:
            await engine.aclose()
            await engine.store.aclose()
