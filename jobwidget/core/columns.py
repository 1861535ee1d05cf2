"""The store columns the DataFrame export reads, apart from `frame.py` so that the store (and so
`import jobwidget`) never loads pandas: pandas is imported when a DataFrame is asked for.
"""

from __future__ import annotations

from jobwidget.core.keys import HEALTH, HEALTH_COST, HEALTH_FINISH_AT, HEALTH_FLAGS, PRICE_PER_S

__all__ = ["HEALTH_COLUMNS", "ROW_COLUMNS", "metadata_sql"]


def metadata_sql(*path: str) -> str:
    """SQLite's expression for the value at `path` in a job's metadata (keys from `core.keys`)."""
    return f"json_extract(metadata, '$.{'.'.join(path)}')"


# The columns `JobStore.frame_rows()` selects, in this order.
ROW_COLUMNS = (
    "job_id",
    "provider",
    "status",
    "stage",
    "progress",
    "name",
    "model",
    "hardware",
    "created_at",
    "started_at",
    "completed_at",
    "cost_usd",
    "error_message",
    "last_log",
)

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
