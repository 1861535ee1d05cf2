"""What every `Store` must do (the rules in `jobwidget/engine/stores/base.py`), as checks over any store.

`tests/test_store_contract.py` runs each check against SQLite and PostgreSQL; a new store passes them
all before the engine may use it.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

from jobwidget.core.health import Sample
from jobwidget.core.models import Job, JobStatus
from jobwidget.engine.stores import Store

from .fakes import T0, make_job

T = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def full_job() -> Job:
    return Job(
        job_id="zz4ibbonubfz7carwiefibzgga",
        provider="replicate",
        status=JobStatus.RUNNING,
        name="Ünïcødé run — 日本語 ✓",
        model="ostris/flux-dev-lora-trainer",
        version="abc123",
        hardware="gpu-h100",
        created_at=T,
        started_at=T + timedelta(seconds=1.5),
        completed_at=T + timedelta(hours=1),
        cost_usd=12.345678,
        error_message="CUDA out of memory — 😱",
        output={"version": "me/model:123"},
        web_url="https://replicate.com/p/zz4ibbonubfz7carwiefibzgga",
        stage="Training",
        progress=42.42,
        last_log="step 42/100",
        metadata={"inline": {"step": 42}, "health": {"finish_at": 1.5e9, "cost": 2.5, "flags": {"stall": 1}}},
        inputs={"steps": 100, "lr": 1e-4},
        retry_of="older",
    )


async def round_trip(store: Store) -> None:
    job = full_job()
    await store.upsert([job], now=T)
    assert await store.get(job.job_id) == job.evolve(updated_at=T)
    assert (await store.get_many([job.job_id, "missing"])) == {job.job_id: job.evolve(updated_at=T)}
    assert await store.get("missing") is None


async def transition_rule_and_revisions(store: Store) -> None:
    r0 = await store.revision()
    first = await store.upsert([make_job(1), make_job(2)])
    assert len(first.created) == 2 and first.rev == r0 + 1
    same = await store.upsert([make_job(1)])
    assert same.unchanged == 1 and same.rev == first.rev and not same.changed  # no-op writes no revision
    done = await store.upsert([make_job(1, "completed", completed_at=T0 + timedelta(hours=1))])
    assert [after.status for _, after in done.updated] == [JobStatus.COMPLETED] and done.rev == r0 + 2
    back = await store.upsert([make_job(1, "running")])  # a finished job never goes back
    assert (await store.get("job00001")).status is JobStatus.COMPLETED and back.rev == done.rev  # type: ignore[union-attr]
    rev, jobs = await store.changes_since(first.rev)
    assert rev == done.rev and [j.job_id for j in jobs] == ["job00001"]
    rev, ordered = await store.changes_in_order(r0)
    assert [(r, j.job_id) for r, j in ordered] == [(first.rev, "job00002"), (done.rev, "job00001")]
    rev, states = await store.states()
    assert rev == done.rev and states["job00001"][0] is JobStatus.COMPLETED


async def concurrent_writers_neither_duplicate_nor_regress(store: Store) -> None:
    """Many writers at once on the same jobs: each job once, every revision distinct, none finished undone."""

    async def writer(w: int) -> list[int]:
        revs = []
        for i in range(20):
            status = "completed" if (w + i) % 7 == 0 else "running"
            res = await store.upsert([make_job(i, status, progress=float(w * 100 + i))])
            revs.append(res.rev)
        return revs

    await asyncio.gather(*(writer(w) for w in range(4)))
    assert await store.count() == 20
    finished = {j.job_id for j in await store.list(status="completed", limit=None)}
    _, jobs = await store.changes_since(0)
    assert len({j.job_id for j in jobs}) == 20 == len(jobs)
    for i in range(20):
        if any((w + i) % 7 == 0 for w in range(4)):
            assert f"job{i:05d}" in finished, f"job {i} finished once and must stay finished"


async def webhook_delivery_once(store: Store) -> None:
    first = await store.upsert_delivery("msg_1", [make_job(5)])
    assert first.created and not first.duplicate and await store.delivery_seen("msg_1")
    again = await store.upsert_delivery("msg_1", [make_job(5, "completed")])
    assert again.duplicate and not again.changed and again.rev == first.rev
    assert (await store.get("job00005")).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert not await store.delivery_seen("msg_2")


async def failed_delivery_records_nothing(store: Store) -> None:
    bad = Job(job_id="x", provider="replicate", status=JobStatus.RUNNING, metadata={"bad": object()})
    try:
        await store.upsert_delivery("msg_bad", [bad])
    except Exception:
        pass
    else:  # a store may serialise anything it is handed; then the delivery counts as applied
        assert await store.delivery_seen("msg_bad")
        return
    assert not await store.delivery_seen("msg_bad") and await store.get("x") is None


async def list_filters_and_order(store: Store) -> None:
    undated = Job(job_id="undated", provider="replicate", status=JobStatus.RUNNING, name="no date")
    await store.upsert([make_job(i, "completed" if i % 2 else "running") for i in range(6)] + [undated])
    assert [j.job_id for j in await store.list(limit=3)] == ["job00005", "job00004", "job00003"]
    assert (await store.list(limit=None))[-1].job_id == "undated"  # undated jobs come last
    assert [j.job_id for j in await store.list(status="completed", limit=None)] == [
        "job00005",
        "job00003",
        "job00001",
    ]
    assert [j.job_id for j in await store.list(search="RUN 4")] == ["job00004"]  # ASCII case ignored
    assert await store.list(search="100%") == []
    assert await store.list(model=[]) == []
    assert len(await store.list(model="ostris/flux-dev-lora-trainer", limit=None)) == 6
    after = await store.list(created_after=T0 + timedelta(minutes=4), limit=None)
    assert [j.job_id for j in after] == ["job00005", "job00004"]
    assert [j.job_id for j in await store.list(limit=2, offset=1)] == ["job00004", "job00003"]
    assert len(await store.active()) == 4 and await store.count(status=["running"]) == 4
    assert await store.newer_counts([T0 + timedelta(minutes=3), None]) == [2, 0]


async def list_pages_by_cursor(store: Store) -> None:
    """Keyset paging: page after page covers every job once, in list order, ties and undated jobs too,
    even when new jobs arrive at the top between pages."""
    tie = T0 + timedelta(minutes=3)  # job00003's creation time: four jobs created in the same µs
    jobs = [make_job(i, "completed" if i % 3 else "running") for i in range(9)]
    jobs += [make_job(i).evolve(created_at=tie) for i in (20, 21, 22)]
    jobs += [Job(job_id=f"undated{i}", provider="replicate", status=JobStatus.FAILED) for i in range(3)]
    await store.upsert(jobs)
    expected = [j.job_id for j in await store.list(limit=None)]
    seen: list[str] = []
    before = None
    for _ in range(20):  # bounded: 15 jobs in pages of 4
        page = await store.list(limit=4, before=before)
        if not page:
            break
        seen += [j.job_id for j in page]
        before = (page[-1].created_at, page[-1].job_id)
        if len(seen) == 4:
            await store.upsert([make_job(99).evolve(created_at=T0 + timedelta(days=1))])  # a new top job
    assert seen == expected, "pages must follow list order without a gap or a repeat"
    assert seen[-3:] == ["undated2", "undated1", "undated0"]
    running = await store.list(status="running", limit=2, before=(T0 + timedelta(minutes=7), "job00007"))
    assert [j.job_id for j in running] == ["job00006", "job00022"]
    assert [j.job_id for j in await store.list(search="run 2", before=(tie, "job00022"))] == [
        "job00021",
        "job00020",
        "job00002",
    ]
    for bad, offset in (((T0.replace(tzinfo=None), "x"), 0), (("2026", "x"), 0), ((T0,), 0), ((T0, "x"), 1)):
        try:
            await store.list(before=bad, offset=offset)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"before={bad!r} must be refused with ValueError")


async def totals_per_status(store: Store) -> None:
    await store.upsert(
        [
            make_job(1, "completed", cost_usd=1.25),
            make_job(2, "completed", cost_usd=0.75),
            make_job(3, "running", cost_usd=0.5, metadata={"cost_estimate": True}),
            make_job(4, "running"),
        ]
    )
    keys = ("count", "cost", "costed", "estimated")
    totals = {s: {k: t[k] for k in keys} for s, t in (await store.totals()).items()}
    assert totals["completed"] == {"count": 2, "cost": 2.0, "costed": 2, "estimated": 0}
    assert totals["running"] == {"count": 2, "cost": 0.5, "costed": 1, "estimated": 1}
    assert set(await store.totals("run 3")) == {"running"}


async def frame_rows_shape(store: Store) -> None:
    await store.upsert([full_job()], now=T)
    (row,) = await store.frame_rows()
    assert row[0] == full_job().job_id and row[8] == (T - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )
    # ROW_COLUMNS, then HEALTH_COLUMNS: projected finish, projected cost, flags, price per second
    assert row[-4:-2] == (1.5e9, 2.5) and row[-2].replace(" ", "") == '{"stall":1}' and row[-1] is None
    (wide,) = await store.frame_rows_with_inputs()
    assert wide[: len(row)] == row and wide[-1] == "older" and '"steps"' in wide[-3]
    # Plain Python values from both stores (PostgreSQL reads these rows in binary): no Decimal, no bytes.
    assert {type(v).__name__ for v in wide} <= {"str", "int", "float", "NoneType"}, [type(v) for v in wide]


async def health_samples(store: Store) -> None:
    await store.upsert([make_job(1)])
    first = Sample(1.0, 1, 10, math.nan, None, 1)
    out = await store.add_samples({"job00001": first})
    assert len(out["job00001"]) == 1
    await store.add_samples({"job00001": Sample(2.0, 2, 10, 0.5, 1.0, 1)})
    history = await store.history("job00001")
    assert [s.step for s in history] == [1, 2] and math.isnan(history[0].loss) and history[1].loss == 0.5
    assert await store.history("unknown") == []


async def leases(store: Store) -> None:
    assert await store.acquire_lease("poll", "a", 30.0)
    assert not await store.acquire_lease("poll", "b", 30.0)  # a live holder keeps it
    assert await store.acquire_lease("poll", "a", 30.0)  # renewed
    lease = await store.lease("poll")
    assert lease is not None and lease.holder == "a"
    await store.release_lease("poll", "b")  # not b's to release
    assert (await store.lease("poll")).holder == "a"  # type: ignore[union-attr]
    await store.release_lease("poll", "a")
    assert await store.lease("poll") is None
    assert await store.acquire_lease("poll", "c", 0.05)
    await asyncio.sleep(0.2)
    assert await store.acquire_lease("poll", "d", 30.0)  # an expired lease is taken over


CHECKS = [
    round_trip,
    transition_rule_and_revisions,
    concurrent_writers_neither_duplicate_nor_regress,
    webhook_delivery_once,
    failed_delivery_records_nothing,
    list_filters_and_order,
    list_pages_by_cursor,
    totals_per_status,
    frame_rows_shape,
    health_samples,
    leases,
]
