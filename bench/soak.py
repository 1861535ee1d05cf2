"""Soak: a `Jobs` controller left running for a long time against a large simulated fleet, with faults.

    python -m bench.soak --minutes 30 --jobs 10000 --faults

Why: people leave the panel open for days beside jobs that cost money. The short tests prove each fault
is survived; this proves that surviving them for a long time neither leaks memory nor starves the
engine's loop, and that the store still matches the provider at the end.

What runs:
- the simulated Replicate in a *separate process* on 127.0.0.1 (so this process's memory and loop are the
  engine's alone), `fleet_size=--jobs`, trainings running and arriving over accelerated time;
- one `Jobs` on a file store, poller on, panel created and marked visible (so running jobs' logs are read
  every 5 s too), a counting comm standing in for the kernel (every message is serialised, as a kernel
  would);
- every interval, what a user does: `sync()`, `list()`, `to_dataframe()`, `repr(jobs)`;
- with `--faults`, a repeating schedule (`PHASES`): clean, mixed faults (30 % 5xx, timeouts, malformed
  bodies, connection resets, slow bodies), a 429 storm, a full outage. The last stretch is clean.

Printed per interval: RSS, the engine loop's longest stall (a 5 ms ticker on the engine's own loop: how
late it woke), provider requests/retries/errors, faults the simulator injected, poll errors, jobs.
At the end: a summary (RSS after warm-up vs end, growth per hour, stall percentiles) and a convergence
check: every job in the simulator compared with the store (status, timestamps, billed cost), plus
`PRAGMA integrity_check`. Exit status 1 if the store did not converge.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import comm
import httpx
from comm.base_comm import BaseComm

TOKEN = "r8_SOAK_0123456789abcdef"
USER_EVERY_S = 10.0  # how often the "user" calls sync(), list(), to_dataframe()

# name, seconds, simulator knobs (applied on entering the phase; every other fault knob is reset to 0)
PHASES: list[tuple[str, float, dict[str, Any]]] = [
    ("clean", 90, {}),
    (
        "mixed",
        150,
        {
            "error_rate": 0.3,
            "timeout_rate": 0.02,
            "malformed_rate": 0.05,
            "reset_rate": 0.05,
            "slow_body_rate": 0.05,
            "latency_jitter": 0.02,
        },
    ),
    ("429-storm", 60, {"rate_limit": 2}),
    ("outage", 60, {"error_rate": 1.0}),
]
FAULT_KNOBS = {
    "error_rate": 0.0,
    "timeout_rate": 0.0,
    "malformed_rate": 0.0,
    "reset_rate": 0.0,
    "slow_body_rate": 0.0,
    "latency_jitter": 0.0,
    "rate_limit": None,
}

_CHILD = """
import json, sys
from jobwidget.sim import SimConfig, start_in_thread
with start_in_thread(SimConfig.from_mapping(json.loads(sys.argv[1]))) as running:
    print(running.base_url, flush=True)
    sys.stdin.read()  # serve until the parent closes stdin (or dies)
"""


class CountingComm(BaseComm):
    """A comm that serialises every message as a kernel would, and keeps only counts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.count = 0
        self.bytes = 0
        super().__init__(*args, **kwargs)

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
    ) -> None:
        self.count += 1
        self.bytes += len(json.dumps(data, ensure_ascii=False, default=str).encode())


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StallMonitor:
    """A 5 ms ticker on the engine's loop; records how late each wake-up was (a blocked loop wakes late)."""

    PERIOD = 0.005

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._lock = threading.Lock()
        self._late: list[float] = []
        self._future = asyncio.run_coroutine_threadsafe(self._run(), loop)

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.PERIOD)
            late = time.perf_counter() - t - self.PERIOD
            with self._lock:
                self._late.append(late)

    def take(self) -> list[float]:
        with self._lock:
            out, self._late = self._late, []
        return out

    def stop(self) -> None:
        self._future.cancel()


class GcPauses:
    """Durations of the cyclic garbage collector's runs: a full collection stops every thread, the
    engine's loop included, so it explains loop stalls that no engine code caused."""

    def __init__(self) -> None:
        self._start = 0.0
        self._lock = threading.Lock()
        self._pauses: list[tuple[int, float]] = []
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            with self._lock:
                self._pauses.append((int(info.get("generation", 0)), time.perf_counter() - self._start))

    def take(self) -> list[tuple[int, float]]:
        with self._lock:
            out, self._pauses = self._pauses, []
        return out

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Interval:
    t: float
    phase: str
    rss: float
    stall_max_ms: float
    stall_p99_ms: float
    gc_max_ms: float
    gc_full: int
    requests: int
    retries: int
    errors: int
    poll_errors: int
    faults: dict[str, int]
    jobs: int
    active: int
    user_errors: int
    user_max_s: float


