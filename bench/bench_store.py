"""Store benchmarks: a 100-job upsert page, list(status="running") and to_dataframe() over 100k jobs.

Baselines are what a straightforward implementation would do, measured in the same run:
- upsert: one transaction per job (SELECT, merge, write, commit), as a per-job loop would;
- list: load every job and filter in Python;
- to_dataframe: build Job objects, then `pd.DataFrame([job.to_dict() ...])`.
"""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from bench._harness import Row, bench, best_of
from jobwidget.core.frame import jobs_frame
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.rules import merge_job
from jobwidget.engine.stores import JobStore
from jobwidget.engine.stores.sqlite_rows import _COLUMNS, _SELECT, _job_to_row, _row_to_job

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = [JobStatus.COMPLETED] * 14 + [
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus.RUNNING,
    JobStatus.QUEUED,
]


def _job(i: int, rng: random.Random, status: JobStatus | None = None) -> Job:
    status = status or rng.choice(STATUSES)
    created = T0 + timedelta(seconds=i * 37)
    started = created + timedelta(seconds=rng.randint(5, 300))
    done = status.is_terminal
    return Job(
        job_id=f"{i:026d}",
        provider="replicate",
        status=status,
        name=f"lora run {i}",
        model="ostris/flux-dev-lora-trainer",
        version="abc",
        hardware="gpu-h100",
        created_at=created,
        started_at=started,
        completed_at=started + timedelta(seconds=rng.randint(300, 3000)) if done else None,
        cost_usd=rng.random() * 4,
        web_url=f"https://replicate.com/p/{i:026d}",
        stage=None if done else "Training",
        progress=100.0 if done else rng.random() * 100,
        last_log="flux_train_replicate:  30%|███ | 300/1000 [05:00<11:40,  1.00s/it]",
        metadata={"provider_status": status.value},
    )


def _filled(path: Path, n: int) -> JobStore:
    rng = random.Random(7)
    store = JobStore(path)
    for start in range(0, n, 5000):
        store.upsert([_job(i, rng) for i in range(start, min(n, start + 5000))])
    return store


_PLACES = ", ".join("?" * (len(_COLUMNS) + 1))
_NAIVE_INSERT = f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}, rev) VALUES ({_PLACES})"


def _naive_upsert(store: JobStore, jobs: list[Job]) -> None:
    conn = store._conn()
    for job in jobs:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(f"{_SELECT} WHERE job_id = ?", (job.job_id,)).fetchone()
        before = _row_to_job(row) if row else None
        after = merge_job(before, job)
        values = _job_to_row(after)
        conn.execute(_NAIVE_INSERT, (*values, 0))
        conn.execute("COMMIT")


@bench("store")
def run(quick: bool) -> list[Row]:
    n = 20_000 if quick else 100_000
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = _filled(Path(tmp) / "bench.sqlite3", n)
        rng = random.Random(1)
        counter = iter(range(10**9))

        def page(offset: int) -> list[Job]:
            # a realistic sync page: 100 known jobs, each with a changed progress figure
            k = next(counter)
            return [_job(i, rng).evolve(progress=float(k % 100)) for i in range(offset, offset + 100)]

        pages = [page(n - 100) for _ in range(12)]
        it = iter(pages)
        fast = best_of(lambda: store.upsert(next(it)), repeat=6)
        it2 = iter(pages[6:] + [page(n - 100) for _ in range(6)])
        naive = best_of(lambda: _naive_upsert(store, next(it2)), repeat=6)
        rows.append(
            Row("store", "upsert 100-job page", fast * 1e3, "ms", naive * 1e3, note="vs 1 txn per job")
        )

        running = best_of(lambda: store.list(status="running", limit=None), repeat=5)

        def naive_list() -> list[Job]:
            return [j for j in store.list(limit=None) if j.status is JobStatus.RUNNING]

        naive_l = best_of(naive_list, repeat=2)
        count = store.count(status="running")
        rows.append(
            Row(
                "store",
                f"list(status='running') over {n // 1000}k ({count} hits)",
                running * 1e3,
                "ms",
                naive_l * 1e3,
                note="vs load all + filter",
            )
        )

        frame = best_of(lambda: jobs_frame(store.frame_rows()), repeat=3)

        def naive_frame() -> pd.DataFrame:
            return pd.DataFrame([j.to_dict() for j in store.list(limit=None)])

        naive_f = best_of(naive_frame, repeat=1)
        rows.append(
            Row(
                "store",
                f"to_dataframe() over {n // 1000}k",
                frame * 1e3,
                "ms",
                naive_f * 1e3,
                target="< 1000 ms",
                note="vs Jobs -> dicts -> DataFrame",
            )
        )
        store.close()
    return rows
