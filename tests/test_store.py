from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobwidget.core.errors import StoreCorruptError, StoreError
from jobwidget.core.models import Job, JobStatus
from jobwidget.engine.stores import SCHEMA_VERSION, JobStore
from jobwidget.engine.stores import sqlite_file as store_mod
from jobwidget.engine.stores.sqlite_rows import _HOST

from .fakes import make_job


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    s = JobStore(":memory:" if request.param == "memory" else tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def test_round_trip_of_every_field(store: JobStore):
    t = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    job = Job(
        job_id="zz4ibbonubfz7carwiefibzgga",
        provider="replicate",
        status=JobStatus.RUNNING,  # an active job: a finished one keeps no stage (merge_job settles it)
        name="Ünïcødé run — 日本語 ✓",
        model="ostris/flux-dev-lora-trainer",
        version="abc123",
        hardware="gpu-h100",
        created_at=t,
        started_at=t + timedelta(seconds=1.5),
        completed_at=t + timedelta(hours=2, microseconds=1),
        cost_usd=12.345678,
        error_message="CUDA out of memory — 😱",
        output={"version": "me/model:123", "weights": "https://example.com/w.tar"},
        web_url="https://replicate.com/p/zz4ibbonubfz7carwiefibzgga",
        stage="Training",
        progress=42.42,
        last_log="step 42/100",
        metadata={"inline": {"step": 42, "total_steps": 100}, "provider_status": "processing"},
    )
    store.upsert([job], now=t)
    got = store.get(job.job_id)
    assert got == job.evolve(updated_at=t)
    assert got.created_at.tzinfo is UTC and got.completed_at.microsecond == 123457
    empty = Job(job_id="bare", provider="replicate", status="pending")
    store.upsert([empty], now=t)
    bare = store.get("bare")
    assert bare == empty.evolve(updated_at=t)
    assert bare.name is None and bare.output is None and bare.metadata == {}


def test_upsert_reports_created_updated_unchanged_and_revision(store: JobStore):
    r1 = store.upsert([make_job(1, "queued"), make_job(2, "running")])
    assert [j.job_id for j in r1.created] == ["job00001", "job00002"] and r1.rev == 1
    r2 = store.upsert([make_job(1, "running"), make_job(2, "running")])
    assert r2.created == [] and r2.unchanged == 1
    assert [(b.status.value, a.status.value) for b, a in r2.updated] == [("queued", "running")]
    assert r2.rev == 2 == store.revision()
    rev, changed = store.changes_since(1)
    assert rev == 2 and [j.job_id for j in changed] == ["job00001"]
    assert store.upsert([make_job(2, "running")]).rev == 2  # nothing changed, no new revision


def test_upsert_applies_transition_rule_inside_the_store(store: JobStore):
    store.upsert([make_job(1, "completed", cost_usd=1.0)])
    result = store.upsert([make_job(1, "running", progress=50.0)])
    assert result.updated == [] and result.unchanged == 1
    assert store.get("job00001").status is JobStatus.COMPLETED
    # two updates of one job in one batch fold in order
    store.upsert([make_job(3, "running"), make_job(3, "failed"), make_job(3, "running")])
    assert store.get("job00003").status is JobStatus.FAILED


def test_list_filters_and_orders_newest_first(store: JobStore):
    store.upsert([make_job(i, "running" if i % 3 else "completed") for i in range(10)])
    running = store.list(status="running", limit=None)
    assert [j.job_id for j in running] == [f"job{i:05d}" for i in range(9, -1, -1) if i % 3]
    assert len(store.list(limit=4)) == 4 and store.list(limit=4)[0].job_id == "job00009"
    assert len(store.list(status=["completed", JobStatus.RUNNING], limit=None)) == 10
    assert store.list(provider="other", limit=None) == []
    assert {j.status for j in store.active()} == {JobStatus.RUNNING}
    assert store.count(status="completed") == 4
    with pytest.raises(ValueError, match="bogus"):
        store.list(status="bogus")


def test_schema_has_version_wal_and_indexes(tmp_path: Path):
    s = JobStore(tmp_path / "j.sqlite3")
    s.close()
    conn = sqlite3.connect(tmp_path / "j.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"jobs_status_created", "jobs_created"} <= indexes
    plan = " ".join(
        str(r)
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE status IN ('running') ORDER BY created_at DESC"
        )
    )
    assert "jobs_status_created" in plan
    conn.close()


def test_migration_path_runs_each_step_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "old.sqlite3"
    JobStore(path).upsert([make_job(1)])
    # A future schema version adds a column; an existing store migrates in place, data kept.
    future = SCHEMA_VERSION + 1
    migrations = dict(store_mod._MIGRATIONS)
    migrations[future] = ("ALTER TABLE jobs ADD COLUMN note TEXT",)
    monkeypatch.setattr(store_mod, "_MIGRATIONS", migrations)
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", future)
    s = JobStore(path)
    assert s.get("job00001") is not None
    s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == future
    assert "note" in {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    conn.close()
    JobStore(path).close()  # already migrated: nothing re-runs (ALTER would fail if it did)


def test_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "new.sqlite3"
    JobStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer jobwidget"):
        JobStore(path)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database at all\n" * 10,
        b"\x00\xff" * 4096,
        b"SQLite format 3\x00" + b"\xde\xad" * 2000,
    ],
    ids=["text", "binary", "damaged-sqlite"],
)
def test_corrupt_file_gets_clear_error_and_is_left_untouched(tmp_path: Path, content: bytes):
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(content)
    before = path.stat().st_mtime_ns
    with pytest.raises(StoreCorruptError) as info:
        JobStore(path)
    message = str(info.value)
    assert str(path) in message and "left untouched" in message and "Move it aside" in message
    assert path.read_bytes() == content and path.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.sqlite3"]  # no -wal/-shm left behind