@dataclass
class Run:
    intervals: list[Interval] = field(default_factory=list)
    # Every tick's lateness in 0.1 ms buckets: bounded memory however long the run (a list of every tick
    # would itself grow by ~10 MB an hour and pass for a leak).
    stall_hist: Counter[int] = field(default_factory=Counter)
    stall_max_ms: float = 0.0

    def add_stalls(self, late_ms: list[float]) -> None:
        self.stall_hist.update(round(x * 10) for x in late_ms)
        self.stall_max_ms = max(self.stall_max_ms, max(late_ms, default=0.0))

    def stall_pct(self, q: float) -> float:
        total = sum(self.stall_hist.values())
        seen = 0
        for bucket in sorted(self.stall_hist):
            seen += self.stall_hist[bucket]
            if seen > q * total:
                return bucket / 10
        return math.nan

    def ticks_over(self, ms: float) -> int:
        return sum(n for bucket, n in self.stall_hist.items() if bucket / 10 > ms)


def start_sim(config: dict[str, Any]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"the simulator did not start (said {base_url!r})")
    return proc, base_url


def sim_truth(base_url: str) -> dict[str, dict[str, Any]]:
    """Every training the simulator has, by id, read page by page (faults must be off)."""
    out: dict[str, dict[str, Any]] = {}
    url: str | None = f"{base_url}/v1/trainings"
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        for _ in range(2000):  # bounded: 200,000 trainings
            if url is None:
                break
            page = client.get(url).raise_for_status().json()
            for item in page["results"]:
                out[item["id"]] = item
            url = page.get("next")
    return out


