"""Team benchmarks: 1, 4 and 8 processes, each with its own `Jobs`, on one store (SQLite file and
PostgreSQL), against the simulated Replicate on 127.0.0.1.

- provider calls per poll interval: every process polls (autostart); the poll lease lets one of them
  call the provider, so the figure should not grow with the number of processes.
- change propagation: this process commits a change; the time until each other process's callback
  hears it, p50/p99. SQLite's followers check its revision each second; PostgreSQL pushes a NOTIFY.
- `to_dataframe()` on 100,000 jobs from each store.

PostgreSQL comes from JOBWIDGET_TEST_POSTGRES (run `./dev postgres python -m bench team`); without it
the PostgreSQL rows are left out, saying so.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench._harness import Row, bench, best_of
from bench.bench_store import _job
from jobwidget.core.models import Job, JobStatus
from jobwidget.engine.stores import open_store
from jobwidget.sim import SimConfig, SimulatedReplicate, start_in_thread

_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from jobwidget import Jobs

    jobs = Jobs(store=sys.argv[1], poll_interval=float(sys.argv[2]), autostart=sys.argv[3] == "poll")

    def heard(event):
        line = {"job_id": event["job_id"], "progress": event["progress"], "t": time.time()}
        print(json.dumps(line), flush=True)

    jobs.on("job_progress", heard)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    jobs.close()
    """
)
_INTERVAL = 0.5
_WAIT_S = 120.0


class _Child:
    def __init__(self, store: str, env: dict[str, str], poll: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, store, str(_INTERVAL), "poll" if poll else "follow"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.out: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.out.put(json.loads(line))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + _WAIT_S
        while not self.out.get(timeout=max(0.1, deadline - time.monotonic())).get("ready"):
            pass

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


@contextmanager
def _team(store: str, base_url: str, n: int, *, poll: bool) -> Iterator[list[_Child]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBWIDGET_", "REPLICATE_"))}
    env.update(REPLICATE_API_TOKEN="r8_bench_token", REPLICATE_BASE_URL=base_url)
    children = [_Child(store, env, poll) for _ in range(n)]
    try:
        for child in children:
            child.wait_ready()
        yield children
    finally:
        for child in children:
            child.close()


def _requests(running: object) -> int:
    return int(running.sim.stats_snapshot()["total"])  # type: ignore[attr-defined]


def _calls_per_interval(store: str, base_url: str, running: object, n: int, window: float) -> float:
    with _team(store, base_url, n, poll=True):
        time.sleep(2 * _INTERVAL)  # the first round (lease taken, first refresh) settles
        before = _requests(running)
        time.sleep(window)
        return (_requests(running) - before) / (window / _INTERVAL)


def _latencies(store: str, base_url: str, n: int, changes: int) -> list[float]:
    """Seconds from this process's commit to each other process's callback, for `changes` commits."""
    job_id = f"bench-latency-{n}"  # a job of its own per run: earlier runs' progress is no head start

    async def writer(commits: list[float]) -> None:
        s = await open_store(store)
        try:
            for k in range(changes):
                job = Job(job_id=job_id, provider="replicate", status=JobStatus.RUNNING, progress=float(k))
                await s.upsert([job])
                commits.append(time.time())
                await asyncio.sleep(0.1 + random.random() * 0.2)
        finally:
            await s.aclose()

    async def seed() -> None:
        s = await open_store(store)
        try:
            await s.upsert(
                [Job(job_id=job_id, provider="replicate", status=JobStatus.RUNNING, progress=-1.0)]
            )
        finally:
            await s.aclose()

    asyncio.run(seed())
    with _team(store, base_url, n, poll=False) as children:
        commits: list[float] = []
        asyncio.run(writer(commits))
        out: list[float] = []
        last = float(changes - 1)
        for child in children:
            heard: list[tuple[float, float]] = []  # (progress, when)
            deadline = time.monotonic() + _WAIT_S
            while not any(p >= last for p, _ in heard) and time.monotonic() < deadline:
                try:
                    item = child.out.get(timeout=1.0)
                except queue.Empty:
                    continue
                progress = item.get("progress")
                # The first commit's progress is 0.0: test for None, not falsiness, or its delivery is
                # dropped and measured as the next commit's (the writer's 0.1-0.3 s pause on top).
                if item.get("job_id") == job_id and progress is not None and progress >= 0:
                    heard.append((progress, item["t"]))
            # A commit is seen when its state or a newer one is (a 1 s check folds several into one).
            for k, committed in enumerate(commits):
                seen = [t for p, t in heard if p >= k]
                if seen:
                    out.append(min(seen) - committed)
        return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _fresh_database(server: str) -> tuple[str, str]:
    import psycopg

    name = f"jw_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}")), name


