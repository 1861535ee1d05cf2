"""The store columns the DataFrame export reads, apart from `frame.py` so that the store (and so
`import jobwidget`) never loads pandas: pandas is imported when a DataFrame is asked for.
"""

from __future__ import annotations

__all__ = ["HEALTH_COLUMNS", "ROW_COLUMNS"]

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
    "projected_finish_at": "json_extract(metadata, '$.health.finish_at')",
    "projected_cost_usd": "json_extract(metadata, '$.health.cost')",
    "flags": "json_extract(metadata, '$.health.flags')",
    # Not a frame column: a running job's price per second, from which its cost so far is derived when
    # the frame is built (the stored row does not move with the clock).
    "price_per_s": "json_extract(metadata, '$.price_per_s')",
}
