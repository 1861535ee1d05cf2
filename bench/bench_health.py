"""Projection accuracy: simulated steady-rate trainings of every trainer style, read every 10 s by the
real engine over loopback HTTP on a manual clock (nominal time = wall time, so a run takes as long as it
says). At the first read at or past 25 % progress the projected finish and cost are noted; when the run
ends they are compared with its real end and billed cost (errors relative to the run's duration and cost).
Steady-rate runs get rows of their own: runs whose simulated schedule has no validation pass, save or
stall between the first and the last training step (from the simulator's plan, not from the log).

Runs come as a user makes them: for each trainer style, one training after the other, the next started
when the one before has ended, every style at once. So a run's projection can draw on the earlier runs of
its trainer (their tail after the last step, their pauses: core/projection.py), and only on runs that
ended before it started; the first run of each trainer has none. Each seed is a fresh simulator, engine
and store. Figures are split into first runs and runs after an earlier one.

Baselines, from the same runs at the same read: the projection from the run's history alone (the step
rate over its recent span, pauses and all: what the engine projected before), and the naive projection
from progress alone, finish = start + elapsed / progress. Jitter: how far the projected finish moves
between two consecutive reads from 25 % to 75 %, as a share of the run's duration (median).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench._harness import Row, bench
from jobwidget.core.projection import project
from jobwidget.engine.config import load_settings
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.engine.runtime import Engine
from jobwidget.engine.stores import JobStore
from jobwidget.sim import SimConfig, SimulatedReplicate, start_in_thread
from jobwidget.sim.training import Training

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
SEEDS = (5, 6, 7)
MAX_READS = 5_000  # ~14 h of simulated time: far past the longest sequence of runs


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
    created: float
    earlier: int = 0  # completed runs of its trainer the projection drew on at 25 %
    quarter: tuple[float, float | None, float, float] | None = None  # (finish, cost, rate-only, naive)
    finishes: list[tuple[float, float]] = field(default_factory=list)  # (ours, naive), 25-75 %
    end: float = 0.0
    duration: float = 0.0
    cost: float = 0.0
    seed: int = 0
    steady: bool = False  # no pause between its first and last step, by the simulator's own schedule
    tail: float = 0.0  # nominal seconds after the last step (final save, upload), from the same plan


def _steady(tr: Training) -> bool:
    """The simulator's ground truth: no validation pass or save before the last step, and no stall."""
    p = tr.plan
    return p.n_samples == 0 and p.n_saves == 0 and (tr.health is None or tr.health.kind != "stall")


def _naive(started: float, now: float, progress: float) -> float:
    return started + (now - started) / (progress / 100.0)


