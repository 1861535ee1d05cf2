"""The durable job store: SQLite (standard library) in WAL mode.

Why SQLite and these choices:
- WAL lets the panel's reads, `to_dataframe()` and a second notebook's reads run while the engine writes.
- Every upsert runs the transition rule (`merge_job`) inside one `BEGIN IMMEDIATE` transaction, so two
  processes writing the same job at once can neither duplicate it nor move a finished job back to running.
- Each write bumps a store revision and stamps the rows it changed, so another process can follow the
  store's changes cheaply (`changes_since`) instead of calling the provider itself.
- The file and its connections are `sqlite_file.SQLiteFile`'s; the row layout is `sqlite_rows`'s; the
  async `Store` face is `sqlite_async.SQLiteStore`.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from jobwidget.core.columns import HEALTH_COLUMNS, ROW_COLUMNS, metadata_sql
from jobwidget.core.health import HISTORY_POINTS, Sample, add_sample
from jobwidget.core.keys import COST_ESTIMATE, PRICE_PER_S
from jobwidget.core.models import ACTIVE_STATUSES, Job, JobStatus
from jobwidget.engine.stores.base import Lease, UpsertResult, fold_updates
from jobwidget.engine.stores.query import Cursor, keyset_parts, narrowing
from jobwidget.engine.stores.sqlite_file import SQLiteFile
from jobwidget.engine.stores.sqlite_rows import (
    _BATCH,
    _COLUMNS,
    _HOST,
    _ORDER,
    _SELECT,
    APPLICATION_ID,
    SCHEMA_VERSION,
    WEBHOOK_RETENTION_S,
    _holder_dead,
    _revision,
    _row_to_job,
    _to_us,
    merge_rows,
)

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "JobStore", "SQLiteFile"]


class JobStore(SQLiteFile):
    """A job store at `path` (a file, or ":memory:" for tests). Thread-safe; one per process and path.

    File stores give each thread its own connection (WAL readers never wait for the writer); an
    in-memory store has one connection behind a lock, since it cannot be shared across connections.
    """

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
        existing = self._fetch_many(conn, list(incoming))
        created, updated, unchanged, rows = merge_rows(existing, incoming, stamp)
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
        before: Cursor | None = None,
    ) -> builtins.list[Job]:
        """Jobs newest first, filtered by status (one or several), provider, trainer `model` (one or
        several), creation time (`created_after <= created_at < created_before`; undated jobs are left
        out when either is given) and `search`, a substring of the id, name or model (as `totals`).
        `before`: only the jobs after that (created_at, job_id) in this order, the next page after a
        page that ended there (`stores.query.Cursor`)."""
        where, params = self._filters(status, provider)
        more, more_params = narrowing(model, created_after, created_before, search)
        if more:
            where = f"{where} AND {more}" if where else f" WHERE {more}"
            params += more_params
        found: builtins.list[Job] = []
        with self._read() as conn:
            for part, part_params in keyset_parts(before, offset):
                clause = where if not part else f"{where} AND {part}" if where else f" WHERE {part}"
                query, args = f"{_SELECT}{clause} {_ORDER}", [*params, *part_params]
                if limit is not None:
                    query += " LIMIT ? OFFSET ?"
                    args += [int(limit) - len(found), int(offset)]
                found += [_row_to_job(row) for row in conn.execute(query, args)]
                if limit is not None and len(found) >= limit:
                    break
        return found

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
        price, estimate = metadata_sql(PRICE_PER_S), metadata_sql(COST_ESTIMATE)
        ticking = f"(status = 'running' AND started_at IS NOT NULL AND {price} > 0)"
        query = (
            f"SELECT status, count(*), total(CASE WHEN {ticking} THEN NULL ELSE cost_usd END), "
            f"sum(CASE WHEN {ticking} OR cost_usd IS NOT NULL THEN 1 ELSE 0 END), "
            f"sum(CASE WHEN status IN ({', '.join('?' * len(active))}) AND ({ticking} OR "
            f"(cost_usd IS NOT NULL AND {estimate})) THEN 1 ELSE 0 END), "
            f"total(CASE WHEN {ticking} THEN {price} END), "
            f"total(CASE WHEN {ticking} THEN {price} * started_at / 1e6 END) "
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
