"""The durable job store: SQLite (standard library) in WAL mode.

Why SQLite and these choices:
- WAL lets the panel's reads, `to_dataframe()` and a second notebook's reads run while the engine writes.
- Every upsert runs the transition rule (`merge_job`) inside one `BEGIN IMMEDIATE` transaction, so two
  processes writing the same job at once can neither duplicate it nor move a finished job back to running.
- Each write bumps a store revision and stamps the rows it changed, so another process can follow the
  store's changes cheaply (`changes_since`) instead of calling the provider itself.
- Datetimes are stored as integer microseconds since the epoch (UTC): exact round trips, cheap sorting,
  and a zero-copy path into pandas.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import math
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from jobwidget.core.columns import HEALTH_COLUMNS, ROW_COLUMNS
from jobwidget.core.errors import StoreCorruptError, StoreError
from jobwidget.core.health import HISTORY_POINTS, Sample, add_sample
from jobwidget.core.models import ACTIVE_STATUSES, Job, JobStatus, merge_job
from jobwidget.engine.stores.base import JobState, Lease, UpsertResult, fold_updates
from jobwidget.engine.stores.query import narrowing

__all__ = ["SCHEMA_VERSION", "JobStore", "SQLiteStore"]

SCHEMA_VERSION = 4
APPLICATION_ID = 0x4A574731  # "JWG1": marks a file as a jobwidget store
_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_BYTES = 100  # SQLite's file header: application_id at offset 68
_LOCK_BUDGET_S = 30.0  # how long a writer waits for another process before the user hears about it
_BATCH = 500  # SQLite's variable limit is 32766 on modern builds; smaller batches keep each query cheap
# Webhook ids are kept this long: far beyond the 5-minute timestamp tolerance and Replicate's ~1-minute
# retries, so any duplicate that could still pass verification is recognised.
WEBHOOK_RETENTION_S = 86_400.0

# Columns in storage order; `_row_to_job` relies on it.
_COLUMNS = (
    "job_id",
    "provider",
    "status",
    "name",
    "model",
    "version",
    "hardware",
    "created_at",
    "started_at",
    "completed_at",
    "cost_usd",
    "error_message",
    "output",
    "web_url",
    "stage",
    "progress",
    "last_log",
    "updated_at",
    "metadata",
    "inputs",
    "retry_of",
)
_JSON_COLUMNS = frozenset({"output", "metadata", "inputs"})
_DATETIME_COLUMNS = frozenset({"created_at", "started_at", "completed_at", "updated_at"})
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
_ORDER = "ORDER BY created_at DESC, job_id DESC"  # SQLite sorts NULL lowest: undated jobs come last

# Migrations: version -> statements taking the store from version-1 to version. Never edit a shipped
# entry; append a new one (and bump SCHEMA_VERSION) instead.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            status TEXT NOT NULL,
            name TEXT, model TEXT, version TEXT, hardware TEXT,
            created_at INTEGER, started_at INTEGER, completed_at INTEGER,
            cost_usd REAL, error_message TEXT, output TEXT, web_url TEXT,
            stage TEXT, progress REAL, last_log TEXT,
            updated_at INTEGER,
            metadata TEXT NOT NULL DEFAULT '{}',
            rev INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX jobs_status_created ON jobs (status, created_at DESC, job_id DESC)",
        "CREATE INDEX jobs_created ON jobs (created_at DESC, job_id DESC)",
        "CREATE INDEX jobs_rev ON jobs (rev)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('rev', '0')",
        """
        CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at REAL NOT NULL,
            pid INTEGER,
            host TEXT
        )
        """,
    ),
    # Webhook deliveries already applied, so a retried delivery (same webhook-id) is applied once, across
    # restarts and across processes sharing the store.
    2: (
        """
        CREATE TABLE webhook_deliveries (
            webhook_id TEXT PRIMARY KEY,
            received_at REAL NOT NULL,
            job_id TEXT
        )
        """,
        "CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at)",
    ),
    # What each training was started with (to compare and retry runs), the job a retry came from, and
    # an index for `list(model=...)`: one trainer's runs, newest first, without scanning the table.
    3: (
        "ALTER TABLE jobs ADD COLUMN inputs TEXT",
        "ALTER TABLE jobs ADD COLUMN retry_of TEXT",
        "CREATE INDEX jobs_model_created ON jobs (model, created_at DESC, job_id DESC)",
    ),
    # Run health: each job's progress reads (time, step, total, loss, rate), downsampled to a few
    # hundred per job (core/health.py). SQLite stores a NaN REAL as NULL, so a NaN loss is its own bit.
    4: (
        """
        CREATE TABLE health_samples (
            job_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            t REAL NOT NULL,
            step INTEGER, total INTEGER, loss REAL,
            loss_nan INTEGER NOT NULL DEFAULT 0,
            rate REAL,
            n INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (job_id, idx)
        ) WITHOUT ROWID
        """,
    ),
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _to_us(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _US


def _from_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


_CONTENT_FIELDS = tuple(c for c in _COLUMNS if c != "updated_at")


def _content(job: Job) -> tuple[Any, ...]:
    """Everything but `updated_at`: an upsert that changes none of it is a no-op."""
    return tuple(getattr(job, name) for name in _CONTENT_FIELDS)


def _job_to_row(job: Job) -> tuple[Any, ...]:
    out: list[Any] = []
    for name in _COLUMNS:
        value = getattr(job, name)
        if name in _DATETIME_COLUMNS:
            value = _to_us(value)
        elif name == "status":
            value = value.value
        elif name in _JSON_COLUMNS:
            value = None if value is None else json.dumps(dict(value), ensure_ascii=False, default=str)
        out.append(value)
    return tuple(out)


def _row_to_job(row: Sequence[Any]) -> Job:
    values = dict(zip(_COLUMNS, row, strict=True))
    for name in _DATETIME_COLUMNS:
        values[name] = _from_us(values[name])
    values["output"] = None if values["output"] is None else json.loads(values["output"])
    values["metadata"] = json.loads(values["metadata"]) if values["metadata"] else {}
    values["inputs"] = None if values["inputs"] is None else json.loads(values["inputs"])
    return Job.from_checked(values)  # written from a checked Job: not cleaned a second time


def _revision(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'rev'").fetchone()[0])


_HOST = socket.gethostname()


def _holder_dead(pid: int | None, host: str | None) -> bool:
    """A lease holder on this machine whose process is gone need not be waited out."""
    if pid is None or host != _HOST or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class JobStore:
    """A job store at `path` (a file, or ":memory:" for tests). Thread-safe; one per process and path.

    File stores give each thread its own connection (WAL readers never wait for the writer); an
    in-memory store has one connection behind a lock, since it cannot be shared across connections.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.is_memory = str(path) == ":memory:"
        self.path = ":memory:" if self.is_memory else Path(path).expanduser()
        self._local = threading.local()
        self._lock = threading.RLock()  # serialises the single in-memory connection
        self._all: list[sqlite3.Connection] = []
        self._closed = False
        if not self.is_memory:
            self._check_file()
            assert isinstance(self.path, Path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._shared: sqlite3.Connection | None = self._open() if self.is_memory else None
        self._migrate()

    # -- connections -------------------------------------------------------------------------

    def _check_file(self) -> None:
        """Refuse anything at the path that is not a jobwidget store before a byte of it changes.

        Opening in WAL mode rewrites the header, so the identity (SQLite header, `application_id`,
        tables) is read first: from the header bytes, and when those cannot tell (an SQLite file without
        an application id), through a read-only connection that creates no side file.
        """
        assert isinstance(self.path, Path)
        if not self.path.exists():
            return
        if self.path.is_dir():
            raise StoreCorruptError(
                f"the job store path {self.path} is a directory. Point Jobs(store=...) or JOBWIDGET_STORE "
                "at a file path instead."
            )
        try:
            with self.path.open("rb") as fh:
                head = fh.read(_HEADER_BYTES)
        except OSError as exc:
            raise StoreError(f"cannot read the job store {self.path}: {exc.strerror or exc}") from None
        if not head:
            return  # an empty file: SQLite makes it a new database
        if not head.startswith(_SQLITE_MAGIC):
            raise self._corrupt("is not an SQLite database")
        page_size = int.from_bytes(head[16:18], "big")
        if len(head) < _HEADER_BYTES or head[21:24] != b"\x40\x20\x20" or page_size & (page_size - 1):
            raise self._corrupt("is a damaged SQLite database (its header is not valid)")
        app_id = int.from_bytes(head[68:72], "big")
        if app_id == APPLICATION_ID:
            return
        if app_id != 0:
            raise self._corrupt("is an SQLite database of another application, not a jobwidget store")
        # No application id in the header: a new store whose first writes are still in its WAL, an empty
        # database, or another application's file. Only a look inside can tell.
        app_id, tables = self._inspect_read_only()
        if app_id != APPLICATION_ID and (app_id != 0 or tables):  # every jobwidget schema sets the id
            raise self._corrupt("is an SQLite database of another application, not a jobwidget store")

    def _inspect_read_only(self) -> tuple[int, set[str]]:
        """(application_id, table names) without writing: `immutable` when there is no WAL
        to read (a read-only WAL reader would otherwise leave -wal and -shm files behind)."""
        assert isinstance(self.path, Path)
        wal = self.path.with_name(self.path.name + "-wal")
        uri = self.path.resolve().as_uri() + ("?mode=ro" if wal.exists() else "?mode=ro&immutable=1")
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=_LOCK_BUDGET_S)
        except sqlite3.Error as exc:
            raise self._corrupt(f"cannot be opened ({exc})") from None
        try:
            app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and _is_lock_error(exc):
                raise StoreError(f"the job store {self.path} is locked by another process: {exc}") from None
            raise self._corrupt(f"cannot be read as a jobwidget store ({exc})") from None
        finally:
            conn.close()
        return app_id, tables

    def _corrupt(self, what: str) -> StoreCorruptError:
        return StoreCorruptError(
            f"the job store {self.path} {what}. It was left untouched. Move it aside (jobwidget will start "
            "a new store and `jobs.sync()` rediscovers your provider's jobs), or point Jobs(store=...) or "
            "JOBWIDGET_STORE at another path."
        )

    def _open(self) -> sqlite3.Connection:
        """A configured connection. Opening races other processes creating or switching the same file to
        WAL (SQLite answers "locked" at once there, without its busy handler): retry within the budget."""
        deadline = time.monotonic() + _LOCK_BUDGET_S
        delay = 0.01
        while True:
            try:
                conn = self._connect()
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc):
                    raise self._corrupt(f"cannot be opened as a jobwidget store ({exc})") from None
                if time.monotonic() + delay > deadline:
                    raise StoreError(
                        f"the job store {self.path} is locked by another process: {exc}"
                    ) from None
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.5)
                continue
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(f"cannot be opened as a jobwidget store ({exc})") from None
            self._all.append(conn)
            return conn

    def _connect(self) -> sqlite3.Connection:
        target = ":memory:" if self.is_memory else str(self.path)
        conn = sqlite3.connect(
            target,
            timeout=_LOCK_BUDGET_S,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # one connection per thread; close() may run on another
        )
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            if not self.is_memory:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")  # durable across app crashes in WAL mode
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the job store is closed")
        if self._shared is not None:
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
        return conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock if self.is_memory else contextlib.nullcontext():
            try:
                yield self._conn()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and _is_lock_error(exc):
                    raise StoreError(f"the job store {self.path} stayed locked: {exc}") from None
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreError(f"reading the job store {self.path} failed: {exc}") from None
                raise self._corrupt(f"is damaged ({exc})") from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction, retried while another process holds the write lock."""
        deadline = time.monotonic() + _LOCK_BUDGET_S
        delay = 0.005
        with self._lock if self.is_memory else contextlib.nullcontext():
            conn = self._conn()
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if not _is_lock_error(exc) or time.monotonic() > deadline:
                        raise StoreError(
                            f"the job store {self.path} stayed locked by another process for over "
                            f"{_LOCK_BUDGET_S:.0f} s; nothing was written"
                        ) from None
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 0.25)
                except sqlite3.DatabaseError as exc:
                    raise self._corrupt(f"is damaged ({exc})") from None
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._read() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the job store {self.path} has schema version {version}, written by a newer jobwidget "
                f"(this one knows up to {SCHEMA_VERSION}). Upgrade jobwidget, or use another store path."
            )
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
            raise self._corrupt("is an SQLite database of another application, not a jobwidget store")
        if version == SCHEMA_VERSION:
            return
        with self._write() as conn:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            for target in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, jobs: Iterable[Job], *, now: datetime | None = None) -> UpsertResult:
        """Insert new jobs and merge updates into known ones, atomically, applying the transition rule."""
        incoming = fold_updates(jobs)
        if not incoming:
            return UpsertResult(rev=self.revision())
        with self._write() as conn:
            return self._upsert_in(conn, incoming, now or datetime.now(UTC))

    def upsert_delivery(
        self,
        webhook_id: str,
        jobs: Iterable[Job],
        *,
        now: datetime | None = None,
        keep: float = WEBHOOK_RETENTION_S,
    ) -> UpsertResult:
        """Apply webhook delivery `webhook_id` once: its jobs and the record of the id in ONE transaction.

        A retried delivery (an id recorded before) changes nothing (`duplicate=True`). Because the record
        and the update commit together, a crash or an error anywhere in between leaves neither, and the
        provider's retry is applied instead of being taken for a duplicate. Ids older than `keep` seconds
        are pruned in the same transaction, so the table stays small.
        """
        incoming = fold_updates(jobs)
        stamp = now or datetime.now(UTC)
        t = stamp.timestamp()
        job_id = next(iter(incoming), None)
        with self._write() as conn:
            conn.execute("DELETE FROM webhook_deliveries WHERE received_at < ?", (t - keep,))
            fresh = conn.execute(
                "INSERT INTO webhook_deliveries (webhook_id, received_at, job_id) VALUES (?, ?, ?) "
                "ON CONFLICT (webhook_id) DO NOTHING",
                (webhook_id, t, job_id),
            ).rowcount
            if fresh != 1:
                return UpsertResult(rev=_revision(conn), duplicate=True)
            return self._upsert_in(conn, incoming, stamp)

    def delivery_seen(self, webhook_id: str) -> bool:
        """Whether delivery `webhook_id` was applied (and is still within the retention)."""
        with self._read() as conn:
            row = conn.execute("SELECT 1 FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
            return row.fetchone() is not None

    def _upsert_in(self, conn: sqlite3.Connection, incoming: dict[str, Job], stamp: datetime) -> UpsertResult:
        created: list[Job] = []
        updated: list[tuple[Job, Job]] = []
        unchanged = 0
        existing = self._fetch_many(conn, list(incoming))
        rows: list[tuple[Any, ...]] = []
        for job_id, job in incoming.items():
            before = existing.get(job_id)
            after = merge_job(before, job)
            if before is not None and _content(after) == _content(before):
                unchanged += 1
                continue
            after = after.evolve(updated_at=stamp)
            rows.append(_job_to_row(after))
            if before is None:
                created.append(after)
            else:
                updated.append((before, after))
        rev = _revision(conn)
        if rows:
            rev += 1
            conn.execute("UPDATE meta SET value = ? WHERE key = 'rev'", (str(rev),))
            placeholders = ", ".join("?" * (len(_COLUMNS) + 1))
            assignments = ", ".join(f"{c} = excluded.{c}" for c in (*_COLUMNS[1:], "rev"))
            conn.executemany(
                f"INSERT INTO jobs ({', '.join(_COLUMNS)}, rev) VALUES ({placeholders}) "
                f"ON CONFLICT (job_id) DO UPDATE SET {assignments}",
                [(*row, rev) for row in rows],
            )
        return UpsertResult(created=created, updated=updated, unchanged=unchanged, rev=rev)

    def _fetch_many(self, conn: sqlite3.Connection, job_ids: list[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for i in range(0, len(job_ids), _BATCH):
            chunk = job_ids[i : i + _BATCH]
            query = f"{_SELECT} WHERE job_id IN ({', '.join('?' * len(chunk))})"
            for row in conn.execute(query, chunk):
                found[row[0]] = _row_to_job(row)
        return found

    # -- reads -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self._read() as conn:
            row = conn.execute(f"{_SELECT} WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _row_to_job(row)

    def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        with self._read() as conn:
            return self._fetch_many(conn, list(dict.fromkeys(job_ids)))

    def list(
        self,
        *,
        status: str | JobStatus | Iterable[str | JobStatus] | None = None,
        provider: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
        model: str | Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
    ) -> builtins.list[Job]:
        """Jobs newest first, filtered by status (one or several), provider, trainer `model` (one or
        several), creation time (`created_after <= created_at < created_before`; undated jobs are left
        out when either is given) and `search`, a substring of the id, name or model (as `totals`)."""
        where, params = self._filters(status, provider)
        more, more_params = narrowing(model, created_after, created_before, search)
        if more:
            where = f"{where} AND {more}" if where else f" WHERE {more}"
            params += more_params
        query = f"{_SELECT}{where} {_ORDER}"
        if limit is not None:
            query += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        with self._read() as conn:
            return [_row_to_job(row) for row in conn.execute(query, params)]

    def active(self, provider: str | None = None) -> builtins.list[Job]:
        return self.list(status=ACTIVE_STATUSES, provider=provider, limit=None)

    def count(self, *, status: str | JobStatus | Iterable[str | JobStatus] | None = None) -> int:
        where, params = self._filters(status, None)
        with self._read() as conn:
            return int(conn.execute(f"SELECT count(*) FROM jobs{where}", params).fetchone()[0])

    def newer_counts(self, created: Iterable[datetime | None]) -> builtins.list[int]:
        """For each creation time, how many stored jobs are newer: where a job sits in the provider's
        newest-first list (a lower bound when the store has not seen all of history)."""
        out: builtins.list[int] = []
        with self._read() as conn:
            for at in created:
                us = _to_us(at)
                if us is None:
                    out.append(0)
                    continue
                row = conn.execute("SELECT count(*) FROM jobs WHERE created_at > ?", (us,)).fetchone()
                out.append(int(row[0]))
        return out

    def totals(self, search: str | None = None) -> dict[str, dict[str, Any]]:
        """Per status, over every job (not a page of them) whose id, name or model contains `search`:
        `count`, summed `cost` (USD, running estimates at the time of the read), `costed` (jobs with a
        cost) and `estimated` (active jobs whose cost is an estimate so far); the clock-free parts of
        `cost`: `billed` (stored costs) plus `rate` x now - `rate_t0` (running jobs' summed price per
        second, and summed price x start in epoch seconds). One query; statuses with no job are left out.

        The match is a substring match, case-insensitive for ASCII letters (SQLite's LIKE); `%`, `_` and
        `\\` in `search` match themselves. A blank `search` counts every job.
        """
        active = [s.value for s in ACTIVE_STATUSES]
        params: builtins.list[Any] = list(active)
        where = ""
        text = (search or "").strip()
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where = " WHERE " + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in ("job_id", "name", "model"))
            params += [pattern] * 3
        # A running job with a stored price costs (now - started) x price so far: summed as rate x now -
        # sum(price x started), so the clock-free parts (`billed`, `rate`, `rate_t0`) can travel and be
        # ticked by whoever shows them, and `cost` is that sum at the time of this read.
        ticking = (
            "(status = 'running' AND started_at IS NOT NULL AND json_extract(metadata, '$.price_per_s') > 0)"
        )
        query = (
            f"SELECT status, count(*), total(CASE WHEN {ticking} THEN NULL ELSE cost_usd END), "
            f"sum(CASE WHEN {ticking} OR cost_usd IS NOT NULL THEN 1 ELSE 0 END), "
            f"sum(CASE WHEN status IN ({', '.join('?' * len(active))}) AND ({ticking} OR "
            "(cost_usd IS NOT NULL AND json_extract(metadata, '$.cost_estimate'))) THEN 1 ELSE 0 END), "
            f"total(CASE WHEN {ticking} THEN json_extract(metadata, '$.price_per_s') END), "
            f"total(CASE WHEN {ticking} THEN json_extract(metadata, '$.price_per_s') * started_at / 1e6 END) "
            f"FROM jobs{where} GROUP BY status"
        )
        with self._read() as conn:
            rows = conn.execute(query, params).fetchall()
        now = time.time()
        out: dict[str, dict[str, Any]] = {}
        for status, n, billed, c, e, rate, rate_t0 in rows:
            running = max(0.0, rate * now - rate_t0) if rate else 0.0
            out[str(status)] = {
                "count": int(n),
                "cost": round(float(billed) + running, 6),
                "costed": int(c),
                "estimated": int(e),
                "billed": round(float(billed), 6),
                "rate": float(rate),
                "rate_t0": float(rate_t0),
            }
        return out

    @staticmethod
    def _filters(
        status: str | JobStatus | Iterable[str | JobStatus] | None, provider: str | None
    ) -> tuple[str, builtins.list[Any]]:
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            values = [JobStatus(s).value for s in statuses]  # ValueError names a bad status
            clauses.append(f"status IN ({', '.join('?' * len(values))})")
            params += values
        if provider is not None:
            clauses.append("provider = ?")
            params.append(provider)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def revision(self) -> int:
        with self._read() as conn:
            return _revision(conn)

    def changes_since(self, rev: int) -> tuple[int, builtins.list[Job]]:
        """Jobs written after store revision `rev`, and the current revision (for followers)."""
        with self._read() as conn:
            conn.execute("BEGIN")  # one snapshot for both reads
            try:
                current = _revision(conn)
                rows = conn.execute(f"{_SELECT} WHERE rev > ? {_ORDER}", (rev,)).fetchall()
            finally:
                conn.execute("COMMIT")
        return current, [_row_to_job(row) for row in rows]

    def changes_in_order(self, rev: int) -> tuple[int, builtins.list[tuple[int, Job]]]:
        """(current revision, [(revision, job)] for jobs written after `rev`, oldest write first): what an
        event stream replays to a client that last saw revision `rev`."""
        with self._read() as conn:
            conn.execute("BEGIN")
            try:
                current = _revision(conn)
                rows = conn.execute(
                    f"SELECT rev, {', '.join(_COLUMNS)} FROM jobs WHERE rev > ? ORDER BY rev, job_id", (rev,)
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        return current, [(int(r[0]), _row_to_job(r[1:])) for r in rows]

    def states(
        self, *, active_only: bool = False
    ) -> tuple[int, dict[str, tuple[JobStatus, str | None, float | None, str | None]]]:
        """(revision, job_id -> (status, stage, progress, last_log)): what a follower starts from.

        `active_only`: of active jobs only, read through the status index, so a follower starts in a time
        that does not grow with the store's history (a finished job's state does not move)."""
        query = "SELECT job_id, status, stage, progress, last_log FROM jobs"
        params: builtins.list[Any] = []
        if active_only:
            active = [s.value for s in ACTIVE_STATUSES]
            query += f" WHERE status IN ({', '.join('?' * len(active))})"
            params = active
        with self._read() as conn:
            conn.execute("BEGIN")
            try:
                current = _revision(conn)
                rows = conn.execute(query, params).fetchall()
            finally:
                conn.execute("COMMIT")
        return current, {r[0]: (JobStatus(r[1]), r[2], r[3], r[4]) for r in rows}

    def frame_rows(self) -> builtins.list[tuple[Any, ...]]:
        """Raw rows for `to_dataframe()` (datetimes as epoch µs), newest first, without building Jobs."""
        with self._read() as conn:
            columns = ", ".join([*ROW_COLUMNS, *HEALTH_COLUMNS.values()])
            return conn.execute(f"SELECT {columns} FROM jobs {_ORDER}").fetchall()

    def frame_rows_with_inputs(self) -> builtins.list[tuple[Any, ...]]:
        """`frame_rows()` with each job's inputs, output (JSON text) and retry_of appended, in one read."""
        columns = ", ".join((*ROW_COLUMNS, *HEALTH_COLUMNS.values(), "inputs", "output", "retry_of"))
        with self._read() as conn:
            return conn.execute(f"SELECT {columns} FROM jobs {_ORDER}").fetchall()

    def integrity_check(self) -> str:
        with self._read() as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])

    # -- run health: each job's downsampled progress history ---------------------------------------

    @staticmethod
    def _samples(conn: sqlite3.Connection, job_id: str) -> builtins.list[Sample]:
        rows = conn.execute(
            "SELECT t, step, total, loss, loss_nan, rate, n FROM health_samples "
            "WHERE job_id = ? ORDER BY idx",
            (job_id,),
        ).fetchall()
        return [
            Sample(t, step, total, math.nan if nan else loss, rate, n)
            for t, step, total, loss, nan, rate, n in rows
        ]

    def history(self, job_id: str) -> builtins.list[Sample]:
        """The job's progress history, oldest first (empty if it was never read while running)."""
        with self._read() as conn:
            return self._samples(conn, job_id)

    def add_samples(
        self, samples: Mapping[str, Sample], *, limit: int = HISTORY_POINTS
    ) -> dict[str, builtins.list[Sample]]:
        """Append one sample per job (downsampled, see `core.health.add_sample`) in one transaction; the
        histories as they now stand. Only rows from the first one that changed are rewritten."""
        out: dict[str, builtins.list[Sample]] = {}
        if not samples:
            return out
        with self._write() as conn:
            for job_id, sample in samples.items():
                old = self._samples(conn, job_id)
                new = add_sample(old, sample, limit)
                same = 0
                while same < min(len(old), len(new)) and _same_sample(old[same], new[same]):
                    same += 1
                if same < len(old):
                    conn.execute("DELETE FROM health_samples WHERE job_id = ? AND idx >= ?", (job_id, same))
                conn.executemany(
                    "INSERT INTO health_samples (job_id, idx, t, step, total, loss, loss_nan, rate, n) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (job_id, i, s.t, s.step, s.total, None if s.nan else s.loss, int(s.nan), s.rate, s.n)
                        for i, s in enumerate(new[same:], start=same)
                    ],
                )
                out[job_id] = new
        return out

    # -- the poll lease (one poller per store across processes) --------------------------------

    def acquire_lease(self, name: str, holder: str, ttl: float, *, now: float | None = None) -> bool:
        """Take or renew lease `name` for `holder` for `ttl` seconds; False while someone else holds it."""
        t = time.time() if now is None else now
        with self._write() as conn:
            row = conn.execute(
                "SELECT holder, expires_at, pid, host FROM leases WHERE name = ?", (name,)
            ).fetchone()
            if row is not None and row[0] != holder and row[1] > t and not _holder_dead(row[2], row[3]):
                return False
            conn.execute(
                "INSERT INTO leases (name, holder, expires_at, pid, host) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,"
                " pid = excluded.pid, host = excluded.host",
                (name, holder, t + ttl, os.getpid(), _HOST),
            )
        return True

    def release_lease(self, name: str, holder: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def lease(self, name: str) -> Lease | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT name, holder, expires_at, pid, host FROM leases WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else Lease(*row)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection this store opened (in every thread)."""
        self._closed = True
        for conn in self._all:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._all.clear()
        self._shared = None

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JobStore({str(self.path)!r})"


def _same_sample(a: Sample, b: Sample) -> bool:
    return (a.t, a.step, a.total, a.rate, a.nan, a.n) == (b.t, b.step, b.total, b.rate, b.nan, b.n) and (
        a.nan or a.loss == b.loss
    )


T = TypeVar("T")
_CLOSE_WAIT_S = 30.0  # bounded: a call stuck longer than this is not waited for


class SQLiteStore:
    """The `Store` protocol over a `JobStore`: each call runs on a worker thread, never on the loop.

    SQLite has no async driver worth its cost; its calls take microseconds to milliseconds, and a worker
    thread keeps even a 100,000-row export off the engine loop. `sync` is the blocking store itself.
    """

    def __init__(self, store: JobStore) -> None:
        self.sync = store
        self.location = str(store.path)
        self._busy = 0  # calls running on worker threads: closing waits for them
        self._idle = threading.Condition()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def run() -> T:
            with self._idle:
                self._busy += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        return await asyncio.to_thread(run)

    async def upsert(self, jobs: Iterable[Job], *, now: datetime | None = None) -> UpsertResult:
        return await self._call(self.sync.upsert, list(jobs), now=now)

    async def upsert_delivery(
        self, webhook_id: str, jobs: Iterable[Job], *, now: datetime | None = None
    ) -> UpsertResult:
        return await self._call(self.sync.upsert_delivery, webhook_id, list(jobs), now=now)

    async def delivery_seen(self, webhook_id: str) -> bool:
        return await self._call(self.sync.delivery_seen, webhook_id)

    async def get(self, job_id: str) -> Job | None:
        return await self._call(self.sync.get, job_id)

    async def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        return await self._call(self.sync.get_many, list(job_ids))

    async def list(
        self,
        *,
        status: str | JobStatus | Iterable[str | JobStatus] | None = None,
        provider: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
        model: str | Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
    ) -> builtins.list[Job]:
        return await self._call(
            self.sync.list,
            status=status,
            provider=provider,
            limit=limit,
            offset=offset,
            model=model,
            created_after=created_after,
            created_before=created_before,
            search=search,
        )

    async def active(self, provider: str | None = None) -> builtins.list[Job]:
        return await self._call(self.sync.active, provider)

    async def count(self, *, status: str | JobStatus | Iterable[str | JobStatus] | None = None) -> int:
        return await self._call(self.sync.count, status=status)

    async def newer_counts(self, created: Iterable[datetime | None]) -> builtins.list[int]:
        return await self._call(self.sync.newer_counts, list(created))

    async def totals(self, search: str | None = None) -> dict[str, dict[str, Any]]:
        return await self._call(self.sync.totals, search)

    async def revision(self) -> int:
        return await self._call(self.sync.revision)

    async def changes_since(self, rev: int) -> tuple[int, builtins.list[Job]]:
        return await self._call(self.sync.changes_since, rev)

    async def changes_in_order(self, rev: int) -> tuple[int, builtins.list[tuple[int, Job]]]:
        return await self._call(self.sync.changes_in_order, rev)

    async def states(self, *, active_only: bool = False) -> tuple[int, dict[str, JobState]]:
        return await self._call(self.sync.states, active_only=active_only)

    async def frame_rows(self) -> builtins.list[tuple[Any, ...]]:
        return await self._call(self.sync.frame_rows)

    async def frame_rows_with_inputs(self) -> builtins.list[tuple[Any, ...]]:
        return await self._call(self.sync.frame_rows_with_inputs)

    async def history(self, job_id: str) -> builtins.list[Sample]:
        return await self._call(self.sync.history, job_id)

    async def add_samples(self, samples: Mapping[str, Sample]) -> dict[str, builtins.list[Sample]]:
        return await self._call(self.sync.add_samples, samples)

    async def integrity_check(self) -> str:
        return await self._call(self.sync.integrity_check)

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        return await self._call(self.sync.acquire_lease, name, holder, ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._call(self.sync.release_lease, name, holder)

    async def lease(self, name: str) -> Lease | None:
        return await self._call(self.sync.lease, name)

    async def aclose(self) -> None:
        """Close once no call is still running on a worker thread (a cancelled caller's call may be)."""

        def close() -> None:
            with self._idle:
                self._idle.wait_for(lambda: self._busy == 0, timeout=_CLOSE_WAIT_S)
            self.sync.close()

        await asyncio.to_thread(close)
