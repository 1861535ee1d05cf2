"""Projection accuracy: simulated steady-rate trainings of every trainer style, read every 10 s by the
real engine over loopback HTTP on a manual clock (nominal time = wall time, so a run takes as long as it
says). At the first read at or past 25 % progress the projected finish and cost are noted; when the run
ends they are compared with its real end and billed cost (errors relative to the run's duration and cost).

Baseline, in the same runs: the naive projection from progress alone, finish = start + elapsed / progress
(what a card could show without a history). Jitter: how far the projected finish moves between two
consecutive reads from 25 % to 75 %, as a share of the run's duration (median).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench._harness import Row, bench
from jobwidget.engine.config import load_settings
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.engine.runtime import Engine
from jobwidget.engine.stores import JobStore
from jobwidget.sim import SimConfig, SimulatedReplicate, start_in_thread

STYLES = {
    "ai-toolkit": "ostris/flux-dev-lora-trainer",
    "diffusers": "replicate/fast-flux-trainer",
    "cog-sdxl": "stability-ai/sdxl",
    "simpletuner": "bghira/simpletuner",
    "kohya": "kohya/sd-scripts",
    "hf-trainer": "huggingface/trainer",
}
READ_S = 10.0  # the engine reads running logs every 5 s while a panel is shown; 10 s keeps it quick
T0 = 1_790_000_000.0


class _Clock:
    def __init__(self) -> None:
        self.t = T0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def advance(self, s: float) -> None:
        with self._lock:
            self.t += s


@dataclass
class _Run:
    style: str
    quarter: tuple[float, float | None, float] | None = None  # (projected finish, projected cost, naive)
    finishes: list[tuple[float, float, float]] = field(default_factory=list)  # (progress, ours, naive)


def _naive(started: float, now: float, progress: float) -> float:
    return started + (now - started) / (progress / 100.0)


async def _measure(per_style: int) -> list[tuple[_Run, float, float, float]]:
    """(run, real finish, real duration, billed cost) for every simulated training."""
    clock = _Clock()
    cfg = SimConfig(
        seed=5,
        fleet_size=0,
        active=0,
        arrival_interval=0,
        time_scale=1.0,
        fail_fraction=0.0,
        cancel_fraction=0.0,
    )
    sim = SimulatedReplicate(cfg, clock=clock)
    with start_in_thread(sim=sim) as running:
        provider = ReplicateProvider(
            token="r8_bench", base_url=running.base_url, now=lambda: datetime.fromtimestamp(clock(), UTC)
        )
        engine = Engine(JobStore(":memory:"), provider, load_settings(store=":memory:", config={}, env={}))
        engine.service.clock = clock
        await engine.start(poll=False)
        runs: dict[str, _Run] = {}
        for style, model in STYLES.items():
            for _ in range(per_style):
                runs[sim.add_training(model, queue=10)] = _Run(style)
        try:
            for _ in range(2000):
                clock.advance(READ_S)
                await engine.service.refresh_active()
                await engine.service.refresh_progress()
                jobs = await engine.store.get_many(list(runs))
                for job_id, run in runs.items():
                    job = jobs.get(job_id)
                    if job is None or not job.is_active or job.progress is None or job.started_at is None:
                        continue
                    finish = job.projected_finish_at
                    if finish is None or job.progress <= 0:
                        continue
                    naive = _naive(job.started_at.timestamp(), clock(), job.progress)
                    if run.quarter is None and job.progress >= 25.0:
                        run.quarter = (finish.timestamp(), job.projected_cost_usd, naive)
                    if 25.0 <= job.progress <= 75.0:
                        run.finishes.append((job.progress, finish.timestamp(), naive))
                if all(j.is_terminal for j in jobs.values()) and len(jobs) == len(runs):
                    break
            out = []
            for job_id, run in runs.items():
                job = await engine.store.get(job_id)
                assert job is not None and job.completed_at and job.started_at and job.cost_usd, job
                end = job.completed_at.timestamp()
                out.append((run, end, end - job.started_at.timestamp(), job.cost_usd))
            return out
        finally:
            await engine.aclose()
            await engine.store.aclose()


def _jitter(points: list[float], duration: float) -> float:
    moves = [abs(b - a) / duration for a, b in itertools.pairwise(points)]
    return statistics.median(moves) if moves else 0.0


@bench("health")
def run(quick: bool) -> list[Row]:
    per_style = 2 if quick else 5
    results = asyncio.run(_measure(per_style))
    cost_err, finish_err, naive_err, ours_jit, naive_jit, long_err = [], [], [], [], [], []
    missing = 0
    for run_, end, duration, cost in results:
        if run_.quarter is None or run_.quarter[1] is None:
            missing += 1
            continue
        finish, projected_cost, naive = run_.quarter
        finish_err.append(abs(finish - end) / duration)
        if duration >= 900:
            long_err.append(abs(finish - end) / duration)
        cost_err.append(abs(projected_cost - cost) / cost)
        naive_err.append(abs(naive - end) / duration)
        ours_jit.append(_jitter([f for _, f, _ in run_.finishes], duration))
        naive_jit.append(_jitter([n for _, _, n in run_.finishes], duration))
    n = len(results)
    note = f"{n} runs, {len(STYLES)} trainer styles, read every {READ_S:g} s; {missing} without a projection"
    pct = 100.0
    return [
        Row(
            "health",
            "finish at 25 %: median error",
            statistics.median(finish_err) * pct,
            "%",
            statistics.median(naive_err) * pct,
            "< 10 %",
            "baseline: start + elapsed / progress",
        ),
        Row(
            "health",
            "finish at 25 %: worst error",
            max(finish_err) * pct,
            "%",
            max(naive_err) * pct,
            "< 10 %",
            note,
        ),
        Row(
            "health",
            "cost at 25 %: median error",
            statistics.median(cost_err) * pct,
            "%",
            None,
            "< 10 %",
            "vs the billed cost",
        ),
        Row("health", "cost at 25 %: worst error", max(cost_err) * pct, "%", None, "< 10 %", note),
        Row(
            "health",
            "finish at 25 %: worst error, runs >= 15 min",
            max(long_err, default=0.0) * pct,
            "%",
            None,
            "< 10 %",
            f"{len(long_err)} runs; in shorter ones the final save is a larger share",
        ),
        Row(
            "health",
            "finish jitter per read, 25-75 %",
            statistics.median(ours_jit) * pct,
            "%",
            statistics.median(naive_jit) * pct,
            "",
            "median move between reads / duration",
        ),
    ]