def _drop_database(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _frame_ms(stores: dict[str, str], n: int, rounds: int = 5) -> dict[str, float]:
    """Best `to_dataframe()` time per store over `n` jobs; the stores take turns each round, so a burst
    of load from other work on the machine falls on both rather than on whichever ran second."""

    async def fill(store: str) -> None:
        s = await open_store(store)
        rng = random.Random(1)
        try:
            for i in range(0, n, 5000):
                await s.upsert([_job(k, rng) for k in range(i, min(n, i + 5000))])
        finally:
            await s.aclose()

    from jobwidget.surfaces.controller import Jobs

    for store in stores.values():
        asyncio.run(fill(store))
    opened = {kind: Jobs(store=store, autostart=False, provider="sim") for kind, store in stores.items()}
    try:
        best = dict.fromkeys(opened, float("inf"))
        for _ in range(rounds):
            for kind, jobs in opened.items():
                best[kind] = min(best[kind], best_of(jobs.to_dataframe, repeat=1))
        return {kind: t * 1e3 for kind, t in best.items()}
    finally:
        for jobs in opened.values():
            jobs.close()


@bench("team")
def run(quick: bool) -> list[Row]:
    sizes = [1, 4] if quick else [1, 4, 8]
    changes = 20 if quick else 60
    window = 3.0 if quick else 8.0
    n_frame = 20_000 if quick else 100_000
    server = os.environ.get("JOBWIDGET_TEST_POSTGRES")
    rows: list[Row] = []
    sim = SimulatedReplicate(SimConfig(seed=7, fleet_size=200, active=10, arrival_interval=0))
    with start_in_thread(sim=sim) as running, tempfile.TemporaryDirectory() as tmp:
        kinds: list[tuple[str, str]] = [("sqlite", str(Path(tmp) / "team.sqlite3"))]
        created: list[str] = []
        if server:
            url, name = _fresh_database(server)
            created.append(name)
            kinds.append(("postgres", url))
        try:
            for kind, store in kinds:
                for n in sizes:
                    calls = _calls_per_interval(store, running.base_url, running, n, window)
                    rows.append(
                        Row(
                            "team",
                            f"{kind}: provider calls per poll interval, {n} processes",
                            calls,
                            "calls",
                            target="same as 1 process",
                        )
                    )
            for n in sizes:
                lat = {kind: _latencies(store, running.base_url, n, changes) for kind, store in kinds}
                for kind, values in lat.items():
                    if not values:
                        continue
                    base = lat.get("sqlite") if kind == "postgres" else None
                    for q, label in ((0.5, "p50"), (0.99, "p99")):
                        rows.append(
                            Row(
                                "team",
                                f"{kind}: commit -> other process's callback {label}, {n} processes",
                                _pct(values, q) * 1e3,
                                "ms",
                                None if not base else _pct(base, q) * 1e3,
                                target="p99 < 100 ms" if kind == "postgres" and label == "p99" else "",
                                note=f"{len(values)} deliveries"
                                + (" vs SQLite revision polling" if base else ""),
                            )
                        )
            frame_stores = {}
            for kind, _ in kinds:
                target = str(Path(tmp) / "frame.sqlite3")
                if kind == "postgres" and server:
                    target, name = _fresh_database(server)
                    created.append(name)
                frame_stores[kind] = target
            frame_rows = _frame_ms(frame_stores, n_frame)
            for kind, ms in frame_rows.items():
                rows.append(
                    Row(
                        "team",
                        f"{kind}: to_dataframe() over {n_frame // 1000}k",
                        ms,
                        "ms",
                        frame_rows["sqlite"] if kind == "postgres" else None,
                        note="vs SQLite, best of 5 rounds taken in turns" if kind == "postgres" else "",
                    )
                )
        finally:
            for name in created:
                _drop_database(server or "", name)
    if not server:
        rows.append(Row("team", "postgres", 0, "-", note="left out: JOBWIDGET_TEST_POSTGRES not set"))
    return rows
