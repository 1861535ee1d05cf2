"""The store columns the DataFrame export reads, apart from `frame.py` so that the store (and so
`import jobwidget`) never loads pandas: pandas is imported when a DataFrame is asked for.

The stored ones follow from the job's field table (core/fields.py); the derived frame columns that are
read from a job's metadata have their SQL here (`HEALTH_COLUMNS`), the others (queue and run seconds) are
computed from the stored times in core/frame.py.
"""

from __future__ import annotations

from jobwidget.core.fields import FRAME_FIELDS
from jobwidget.core.keys import HEALTH, HEALTH_COST, HEALTH_FINISH_AT, HEALTH_FLAGS, PRICE_PER_S

__all__ = ["HEALTH_COLUMNS", "ROW_COLUMNS", "metadata_sql"]


def metadata_sql(*path: str) -> str:
    """SQLite's expression for the value at `path` in a job's metadata (keys from `core.keys`)."""
    return f"json_extract(metadata, '$.{'.'.join(path)}')"


# The columns `JobStore.frame_rows()` selects, in this order: the stored fields the frame has
# (core/fields.py), in the table's order.
ROW_COLUMNS: tuple[str, ...] = tuple(f.name for f in FRAME_FIELDS if f.stored)

# Run-health columns, read from the job's health metadata (SQL expressions the store selects after
# ROW_COLUMNS): the projection as epoch seconds and USD, the raised flags as a JSON object.
HEALTH_COLUMNS = {
    "projected_finish_at": metadata_sql(HEALTH, HEALTH_FINISH_AT),
    "projected_cost_usd": metadata_sql(HEALTH, HEALTH_COST),
    "flags": metadata_sql(HEALTH, HEALTH_FLAGS),
    # Not a frame column: a running job's price per second, from which its cost so far is derived when
    # the frame is built (the stored row does not move with the clock).
    "price_per_s": metadata_sql(PRICE_PER_S),
}
