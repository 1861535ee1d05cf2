"""Opening a big store and reading its newest page: `Jobs()` open, the follower's start, `list(limit=50)`.

A realistic store: 100,000 jobs (20,000 with --quick), 1 % of them active. Baselines (same run):
- follower start: every job's state (what `load_seen` read before), against the active jobs' only;
- `list(limit=50)` and `get()`: a raw SQLite fetch of the same rows (same columns, same order) into
  tuples, with no Job built, the floor a store read can reach (target: within 1.5x of it). A job's
  fields are decoded when first read (`core/stored.py`), so `list` + reading every field of every job
  is reported too, against the same raw fetch;
- `Jobs()` open + close on an empty store, so the figure shows what the store's size adds.
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench._harness import Row, bench, best_of, spread
from bench.bench_store import _job
from jobwidget import Jobs
from jobwidget.core.models import Job, JobStatus
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.engine.stores import JobStore
from jobwidget.engine.stores.sqlite import _COLUMNS, _ORDER
from jobwidget.sim import SimConfig, SimulatedReplicate, start_in_thread

_FIELDS = [f.name for f in dataclasses.fields(Job)]
ROUNDS = 3


def _fill(path: Path, n: int) -> None:
    rng = random.Random(3)
    with JobStore(path) as store:
        for start in range(0, n, 5000):
            batch = []
            for i in range(start, min(n, start + 5000)):
                status = JobStatus.RUNNING if i % 100 == 0 else JobStatus.COMPLETED
                batch.append(_job(i, rng, status))
            store.upsert(batch)


def _read_every_field(jobs: list[Job]) -> None:
    for job in jobs:
        for name in _FIELDS:
            getattr(job, name)


def _open_close(path: Path, base_url: str) -> None:
    provider = ReplicateProvider(token="r8_bench_token", base_url=base_url)
    with Jobs(provider=provider, store=path, autostart=False):
        pass


@bench("open")
def run_open(quick: bool) -> list[Row]:
    n = 20_000 if quick else 100_000
    rows: list[Row] = []
    sim = SimulatedReplicate(SimConfig(seed=1, fleet_size=5, active=1))
    with tempfile.TemporaryDirectory() as tmp, start_in_thread(sim=sim) as running:
        path, empty = Path(tmp) / "big.sqlite3", Path(tmp) / "empty.sqlite3"
        _fill(path, n)
        JobStore(empty).close()
        with JobStore(path) as store:
            active = best_of(lambda: store.states(active_only=True), repeat=5)
            everything = best_of(lambda: store.states(), repeat=3)
            rows.append(
                Row(
                    "open",
                    f"follower start over {n:,} jobs (1 % active)",
                    active * 1e3,
                    "ms",
                    everything * 1e3,
                    note="vs every job's state",
                )
            )
            newest = store.list(limit=1)[0].job_id
            raw = sqlite3.connect(path)
            query = f"SELECT {', '.join(_COLUMNS)} FROM jobs {_ORDER} LIMIT 50"
            one = f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE job_id = ?"
            # Rounds in turns, each the best of many calls: the machine is shared, so the ratios of each
            # round (same moment, same load) are what is reported, median and spread.
            listed, read_all, got, raw_us, raw_one_us = [], [], [], [], []
            for _ in range(ROUNDS):
                fetched = best_of(lambda: raw.execute(query).fetchall(), repeat=20, number=20)
                listed.append(best_of(lambda: store.list(limit=50), repeat=20, number=20) / fetched)
                every = best_of(lambda: _read_every_field(store.list(limit=50)), repeat=20, number=20)
                read_all.append(every / fetched)
                fetched_one = best_of(lambda: raw.execute(one, (newest,)).fetchone(), repeat=20, number=200)
                got.append(best_of(lambda: store.get(newest), repeat=20, number=200) / fetched_one)
                raw_us.append(fetched * 1e6)
                raw_one_us.append(fetched_one * 1e6)
            raw.close()
            for case, ratios, floor, target in (
                (f"list(limit=50) over {n:,} jobs", listed, raw_us, "≤ 1.5x raw"),
                (f"list(limit=50) over {n:,} jobs, every field read", read_all, raw_us, ""),
                (f"get() over {n:,} jobs", got, raw_one_us, "≤ 1.5x raw"),
            ):
                rows.append(
                    Row(
                        "open",
                        case,
                        statistics.median(ratios),
                        "x raw",
                        None,
                        target=target,
                        note=f"time / a raw fetch of the same rows into tuples "
                        f"({statistics.median(floor):.3g} µs), {spread(ratios, 1, 'x')}",
                    )
                )
        t0 = time.perf_counter()
        _open_close(path, running.base_url)
        big = time.perf_counter() - t0
        big = min(big, best_of(lambda: _open_close(path, running.base_url), repeat=3))
        small = best_of(lambda: _open_close(empty, running.base_url), repeat=3)
        rows.append(
            Row(
                "open",
                f"Jobs() open + close, {n:,} jobs",
                big * 1e3,
                "ms",
                small * 1e3,
                target="constant",
                note="baseline: the same on an empty store",
            )
        )
    return rows
