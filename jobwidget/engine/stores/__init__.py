"""Job stores: one async protocol (`Store`), SQLite embedded by default.

`open_store(location)` picks the implementation from the location: a file path or ":memory:" is
SQLite; a `postgresql://` URL is the team store (`stores.postgres`, imported only when asked for).
"""

from __future__ import annotations

import os

from jobwidget.engine.stores.base import Lease, Store, UpsertResult, fold_updates, new_holder_id
from jobwidget.engine.stores.blocking import BlockingStore
from jobwidget.engine.stores.query import Cursor
from jobwidget.engine.stores.sqlite import SCHEMA_VERSION, JobStore
from jobwidget.engine.stores.sqlite_async import SQLiteStore
from jobwidget.engine.stores.urls import is_postgres_url, redact_url

__all__ = [
    "SCHEMA_VERSION",
    "BlockingStore",
    "Cursor",
    "JobStore",
    "Lease",
    "SQLiteStore",
    "Store",
    "UpsertResult",
    "as_store",
    "fold_updates",
    "is_postgres_url",
    "new_holder_id",
    "open_store",
    "redact_url",
]


async def open_store(location: str | os.PathLike[str]) -> Store:
    """The store at `location`: a `postgresql://` URL, else a SQLite file path (or ":memory:").

    Async because a PostgreSQL store's connection pool belongs to the running loop."""
    if is_postgres_url(location):
        assert isinstance(location, str)
        from jobwidget.engine.stores.postgres import PostgresStore

        return await PostgresStore.open(location.strip())
    return SQLiteStore(JobStore(location))


def as_store(store: Store | JobStore) -> Store:
    """A `Store` for the engine: a blocking SQLite `JobStore` is wrapped so its calls leave the loop."""
    return SQLiteStore(store) if isinstance(store, JobStore) else store
