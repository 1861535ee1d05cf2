"""The PostgreSQL store's schema and SQL in PostgreSQL's words: the same row layout as SQLite's
(`sqlite_rows`: times as epoch microseconds, JSON as text), so frames and conversions are shared."""

from __future__ import annotations

from typing import Any

from jobwidget.core.columns import HEALTH_COLUMNS
from jobwidget.core.keys import HEALTH, HEALTH_COST, HEALTH_FINISH_AT, HEALTH_FLAGS, PRICE_PER_S
from jobwidget.core.models import JobStatus
from jobwidget.engine.stores.sqlite_rows import _COLUMNS

_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
_ORDER = "ORDER BY created_at DESC NULLS LAST, job_id DESC"  # as SQLite: undated jobs come last


def _json(*path: str) -> str:
    """The jsonb value at `path` in a job's metadata (keys from `core.keys`)."""
    return f"(metadata::jsonb #> '{{{','.join(path)}}}')"


def _num(*path: str) -> str:
    expr = _json(*path)
    return f"(CASE WHEN jsonb_typeof({expr}) = 'number' THEN ({expr})::text::float8 END)"


# The SQL for `HEALTH_COLUMNS` (written for SQLite's json_extract) in PostgreSQL's words, same order.
_PG_HEALTH = {
    "projected_finish_at": _num(HEALTH, HEALTH_FINISH_AT),
    "projected_cost_usd": _num(HEALTH, HEALTH_COST),
    "flags": f"{_json(HEALTH, HEALTH_FLAGS)}::text",
    "price_per_s": _num(PRICE_PER_S),
}
assert tuple(_PG_HEALTH) == tuple(HEALTH_COLUMNS)

# version -> statements taking the schema from version-1 to version. Append; never edit a shipped one.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            status TEXT NOT NULL,
            name TEXT, model TEXT, version TEXT, hardware TEXT,
            created_at BIGINT, started_at BIGINT, completed_at BIGINT,
            cost_usd DOUBLE PRECISION, error_message TEXT, output TEXT, web_url TEXT,
            stage TEXT, progress DOUBLE PRECISION, last_log TEXT,
            updated_at BIGINT,
            metadata TEXT NOT NULL DEFAULT '{}',
            inputs TEXT, retry_of TEXT,
            rev BIGINT NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX jobs_status_created ON jobs (status, created_at DESC NULLS LAST, job_id DESC)",
        "CREATE INDEX jobs_created ON jobs (created_at DESC NULLS LAST, job_id DESC)",
        "CREATE INDEX jobs_model_created ON jobs (model, created_at DESC NULLS LAST, job_id DESC)",
        "CREATE INDEX jobs_rev ON jobs (rev)",
        "INSERT INTO jobwidget_meta (key, value) VALUES ('rev', '0')",
        """
        CREATE TABLE leases (
            name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
            pid INTEGER, host TEXT
        )
        """,
        """
        CREATE TABLE webhook_deliveries (
            webhook_id TEXT PRIMARY KEY, received_at DOUBLE PRECISION NOT NULL, job_id TEXT
        )
        """,
        "CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at)",
        """
        CREATE TABLE health_samples (
            job_id TEXT NOT NULL, idx INTEGER NOT NULL, t DOUBLE PRECISION NOT NULL,
            step BIGINT, total BIGINT, loss DOUBLE PRECISION,
            loss_nan INTEGER NOT NULL DEFAULT 0, rate DOUBLE PRECISION, n INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (job_id, idx)
        )
        """,
    ),
}


def _pg(sql: str) -> str:
    """SQLite-style SQL from `stores.query` in PostgreSQL's words: `?` -> `%s`, LIKE -> ILIKE (SQLite's
    LIKE ignores ASCII case)."""
    return sql.replace("?", "%s").replace(" LIKE ", " ILIKE ")


def _status_filter(status: Any) -> list[str] | None:
    if status is None:
        return None
    statuses = [status] if isinstance(status, str) else list(status)
    return [JobStatus(s).value for s in statuses]  # ValueError names a bad status
