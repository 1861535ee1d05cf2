"""The team store: PostgreSQL through psycopg 3 (async) and a connection pool, changes pushed by NOTIFY.

Why these choices:
- It keeps the SQLite store's rules (`stores.base`): the transition rule runs inside the write
  transaction on rows locked with `SELECT ... FOR UPDATE` (in id order, so writers never deadlock), and
  the store revision is one counter row every writing transaction updates, so revisions are handed out
  in commit order and a follower reading `rev > n` never skips a write still in flight.
- Every write that bumps the revision sends `NOTIFY jobwidget, '<rev>'` in the same transaction:
  PostgreSQL delivers it only if the write commits, so a listener hears each change once it is visible.
- Rows keep SQLite's shapes (datetimes as epoch microseconds, JSON as text) so rows, DataFrames and
  health samples come back exactly as the embedded store hands them out.
- Reads that must agree with each other (`states`, `changes_in_order`) run in one REPEATABLE READ
  snapshot; `changes_since`, on the path from another process's commit to this one's callbacks, is one
  statement on a connection of its own (`postgres_reader`).
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from jobwidget.core.columns import ROW_COLUMNS
from jobwidget.core.errors import StoreError
from jobwidget.core.keys import COST_ESTIMATE, PRICE_PER_S
from jobwidget.core.models import ACTIVE_STATUSES, Job, JobStatus
from jobwidget.engine.stores.base import JobState, Lease, UpsertResult, fold_updates
from jobwidget.engine.stores.postgres_history import PostgresHistory
from jobwidget.engine.stores.postgres_reader import PostgresReader
from jobwidget.engine.stores.postgres_schema import (
    _MIGRATIONS,
    _ORDER,
    _PG_HEALTH,
    _SELECT,
    _num,
    _pg,
    _status_filter,
)
from jobwidget.engine.stores.query import Cursor, keyset_parts, narrowing
from jobwidget.engine.stores.sqlite_rows import (
    _COLUMNS,
    _HOST,
    WEBHOOK_RETENTION_S,
    _holder_dead,
    _row_to_job,
    _to_us,
    merge_rows,
)
from jobwidget.engine.stores.urls import error_text as _why
from jobwidget.engine.stores.urls import is_postgres_url, redact_url

__all__ = ["CHANNEL", "PG_SCHEMA_VERSION", "PostgresStore", "is_postgres_url", "redact_url"]

CHANNEL = "jobwidget"
PG_SCHEMA_VERSION = 1
_MIGRATION_LOCK = 0x4A574731  # advisory lock key: one process migrates at a time
_CONNECT_TIMEOUT_S = 30.0


class PostgresStore(PostgresHistory, PostgresReader):
    """The `Store` protocol over a PostgreSQL database. Open with `await PostgresStore.open(url)`."""

    def __init__(self, url: str, pool: AsyncConnectionPool) -> None:
        self._url = url
        self.location = redact_url(url)
        self._pool = pool
        self._closed = False
        self._init_reader()

    @classmethod
    async def open(cls, url: str, *, max_size: int = 4, timeout: float = _CONNECT_TIMEOUT_S) -> PostgresStore:
        """Connect, migrate the schema (refusing a newer one), and return the store."""
        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=timeout,
            check=AsyncConnectionPool.check_connection,  # a connection lost to a restart is replaced
            name="jobwidget",
        )
        try:
            await pool.open(wait=True, timeout=timeout)
        except Exception as exc:
            await pool.close()
            raise StoreError(f"cannot connect to the job store {redact_url(url)}: {_why(exc, url)}") from None
        store = cls(url, pool)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    # -- plumbing ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _tx(
        self, *, snapshot: bool = False, binary: bool = False
    ) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        if self._closed:
            raise StoreError("the job store is closed")
        try:
            async with self._pool.connection() as conn:
                if snapshot:
                    await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
                try:
                    async with conn.transaction(), conn.cursor(binary=binary) as cur:
                        yield cur
                finally:
                    if snapshot and not conn.closed:
                        await conn.set_isolation_level(None)
        except psycopg.Error as exc:
            raise StoreError(f"the job store {self.location} failed: {_why(exc, self._url)}") from None
        except TimeoutError as exc:  # the pool found no working connection in time
            raise StoreError(
                f"the job store {self.location} is unreachable: {_why(exc, self._url)}"
            ) from None

    async def _migrate(self) -> None:
        async with self._tx() as cur:
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await cur.execute(
                "CREATE TABLE IF NOT EXISTS jobwidget_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            await cur.execute("SELECT value FROM jobwidget_meta WHERE key = 'schema_version'")
            row = await cur.fetchone()
            version = int(row[0]) if row else 0
            if version > PG_SCHEMA_VERSION:
                raise StoreError(
                    f"the job store {self.location} has schema version {version}, written by a newer "
                    f"jobwidget (this one knows up to {PG_SCHEMA_VERSION}). Upgrade jobwidget, or use "
                    "another database."
                )
            for target in range(version + 1, PG_SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    await cur.execute(statement)
            if version < PG_SCHEMA_VERSION:
                await cur.execute(
                    "INSERT INTO jobwidget_meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(PG_SCHEMA_VERSION),),
                )

    # -- writes ------------------------------------------------------------------------------

    async def upsert(self, jobs: Iterable[Job], *, now: datetime | None = None) -> UpsertResult:
        incoming = fold_updates(jobs)
        if not incoming:
            return UpsertResult(rev=await self.revision())
        async with self._tx() as cur:
            return await self._upsert_in(cur, incoming, now or datetime.now(UTC))

    async def upsert_delivery(
        self,
        webhook_id: str,
        jobs: Iterable[Job],
        *,
        now: datetime | None = None,
        keep: float = WEBHOOK_RETENTION_S,
    ) -> UpsertResult:
        """Apply delivery `webhook_id` once: its jobs and the record of its id commit together."""
        incoming = fold_updates(jobs)
        stamp = now or datetime.now(UTC)
        t = stamp.timestamp()
        async with self._tx() as cur:
            rev = await self._lock_revision(cur)
            await cur.execute("DELETE FROM webhook_deliveries WHERE received_at < %s", (t - keep,))
            await cur.execute(
                "INSERT INTO webhook_deliveries (webhook_id, received_at, job_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (webhook_id) DO NOTHING",
                (webhook_id, t, next(iter(incoming), None)),
            )
            if cur.rowcount != 1:
                return UpsertResult(rev=rev, duplicate=True)
            return await self._upsert_in(cur, incoming, stamp)

    async def delivery_seen(self, webhook_id: str) -> bool:
        async with self._tx() as cur:
            await cur.execute("SELECT 1 FROM webhook_deliveries WHERE webhook_id = %s", (webhook_id,))
            return await cur.fetchone() is not None

    @staticmethod
    async def _lock_revision(cur: psycopg.AsyncCursor[Any]) -> int:
        """Lock the revision counter first, as SQLite's `BEGIN IMMEDIATE` takes its write lock: writers run
        one at a time, so each reads the rows it merges as the previous writer committed them (a job
        inserted meanwhile is never overwritten unmerged) and revisions are handed out in commit order."""
        await cur.execute("SELECT value FROM jobwidget_meta WHERE key = 'rev' FOR UPDATE")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _upsert_in(
        self, cur: psycopg.AsyncCursor[Any], incoming: dict[str, Job], stamp: datetime
    ) -> UpsertResult:
        rev = await self._lock_revision(cur)
        await cur.execute(f"{_SELECT} WHERE job_id = ANY(%s) ORDER BY job_id FOR UPDATE", (sorted(incoming),))
        existing = {row[0]: _row_to_job(row) for row in await cur.fetchall()}
        created, updated, unchanged, rows = merge_rows(existing, incoming, stamp)
        if not rows:
            return UpsertResult(unchanged=unchanged, rev=rev)
        rev += 1
        await cur.execute("UPDATE jobwidget_meta SET value = %s WHERE key = 'rev'", (str(rev),))
        placeholders = ", ".join(["%s"] * (len(_COLUMNS) + 1))
        assignments = ", ".join(f"{c} = excluded.{c}" for c in (*_COLUMNS[1:], "rev"))
        await cur.executemany(
            f"INSERT INTO jobs ({', '.join(_COLUMNS)}, rev) VALUES ({placeholders}) "
            f"ON CONFLICT (job_id) DO UPDATE SET {assignments}",
            [(*row, rev) for row in rows],
        )
        await cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(rev)))
        return UpsertResult(created=created, updated=updated, unchanged=unchanged, rev=rev)

    # -- reads -------------------------------------------------------------------------------

    async def _all(
        self, query: str, params: Any = None, *, binary: bool = False
    ) -> builtins.list[tuple[Any, ...]]:
        async with self._tx(binary=binary) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()

    async def get(self, job_id: str) -> Job | None:
        rows = await self._all(f"{_SELECT} WHERE job_id = %s", (job_id,))
        return _row_to_job(rows[0]) if rows else None

    async def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        return {r[0]: _row_to_job(r) for r in await self._all(f"{_SELECT} WHERE job_id = ANY(%s)", (ids,))}

    async def list(
        self,
        *,
        status: Any = None,
        provider: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
        model: str | Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
        before: Cursor | None = None,
    ) -> builtins.list[Job]:
        """As `JobStore.list`: newest first, filtered by status, provider, model, creation time, text;
        `before` pages on from a cursor."""
        if model is not None and not isinstance(model, str):
            model = list(model)
            if not model:
                return []
        clauses, params = self._filters(status, provider)
        more, more_params = narrowing(model, created_after, created_before, search)
        if more:
            clauses.append(_pg(more))
            params += more_params
        found: builtins.list[Job] = []
        for part, part_params in keyset_parts(before, offset):
            where = [*clauses, _pg(part)] if part else clauses
            query = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + f" {_ORDER}"
            args = [*params, *part_params]
            if limit is not None:
                query += " LIMIT %s OFFSET %s"
                args += [int(limit) - len(found), int(offset)]
            found += [_row_to_job(r) for r in await self._all(query, args)]
            if limit is not None and len(found) >= limit:
                break
        return found

    @staticmethod
    def _filters(status: Any, provider: str | None) -> tuple[builtins.list[str], builtins.list[Any]]:
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        values = _status_filter(status)
        if values is not None:
            clauses.append("status = ANY(%s)")
            params.append(values)
        if provider is not None:
            clauses.append("provider = %s")
            params.append(provider)
        return clauses, params

    async def active(self, provider: str | None = None) -> builtins.list[Job]:
        return await self.list(status=ACTIVE_STATUSES, provider=provider, limit=None)

    async def count(self, *, status: Any = None) -> int:
        clauses, params = self._filters(status, None)
        rows = await self._all(
            "SELECT count(*) FROM jobs" + (" WHERE " + clauses[0] if clauses else ""), params
        )
        return int(rows[0][0])

    async def newer_counts(self, created: Iterable[datetime | None]) -> builtins.list[int]:
        stamps = [_to_us(at) for at in created]
        if not stamps:
            return []
        rows = await self._all(
            "SELECT (SELECT count(*) FROM jobs WHERE created_at > u) FROM unnest(%s::bigint[]) "
            "WITH ORDINALITY AS x(u, i) ORDER BY i",
            (stamps,),
        )
        return [0 if us is None else int(r[0]) for us, r in zip(stamps, rows, strict=True)]

    async def totals(self, search: str | None = None) -> dict[str, dict[str, Any]]:
        """As `JobStore.totals`: count, cost (running estimates as of this read), costed, estimated, and
        the clock-free parts of cost (`billed`, `rate`, `rate_t0`) per status over matching jobs."""
        params: builtins.list[Any] = [[s.value for s in ACTIVE_STATUSES]]
        where = ""
        text = (search or "").strip()
        if text:
            _, like = narrowing(None, None, None, text)
            where = " WHERE " + " OR ".join(f"{c} ILIKE %s ESCAPE '\\'" for c in ("job_id", "name", "model"))
            params += like
        price = _num(PRICE_PER_S)
        ticking = f"(status = 'running' AND started_at IS NOT NULL AND COALESCE({price}, 0) > 0)"
        estimate = f"metadata::jsonb -> '{COST_ESTIMATE}'"
        estimated = (
            f"({estimate} IS NOT NULL AND {estimate} NOT IN "
            "('false'::jsonb, '0'::jsonb, 'null'::jsonb, '\"\"'::jsonb))"
        )
        rows = await self._all(
            f"SELECT status, count(*), COALESCE(sum(CASE WHEN {ticking} THEN NULL ELSE cost_usd END), 0), "
            f"count(*) FILTER (WHERE {ticking} OR cost_usd IS NOT NULL), "
            f"count(*) FILTER (WHERE status = ANY(%s) AND "
            f"({ticking} OR (cost_usd IS NOT NULL AND {estimated}))), "
            f"COALESCE(sum(CASE WHEN {ticking} THEN {price} END), 0), "
            f"COALESCE(sum(CASE WHEN {ticking} THEN {price} * started_at / 1e6 END), 0) "
            f"FROM jobs{where} GROUP BY status",
            params,
        )
        now = time.time()
        out: dict[str, dict[str, Any]] = {}
        for status, n, billed, c, e, rate, rate_t0 in rows:
            rate, rate_t0 = float(rate), float(rate_t0)
            running = max(0.0, rate * now - rate_t0) if rate else 0.0
            out[str(status)] = {
                "count": int(n),
                "cost": round(float(billed) + running, 6),
                "costed": int(c),
                "estimated": int(e),
                "billed": round(float(billed), 6),
                "rate": rate,
                "rate_t0": rate_t0,
            }
        return out

    async def revision(self) -> int:
        rows = await self._all("SELECT value FROM jobwidget_meta WHERE key = 'rev'")
        return int(rows[0][0])

    async def changes_in_order(self, rev: int) -> tuple[int, builtins.list[tuple[int, Job]]]:
        async with self._tx(snapshot=True) as cur:
            await cur.execute("SELECT value FROM jobwidget_meta WHERE key = 'rev'")
            current = int((await cur.fetchone())[0])  # type: ignore[index]
            await cur.execute(
                f"SELECT rev, {', '.join(_COLUMNS)} FROM jobs WHERE rev > %s ORDER BY rev, job_id", (rev,)
            )
            rows = await cur.fetchall()
        return current, [(int(r[0]), _row_to_job(r[1:])) for r in rows]

    async def states(self, *, active_only: bool = False) -> tuple[int, dict[str, JobState]]:
        query = "SELECT job_id, status, stage, progress, last_log FROM jobs"
        params: tuple[Any, ...] = ()
        if active_only:  # a follower starts in a time that does not grow with the store's history
            query, params = query + " WHERE status = ANY(%s)", ([s.value for s in ACTIVE_STATUSES],)
        async with self._tx(snapshot=True) as cur:
            await cur.execute("SELECT value FROM jobwidget_meta WHERE key = 'rev'")
            current = int((await cur.fetchone())[0])  # type: ignore[index]
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return current, {r[0]: (JobStatus(r[1]), r[2], r[3], r[4]) for r in rows}

    # The DataFrame reads every row: in binary its numbers cross the wire undecoded (10-20% faster
    # at 100k jobs, the same Python values as text; docs/benchmarks.md, Team).
    async def frame_rows(self) -> builtins.list[tuple[Any, ...]]:
        columns = ", ".join([*ROW_COLUMNS, *_PG_HEALTH.values()])
        return await self._all(f"SELECT {columns} FROM jobs {_ORDER}", binary=True)

    async def frame_rows_with_inputs(self) -> builtins.list[tuple[Any, ...]]:
        columns = ", ".join([*ROW_COLUMNS, *_PG_HEALTH.values(), "inputs", "output", "retry_of"])
        return await self._all(f"SELECT {columns} FROM jobs {_ORDER}", binary=True)

    async def integrity_check(self) -> str:
        await self._all("SELECT count(*) FROM jobs")
        return "ok"

    # -- the poll lease ------------------------------------------------------------------------

    async def acquire_lease(self, name: str, holder: str, ttl: float, *, now: float | None = None) -> bool:
        """Take or renew lease `name` for `holder`; False while another live holder's lease runs."""
        t = time.time() if now is None else now
        async with self._tx() as cur:
            await cur.execute(
                "SELECT holder, expires_at, pid, host FROM leases WHERE name = %s FOR UPDATE", (name,)
            )
            row = await cur.fetchone()
            if row is None:
                await cur.execute(
                    "INSERT INTO leases (name, holder, expires_at, pid, host) VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (name) DO NOTHING",
                    (name, holder, t + ttl, os.getpid(), _HOST),
                )
                return cur.rowcount == 1  # 0: another process inserted it first and holds it
            if row[0] != holder and row[1] > t and not _holder_dead(row[2], row[3]):
                return False
            await cur.execute(
                "UPDATE leases SET holder = %s, expires_at = %s, pid = %s, host = %s WHERE name = %s",
                (holder, t + ttl, os.getpid(), _HOST, name),
            )
            return True

    async def release_lease(self, name: str, holder: str) -> None:
        async with self._tx() as cur:
            await cur.execute("DELETE FROM leases WHERE name = %s AND holder = %s", (name, holder))

    async def lease(self, name: str) -> Lease | None:
        rows = await self._all(
            "SELECT name, holder, expires_at, pid, host FROM leases WHERE name = %s", (name,)
        )
        return Lease(*rows[0]) if rows else None

    # -- the change feed -----------------------------------------------------------------------

    async def listen(self) -> AsyncIterator[int]:
        """Store revisions as they commit: the current one first (to catch up from), then each NOTIFY.

        Ends with `StoreError` when the connection is lost; the follower reconnects (with backoff) and
        catches up from its last revision, so nothing is missed in between.
        """
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot listen to the job store {self.location}: {_why(exc, self._url)}"
            ) from None
        try:
            async with conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                cur = await conn.execute("SELECT value FROM jobwidget_meta WHERE key = 'rev'")
                row = await cur.fetchone()
                yield int(row[0]) if row else 0
                async for note in conn.notifies():
                    try:
                        yield int(note.payload)
                    except ValueError:
                        continue
        except psycopg.Error as exc:
            raise StoreError(f"lost the job store {self.location}: {_why(exc, self._url)}") from None

    # -- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        self._closed = True
        await self._close_reader()
        await self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"
