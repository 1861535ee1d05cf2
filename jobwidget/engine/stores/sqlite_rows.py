"""How a `Job` is laid out in the SQLite store: schema, migrations and row <-> Job conversion.

Datetimes are integer microseconds since the epoch (UTC): exact round trips, cheap sorting, and a
zero-copy path into pandas. JSON columns hold the job's mappings as text.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from jobwidget.core.fields import field_kinds, stored_columns
from jobwidget.core.models import Job
from jobwidget.core.rules import merge_job
from jobwidget.core.schema import Kind
from jobwidget.core.stored import RowLayout

SCHEMA_VERSION = 4
APPLICATION_ID = 0x4A574731  # "JWG1": marks a file as a jobwidget store
_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_BYTES = 100  # SQLite's file header: application_id at offset 68
_LOCK_BUDGET_S = 30.0  # how long a writer waits for another process before the user hears about it
_BATCH = 500  # SQLite's variable limit is 32766 on modern builds; smaller batches keep each query cheap
# Webhook ids are kept this long: far beyond the 5-minute timestamp tolerance and Replicate's ~1-minute
# retries, so any duplicate that could still pass verification is recognised.
WEBHOOK_RETENTION_S = 86_400.0

# Columns in storage order (the model's field order; `_row_to_job` relies on it): every field `Job` keeps,
# as the job's field table says (core/fields.py). Mappings are stored as JSON text, times as epoch µs.
_COLUMNS = stored_columns(Job)
_KINDS = field_kinds(Job)
_JSON_COLUMNS = frozenset(c for c in _COLUMNS if _KINDS[c] is Kind.OBJECT)
_DATETIME_COLUMNS = frozenset(c for c in _COLUMNS if _KINDS[c] is Kind.TIME)
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


_CONTENT_FIELDS = tuple(c for c in _COLUMNS if c != "updated_at")


def _content(job: Job) -> tuple[Any, ...]:
    """Everything but `updated_at`: an upsert that changes none of it is a no-op."""
    return tuple(getattr(job, name) for name in _CONTENT_FIELDS)


_DUMPS = json.JSONEncoder(ensure_ascii=False, default=str).encode  # json.dumps(..., same options)


def _job_to_row(job: Job) -> tuple[Any, ...]:
    out: list[Any] = []
    for name in _COLUMNS:
        value = getattr(job, name)
        if name in _DATETIME_COLUMNS:
            value = _to_us(value)
        elif name == "status":
            value = value.value
        elif name in _JSON_COLUMNS:
            value = None if value is None else _DUMPS(dict(value))
        out.append(value)
    return tuple(out)


_LAYOUT = RowLayout(_COLUMNS, times=_DATETIME_COLUMNS, mappings=_JSON_COLUMNS)
# A job from a row, its fields decoded when first read (`core.stored`): a page of rows costs about what
# fetching it does. Written from a checked `Job`, so nothing is cleaned a second time.
_row_to_job = _LAYOUT.job


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


def merge_rows(
    existing: dict[str, Job], incoming: dict[str, Job], stamp: datetime
) -> tuple[list[Job], list[tuple[Job, Job]], int, list[tuple[Any, ...]]]:
    """The transition rule over one write: (created, (before, after) pairs, unchanged count, rows to
    store). Both stores run it inside their write transaction, on rows read under its lock."""
    created: list[Job] = []
    updated: list[tuple[Job, Job]] = []
    unchanged = 0
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
    return created, updated, unchanged, rows