def test_foreign_sqlite_database_is_refused(tmp_path: Path):
    path = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorruptError, match="another application"):
        JobStore(path)


def test_directory_path_is_refused(tmp_path: Path):
    with pytest.raises(StoreCorruptError, match="directory"):
        JobStore(tmp_path)


def test_lease_is_exclusive_expires_and_dead_holder_is_taken_over(tmp_path: Path):
    s = JobStore(tmp_path / "l.sqlite3")
    assert s.acquire_lease("poller", "a", ttl=30, now=1000)
    assert not s.acquire_lease("poller", "b", ttl=30, now=1010)
    assert s.acquire_lease("poller", "a", ttl=30, now=1020)  # renewal
    assert s.acquire_lease("poller", "b", ttl=30, now=1051)  # expired
    assert s.lease("poller").holder == "b"
    s.release_lease("poller", "b")
    assert s.lease("poller") is None
    # a holder whose process is gone is taken over before its lease runs out
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with s._write() as conn:
        conn.execute(
            "INSERT INTO leases VALUES ('poller', 'ghost', ?, ?, ?)",
            (time.time() + 600, dead.pid, _HOST),
        )
    assert s.acquire_lease("poller", "c", ttl=30)
    s.close()


def _writer(path: str, worker: int, n: int, shared: int, barrier) -> None:
    s = JobStore(path)
    barrier.wait()
    for i in range(n):
        # half the ids are shared by every worker (contended upserts), half are the worker's own
        job_id = f"shared{(i // 2) % shared:04d}" if i % 2 else f"w{worker}-{i:04d}"
        s.upsert([Job(job_id=job_id, provider="replicate", status="running", progress=float(i))])
    s.close()


def test_four_processes_500_concurrent_upserts_each(tmp_path: Path):
    path = str(tmp_path / "c.sqlite3")
    JobStore(path).close()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_writer, args=(path, w, 500, 50, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]  # no "database is locked" reached anyone
    s = JobStore(path)
    ids = [j.job_id for j in s.list(limit=None)]
    assert len(ids) == len(set(ids)) == 4 * 250 + 50
    assert s.integrity_check() == "ok"
    s.close()


