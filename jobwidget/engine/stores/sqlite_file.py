"""One SQLite file as a jobwidget store: its identity checked before anything changes it, one
connection per thread (WAL readers never wait for the writer), write transactions, and migrations.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from jobwidget.core.errors import StoreCorruptError, StoreError
from jobwidget.engine.stores.sqlite_rows import (
    _HEADER_BYTES,
    _LOCK_BUDGET_S,
    _MIGRATIONS,
    _SQLITE_MAGIC,
    APPLICATION_ID,
    SCHEMA_VERSION,
    _is_lock_error,
)

__all__ = ["SQLiteFile"]


class SQLiteFile:
    """A store file at `path` (or ":memory:"): connections, transactions and the schema."""

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
