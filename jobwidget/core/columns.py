"""The store columns the DataFrame export reads, apart from `frame.py` so that the store (and so
`import jobwidget`) never loads pandas: pandas is imported when a DataFrame is asked for.
"""

from __future__ import annotations

__all__ = ["ROW_COLUMNS"]

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