_KILL_SCRIPT = """
import sys
from jobwidget.core.models import Job
from jobwidget.engine.stores import JobStore
s = JobStore(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    s.upsert([Job(job_id=f"k{(i * 7 + n) % 3000}", provider="replicate", status="running", progress=float(n),
                  last_log="x" * 200) for n in range(50)])
    i += 1
"""


def test_sigkill_mid_write_leaves_an_intact_store(tmp_path: Path):
    path = tmp_path / "k.sqlite3"
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + 0.1 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT job_id) FROM jobs").fetchone()
        assert total == distinct > 0
        conn.close()
    s = JobStore(path)  # the next start opens it normally
    assert s.integrity_check() == "ok"
    s.close()


def test_threads_share_a_file_store(tmp_path: Path):
    import threading

    s = JobStore(tmp_path / "t.sqlite3")
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(100):
                s.upsert([make_job(k * 1000 + i)])
                s.list(limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and s.count() == 400
    s.close()


def _foreign_files(tmp_path: Path) -> dict[str, Path]:
    """Other applications' SQLite files: rollback journal, WAL (closed cleanly), with an application id."""
    made = {}
    for name, setup in {
        "rollback": [
            "CREATE TABLE customers (id INTEGER, name TEXT)",
            "INSERT INTO customers VALUES (1, 'a')",
        ],
        "wal": [
            "PRAGMA journal_mode = WAL",
            "CREATE TABLE notes (body TEXT)",
            "INSERT INTO notes VALUES ('x')",
        ],
        "app-id": ["PRAGMA application_id = 1234", "CREATE TABLE t (x)"],
        "versioned": [
            "PRAGMA user_version = 7",
            "CREATE TABLE jobs (job_id TEXT)",
        ],  # a `jobs` table, not ours
    }.items():
        path = tmp_path / f"{name}.sqlite3"
        conn = sqlite3.connect(path)
        for statement in setup:
            conn.execute(statement)
        conn.commit()
        conn.close()
        made[name] = path
    return made


def test_another_applications_sqlite_file_is_left_byte_identical(tmp_path: Path):
    """Regression: opening switched the file to WAL (header bytes 18-19 change, -wal/-shm appear) before
    the application id and tables were checked and the file refused."""
    for name, path in _foreign_files(tmp_path).items():
        before = path.read_bytes()
        files = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(StoreCorruptError, match="another application") as info:
            JobStore(path)
        assert "left untouched" in str(info.value), name
        assert path.read_bytes() == before, f"{name}: the file changed"
        assert sorted(p.name for p in tmp_path.iterdir()) == files, f"{name}: files appeared beside it"


def test_a_new_store_killed_before_its_first_checkpoint_still_opens(tmp_path: Path):
    """A jobwidget store whose first writes are still in its WAL (the header shows no application id
    yet) is recognised by looking inside, not refused."""
    path = tmp_path / "fresh.sqlite3"
    code = (
        "import os, sys; from jobwidget.engine.stores import JobStore; from tests.fakes import make_job\n"
        "s = JobStore(sys.argv[1]); s.upsert([make_job(1)]); os._exit(0)  # no close: no checkpoint\n"
    )
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=repo, timeout=60)
    assert path.with_name(path.name + "-wal").exists()
    with JobStore(path) as store:
        assert store.get("job00001") is not None


def test_an_empty_sqlite_file_becomes_a_store(tmp_path: Path):
    path = tmp_path / "empty.sqlite3"
    sqlite3.connect(path).close()  # an SQLite file with no tables (0 bytes until something is written)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")
    conn.execute("VACUUM")  # writes a header: a real, empty database
    conn.close()
    with JobStore(path) as store:
        store.upsert([make_job(1)])
        assert store.count() == 1