async def _measure(seed: int, per_style: int) -> list[_Run]:
    clock = _Clock()
    cfg = SimConfig(
        seed=seed,
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
        monitor = engine.service.health
        assert monitor is not None
        await engine.start(poll=False)
        runs: dict[str, _Run] = {}
        left = dict.fromkeys(STYLES, per_style)
        current: dict[str, str] = {}

        def start(style: str) -> None:
            job_id = sim.add_training(STYLES[style], queue=10)
            tr = sim.fleet.training(job_id)
            assert tr is not None
            runs[job_id] = _Run(style, clock(), seed=seed, steady=_steady(tr), tail=tr.plan.final_s)
            current[style] = job_id
            left[style] -= 1

        for style in STYLES:
            start(style)
        try:
            for _ in range(MAX_READS):
                clock.advance(READ_S)
                await engine.service.refresh_active()
                await engine.service.refresh_progress()
                jobs = await engine.store.get_many(list(current.values()))
                for style, job_id in list(current.items()):
                    job, run = jobs.get(job_id), runs[job_id]
                    if job is not None and job.is_terminal:
                        assert job.completed_at and job.started_at and job.cost_usd, job
                        run.end = job.completed_at.timestamp()
                        run.duration = run.end - job.started_at.timestamp()
                        run.cost = job.cost_usd
                        del current[style]
                        if left[style]:
                            start(style)  # the next run of this trainer starts after this one ended
                        continue
                    if job is None or not job.is_active or not job.progress or job.started_at is None:
                        continue
                    finish = job.projected_finish_at
                    if finish is None:
                        continue
                    naive = _naive(job.started_at.timestamp(), clock(), job.progress)
                    if run.quarter is None and job.progress >= 25.0:
                        alone = project(await engine.store.history(job_id), started_at=None)
                        prior = await monitor.profiles.prior(job)
                        assert all(r.end <= run.created for r in runs.values() if r.end and r.style == style)
                        run.earlier = prior.runs
                        rate_only = alone.finish_at if alone is not None else finish.timestamp()
                        run.quarter = (finish.timestamp(), job.projected_cost_usd, rate_only, naive)
                    if 25.0 <= job.progress <= 75.0:
                        run.finishes.append((finish.timestamp(), naive))
                if not current:
                    break
            assert not current, f"runs still going after {MAX_READS} reads: {current}"
            return list(runs.values())
        finally:
            await engine.aclose()
            await engine.store.aclose()


def _jitter(points: list[float], duration: float) -> float:
    moves = [abs(b - a) / duration for a, b in itertools.pairwise(points)]
    return statistics.median(moves) if moves else 0.0


@dataclass
class _Errors:
    ours: list[float] = field(default_factory=list)
    signed: list[float] = field(default_factory=list)  # > 0: projected later than the real end
    rate_only: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)


@bench("health")
def run(quick: bool) -> list[Row]:
    seeds, per_style = (SEEDS[:1], 2) if quick else (SEEDS, 5)
    results = [r for seed in seeds for r in asyncio.run(_measure(seed, per_style))]
    alls, first, later = _Errors(), _Errors(), _Errors()
    ours_jit, naive_jit = [], []
    missing = 0
    for r in results:
        if r.quarter is None or r.quarter[1] is None:
            missing += 1
            continue
        finish, projected_cost, rate_only, naive = r.quarter
        for errors in (alls, later if r.earlier else first):
            errors.ours.append(abs(finish - r.end) / r.duration)
            errors.signed.append((finish - r.end) / r.duration)
            errors.rate_only.append(abs(rate_only - r.end) / r.duration)
            errors.naive.append(abs(naive - r.end) / r.duration)
            errors.cost.append(abs(projected_cost - r.cost) / r.cost)
        ours_jit.append(_jitter([f for f, _ in r.finishes], r.duration))
        naive_jit.append(_jitter([n for _, n in r.finishes], r.duration))
    pct = 100.0
    setup = (
        f"{len(seeds)} seeds x {len(STYLES)} trainer styles x {per_style} runs in a row, read every "
        f"{READ_S:g} s; {missing} without a projection"
    )
    base = "baseline: rate only (the run's own history, as before)"

    def rows(case: str, e: _Errors, runs_note: str) -> list[Row]:
        if not e.ours:
            return []
        return [
            Row(
                "health",
                f"finish at 25 %: median signed error, {case}",
                statistics.median(e.signed) * pct,
                "%",
                None,
                "",
                f"> 0: late; {sum(x > 0 for x in e.signed)} of {len(e.signed)} late, from "
                f"{min(e.signed) * pct:+.1f} % to {max(e.signed) * pct:+.1f} %",
            ),
            Row(
                "health",
                f"finish at 25 %: worst error, {case}",
                max(e.ours) * pct,
                "%",
                max(e.rate_only) * pct,
                "< 10 %",
                f"{len(e.ours)} {runs_note}, {sum(x >= 0.1 for x in e.ours)} of them 10 % off or more; "
                f"naive worst {max(e.naive) * pct:.1f} %",
            ),
            Row(
                "health",
                f"cost at 25 %: worst error, {case}",
                max(e.cost) * pct,
                "%",
                None,
                "< 10 %",
                "vs the billed cost",
            ),
        ]

    return [
        Row(
            "health",
            "finish at 25 %: median error, all runs",
            statistics.median(alls.ours) * pct,
            "%",
            statistics.median(alls.rate_only) * pct,
            "< 10 %",
            f"{base}; naive median {statistics.median(alls.naive) * pct:.1f} %",
        ),
        Row(
            "health",
            "cost at 25 %: median error, all runs",
            statistics.median(alls.cost) * pct,
            "%",
            None,
            "< 10 %",
            "vs the billed cost",
        ),
        *rows("after earlier runs", later, "runs with 1-5 earlier completed runs of their trainer"),
        *rows("first run of a trainer", first, "runs, nothing earlier to learn from"),
        Row(
            "health",
            "finish at 25 %: worst error, all runs",
            max(alls.ours) * pct,
            "%",
            max(alls.rate_only) * pct,
            "< 10 %",
            setup,
        ),
        Row(
            "health",
            "finish jitter per read, 25-75 %",
            statistics.median(ours_jit) * pct,
            "%",
            statistics.median(naive_jit) * pct,
            "",
            "median move between reads / duration; baseline: naive",
        ),
        *_steady_rows(results),
    ]