def compare(store: Any, truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Store vs simulator for every job: missing, extra, and field mismatches (status, times, cost)."""
    from jobwidget.core.pricing import Pricing
    from jobwidget.core.replicate_convert import training_to_job

    now = datetime.now(UTC)
    stored = {j.job_id: j for j in store.list(limit=None)}
    mismatched: list[str] = []
    for job_id, item in truth.items():
        job = stored.get(job_id)
        if job is None:
            continue
        want = training_to_job(item, pricing=Pricing(), now=now)
        same = (job.status, job.started_at, job.completed_at) == (
            want.status,
            want.started_at,
            want.completed_at,
        )
        if same and want.is_terminal and want.cost_usd is not None:
            same = job.cost_usd is not None and math.isclose(job.cost_usd, want.cost_usd, rel_tol=1e-9)
        if not same:
            mismatched.append(job_id)
    return {
        "truth": len(truth),
        "stored": len(stored),
        "missing": sorted(set(truth) - set(stored))[:10],
        "missing_count": len(set(truth) - set(stored)),
        "extra_count": len(set(stored) - set(truth)),
        "mismatched_count": len(mismatched),
        "mismatched": mismatched[:10],
    }


def fault_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    keys = ("rate_limited", "server_errors", "timeouts", "malformed", "resets", "slow_bodies")
    return {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in keys}


def phase_at(elapsed: float, total: float, faults: bool, clean_tail: float) -> tuple[str, dict[str, Any]]:
    if not faults or elapsed >= total - clean_tail:
        return "clean", {}
    cycle = sum(p[1] for p in PHASES)
    t = elapsed % cycle
    for name, seconds, knobs in PHASES:
        if t < seconds:
            return name, knobs
        t -= seconds
    return "clean", {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to run (default 5)")
    parser.add_argument("--jobs", type=int, default=10_000, help="simulated fleet size (default 10000)")
    parser.add_argument("--active", type=int, default=100, help="trainings running at the start")
    parser.add_argument("--faults", action="store_true", help="cycle through the fault phases")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between report lines")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="the poller's status interval")
    parser.add_argument(
        "--no-user", action="store_true", help="skip the user's calls (isolates the engine's own stalls)"
    )
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="tracemalloc on: at the end, the allocation sites that grew most since the warm-up (slower)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    total = args.minutes * 60
    clean_tail = min(max(120.0, total * 0.1), total / 2) if args.faults else 0.0

    sim_config = {
        "seed": 8,
        "fleet_size": args.jobs,
        "active": min(args.active, args.jobs),
        "time_scale": 60.0,
        "arrival_interval": 300.0,  # one new training every 5 wall seconds at 60x
        "max_arrivals": 100_000,
        "latency": 0.02,
        "hang_seconds": 12.0,  # beyond the client's 10 s timeout: a real timeout
        "slow_body_seconds": 2.0,
        "token": TOKEN,
    }
    sim_proc, base_url = start_sim(sim_config)
    control = httpx.Client(base_url=base_url, timeout=10)
    comm.create_comm = lambda *a, **kw: CountingComm(*a, **kw)  # type: ignore[assignment]

    import jobwidget
    from jobwidget.engine.providers.replicate import ReplicateProvider

    tmp = tempfile.TemporaryDirectory(prefix="jobwidget-soak-")
    store_path = Path(tmp.name) / "soak.sqlite3"
    provider = ReplicateProvider(token=TOKEN, base_url=base_url, timeout=10.0)
    run = Run()
    t_start = time.monotonic()
    print(
        f"soak: {args.minutes:g} min, {args.jobs} jobs, faults {'on' if args.faults else 'off'}, "
        f"poll every {args.poll_interval:g} s, sim at {base_url}, pid {os.getpid()}",
        flush=True,
    )
    jobs = jobwidget.Jobs(provider=provider, store=store_path, poll_interval=args.poll_interval)
    try:
        t = time.perf_counter()
        first = jobs.sync(all=True)
        print(f"initial sync(all=True): {first.synced} jobs in {time.perf_counter() - t:.1f} s", flush=True)
        panel = jobs.panel
        panel._set_view_visible("soak", True)  # as a view on screen would report: progress every 5 s
        monitor = StallMonitor(jobs._loop.loop)
        if args.trace_memory:
            tracemalloc.start(12)
        warm_snapshot: tracemalloc.Snapshot | None = None
        pauses = GcPauses()
        poll_errors = [0]
        jobs.on("poll_error", lambda e: poll_errors.__setitem__(0, poll_errors[0] + 1))
        header = (
            f"{'t(min)':>6} {'phases':>16} {'RSS MB':>7} {'stall max':>9} {'p99':>6} {'gc max':>7} "
            f"{'reqs':>6} {'retry':>5} {'err':>4} {'pollerr':>7} {'faults(429/5xx/to/bad/rst/slow)':>31} "
            f"{'jobs':>6} {'active':>6} {'user max s':>10}"
        )
        print(header, flush=True)
        phase_name = ""
        seen_phases: list[str] = []
        stats0 = control.get("/_sim/stats").json()
        req0 = (provider.stats.requests, provider.stats.retries, provider.stats.errors)
        poll0 = 0
        next_report = time.monotonic() + args.interval
        user_errors, user_max = 0, 0.0
        while True:
            now = time.monotonic()
            elapsed = now - t_start
            if elapsed >= total:
                break
            name, knobs = phase_at(elapsed, total, args.faults, clean_tail)
            if name != phase_name:
                control.post("/_sim/config", json={**FAULT_KNOBS, **knobs}).raise_for_status()
                phase_name = name
            if name not in seen_phases:
                seen_phases.append(name)
            # What a user does in a notebook now and then; failures during an outage are expected.
            calls = (
                ()
                if args.no_user
                else (jobs.sync, lambda: jobs.list(limit=50), jobs.to_dataframe, jobs.__repr__)
            )
            for call in calls:
                t = time.perf_counter()
                try:
                    call()
                except Exception:
                    user_errors += 1
                user_max = max(user_max, time.perf_counter() - t)
            panel._set_view_visible("soak", True)
            if time.monotonic() >= next_report:
                next_report += args.interval
                late = [x * 1000 for x in monitor.take()]
                collections = pauses.take()
                run.add_stalls(late)
                stats1 = control.get("/_sim/stats").json()
                req1 = (provider.stats.requests, provider.stats.retries, provider.stats.errors)
                row = Interval(
                    t=round((time.monotonic() - t_start) / 60, 2),
                    phase="+".join(seen_phases),
                    rss=round(rss_mb(), 1),
                    stall_max_ms=round(max(late, default=0.0), 1),
                    stall_p99_ms=round(pct(late, 0.99), 1),
                    gc_max_ms=round(max((d for _, d in collections), default=0.0) * 1000, 1),
                    gc_full=sum(1 for g, _ in collections if g == 2),
                    requests=req1[0] - req0[0],
                    retries=req1[1] - req0[1],
                    errors=req1[2] - req0[2],
                    poll_errors=poll_errors[0] - poll0,
                    faults=fault_delta(stats0, stats1),
                    jobs=jobs.store.count(),
                    active=len(jobs.store.active()),
                    user_errors=user_errors,
                    user_max_s=round(user_max, 2),
                )
                run.intervals.append(row)
                if args.trace_memory and warm_snapshot is None:
                    warm_snapshot = tracemalloc.take_snapshot()
                stats0, req0, poll0 = stats1, req1, poll_errors[0]
                user_errors, user_max = 0, 0.0
                seen_phases = [phase_name]
                f = row.faults
                faults = "/".join(
                    str(f[k])
                    for k in (
                        "rate_limited",
                        "server_errors",
                        "timeouts",
                        "malformed",
                        "resets",
                        "slow_bodies",
                    )
                )
                print(
                    f"{row.t:>6.1f} {row.phase:>16} {row.rss:>7.1f} {row.stall_max_ms:>7.1f}ms "
                    f"{row.stall_p99_ms:>6.1f} {row.gc_max_ms:>5.1f}ms {row.requests:>6} {row.retries:>5} "
                    f"{row.errors:>4} "
                    f"{row.poll_errors:>7} {faults:>31} {row.jobs:>6} {row.active:>6} "
                    f"{row.user_max_s:>10.2f}",
                    flush=True,
                )
            until = min(t_start + total, next_report, time.monotonic() + USER_EVERY_S)
            time.sleep(max(0.05, until - time.monotonic()))

        # Faults are off (the clean tail); freeze simulated time, let the engine catch up, compare.
        control.post("/_sim/config", json={**FAULT_KNOBS, "time_scale": 1e-3}).raise_for_status()
        t_conv = time.monotonic()
        result: dict[str, Any] = {}
        for _ in range(30):  # bounded: 30 checks, about 2 minutes
            jobs.sync()
            time.sleep(args.poll_interval + 1)
            result = compare(jobs.store, sim_truth(base_url))
            if not (result["missing_count"] or result["extra_count"] or result["mismatched_count"]):
                break
        result["seconds_to_converge"] = round(time.monotonic() - t_conv, 1)
        result["integrity_check"] = jobs.store.integrity_check()
        monitor.stop()
        pauses.stop()
        if warm_snapshot is not None:
            print_growth(warm_snapshot, tracemalloc.take_snapshot())
            tracemalloc.stop()
    finally:
        jobs.close()
        control.close()
        assert sim_proc.stdin is not None
        sim_proc.stdin.close()
        try:
            sim_proc.wait(10)
        except subprocess.TimeoutExpired:
            sim_proc.kill()
        tmp.cleanup()

    summary = summarize(run, result, args)
    print("\nsummary:", json.dumps(summary, indent=2), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"summary": summary, "intervals": [vars(i) for i in run.intervals]}, indent=2)
        )
    converged = not (result["missing_count"] or result["extra_count"] or result["mismatched_count"])
    return 0 if converged and result["integrity_check"] == "ok" else 1


def print_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int = 12) -> None:
    """Where traced memory grew between the two snapshots (by the allocating line, innermost first)."""
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"\ntraced memory since the warm-up: {total / 1e6:+.2f} MB; largest changes:", flush=True)
    for stat in stats[:top]:
        frame = stat.traceback[0]
        print(
            f"  {stat.size_diff / 1e3:+9.1f} kB {stat.count_diff:+7d} blocks  {frame.filename}:{frame.lineno}"
        )


def summarize(run: Run, convergence: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows = run.intervals
    warm = rows[min(1, len(rows) - 1) :] if rows else []  # the first interval is the warm-up
    slope = math.nan
    if len(warm) >= 3:
        xs = [r.t / 60 for r in warm]  # hours
        ys = [r.rss for r in warm]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        den = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else math.nan
    return {
        "command": "python -m bench.soak " + " ".join(sys.argv[1:]),
        "minutes": args.minutes,
        "jobs": args.jobs,
        "faults": args.faults,
        "rss_mb_after_warmup": warm[0].rss if warm else None,
        "rss_mb_end": rows[-1].rss if rows else None,
        "rss_mb_max": max((r.rss for r in rows), default=None),
        "rss_growth_mb_per_hour_after_warmup": None if math.isnan(slope) else round(slope, 1),
        "loop_stall_ms_max": round(run.stall_max_ms, 1),
        "loop_stall_ms_p99": run.stall_pct(0.99),
        "loop_stall_ms_p999": run.stall_pct(0.999),
        "loop_stall_ms_median_of_interval_max": round(statistics.median([r.stall_max_ms for r in rows]), 1)
        if rows
        else None,
        "gc_pause_ms_max": max((r.gc_max_ms for r in rows), default=None),
        "gc_full_collections": sum(r.gc_full for r in rows),
        "loop_ticks": sum(run.stall_hist.values()),
        "ticks_over_25ms": run.ticks_over(25),
        "ticks_over_100ms": run.ticks_over(100),
        "provider_requests": sum(r.requests for r in rows),
        "provider_retries": sum(r.retries for r in rows),
        "provider_errors": sum(r.errors for r in rows),
        "poll_errors": sum(r.poll_errors for r in rows),
        "faults_injected": {k: sum(r.faults[k] for r in rows) for k in (rows[0].faults if rows else {})},
        "user_call_errors": sum(r.user_errors for r in rows),
        "user_call_max_s": max((r.user_max_s for r in rows), default=None),
        "convergence": convergence,
    }


if __name__ == "__main__":
    raise SystemExit(main())
