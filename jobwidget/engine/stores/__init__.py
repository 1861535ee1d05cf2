"""Job stores: one async protocol (`Store`), SQLite embedded by default.

`open_store(location)` picks the implementation from the location: a file path or ":memory:" is
SQLite.
"""

from __future__ import annotations

import os

from jobwidget.engine.stores.base import Lease, Store, UpsertResult, fold_updates, new_holder_id
from jobwidget.engine.stores.blocking import BlockingStore
from jobwidget.engine.stores.sqlite import SCHEMA_VERSION, JobStore, SQLiteStore

__all__ = [
    "SCHEMA_VERSION",
    "BlockingStore",
    "JobStore",
    "Lease",
    "SQLiteStore",
    "Store",
    "UpsertResult",
    "as_store",
    "fold_updates",
    "new_holder_id",
    "open_store",
]


def open_store(location: str | os.PathLike[str]) -> Store:
    """The store at `location`: a SQLite file path (or ":memory:")."""
    return SQLiteStore(JobStore(location))


def as_store(store: Store | JobStore) -> Store:
    """A `Store` for the engine: a blocking SQLite `JobStore` is wrapped so its calls leave the loop."""
    return SQLiteStore(store) if isinstance(store, JobStore) else store
