"""What changed, read for the store follower on a PostgreSQL connection of its own.

`changes_since` is what every notebook runs each time another process commits (after the NOTIFY), so
it sits on the path from a commit to this process's callbacks. Through the pool it took five round
trips (the pool's liveness check, BEGIN REPEATABLE READ, the revision, the rows, COMMIT), and could wait
for a free connection behind this process's own writes; on a 2-core machine shared with other work
each round trip is a chance to wait for the scheduler, and the slowest deliveries spent most of their
time there. Here it is one statement on a dedicated autocommit connection: one statement sees one
snapshot, so the revision and the rows agree as they did in the REPEATABLE READ transaction.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from typing import Any

import psycopg

from jobwidget.core.errors import StoreError
from jobwidget.core.models import Job
from jobwidget.engine.stores.postgres_schema import _ORDER
from jobwidget.engine.stores.sqlite_rows import _COLUMNS, _row_to_job
from jobwidget.engine.stores.urls import error_text

__all__ = ["PostgresReader"]

_CONNECT_TIMEOUT_S = 10
# The revision row is always there (the first migration writes it), so the answer has at least one row:
# the current revision, with NULL job columns when nothing changed after `rev`. `jobs_rev` finds the rows.
_CHANGES = (
    f"SELECT m.value, {', '.join('j.' + c for c in _COLUMNS)} FROM jobwidget_meta m "
    f"LEFT JOIN jobs j ON j.rev > %s WHERE m.key = 'rev' {_ORDER}"
)


class PostgresReader:
    """`changes_since` for `PostgresStore`, which supplies `_url`, `location` and `_closed`."""

    _url: str
    location: str
    _closed: bool

    def _init_reader(self) -> None:
        self._reader: psycopg.AsyncConnection[Any] | None = None
        self._reader_lock = asyncio.Lock()  # one statement at a time; one reconnect at a time

    async def changes_since(self, rev: int) -> tuple[int, builtins.list[Job]]:
        if self._closed:
            raise StoreError("the job store is closed")
        async with self._reader_lock:
            rows = await self._read_changes(rev)
        return int(rows[0][0]), [_row_to_job(r[1:]) for r in rows if r[1] is not None]

    async def _read_changes(self, rev: int) -> builtins.list[tuple[Any, ...]]:
        # A connection opened before a server restart fails on its first use: that one failure is
        # retried on a new connection, so catching up after an outage does not wait for another commit.
        for attempt in (1, 2):
            fresh = self._reader is None or self._reader.closed
            try:
                if fresh:
                    await self._drop_reader()
                    self._reader = await psycopg.AsyncConnection.connect(
                        self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
                    )
                assert self._reader is not None
                cur = await self._reader.execute(_CHANGES, (rev,))
                return await cur.fetchall()
            except psycopg.Error as exc:
                await self._drop_reader()
                if fresh or attempt == 2:
                    why = error_text(exc, self._url)
                    raise StoreError(f"the job store {self.location} failed: {why}") from None
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _drop_reader(self) -> None:
        conn, self._reader = self._reader, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing left to close cleanly
                await conn.close()

    async def _close_reader(self) -> None:
        async with self._reader_lock:
            await self._drop_reader()