def _steady_rows(results: list[_Run]) -> list[Row]:
    """The must-show figures restricted to steady-rate runs: median and worst 25 % finish and cost
    errors, for all of them, for runs after earlier runs of their trainer, and for first runs."""
    steady = [r for r in results if r.steady and r.quarter is not None and r.quarter[1] is not None]
    total = sum(r.steady for r in results)
    pct = 100.0
    out: list[Row] = []
    groups = (
        ("all", steady, results),
        ("after earlier runs", [r for r in steady if r.earlier], [r for r in results if r.earlier]),
        (
            "first run of a trainer",
            [r for r in steady if not r.earlier],
            [r for r in results if not r.earlier],
        ),
    )
    for name, group, among in groups:
        if not group:
            continue
        finish = [abs(r.quarter[0] - r.end) / r.duration for r in group if r.quarter]
        rate_only = [abs(r.quarter[2] - r.end) / r.duration for r in group if r.quarter]
        cost = [abs(r.quarter[1] - r.cost) / r.cost for r in group if r.quarter and r.quarter[1] is not None]
        off = [r for r, e in zip(group, finish, strict=True) if e >= 0.1]
        off_note = "; ".join(
            f"{r.style} seed {r.seed} ({'first run' if not r.earlier else f'after {r.earlier}'}, "
            f"{r.duration / 60:.1f} min, tail {r.tail:.0f} s)"
            for r in off
        )
        unprojected = total - len(steady) if name == "all" else 0
        count = f"{len(group)} of {len(among)} runs steady-rate" + (
            f", {unprojected} more without a projection" if unprojected else ""
        )
        base = "baseline: rate only"
        out += [
            Row(
                "health",
                f"steady-rate, finish at 25 %: median error, {name}",
                statistics.median(finish) * pct,
                "%",
                statistics.median(rate_only) * pct,
                "< 10 %",
                f"{count}; {base}",
            ),
            Row(
                "health",
                f"steady-rate, finish at 25 %: worst error, {name}",
                max(finish) * pct,
                "%",
                max(rate_only) * pct,
                "< 10 %",
                f"{len(off)} of {len(group)} 10 % off or more" + (f": {off_note}" if off else ""),
            ),
            Row(
                "health",
                f"steady-rate, cost at 25 %: median error, {name}",
                statistics.median(cost) * pct,
                "%",
                None,
                "< 10 %",
                "vs the billed cost",
            ),
            Row(
                "health",
                f"steady-rate, cost at 25 %: worst error, {name}",
                max(cost) * pct,
                "%",
                None,
                "< 10 %",
                "vs the billed cost",
            ),
        ]
    return out
