"""Rows -> the `to_dataframe()` frame (columns in docs/compatibility.md). Pure: rows in, a frame out.

Columns and dtypes are fixed, with or without jobs, so `groupby("status")["cost_usd"].sum()` and
friends work on an empty store too, and status is categorical over all seven statuses so counts
show the zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from jobwidget.core.columns import ROW_COLUMNS
from jobwidget.core.models import JobStatus

__all__ = ["FRAME_COLUMNS", "FRAME_DTYPES", "ROW_COLUMNS", "jobs_frame"]

STATUS_DTYPE = pd.CategoricalDtype([s.value for s in JobStatus], ordered=False)
_TEXT = pd.StringDtype("python")
_TIME = pd.DatetimeTZDtype("us", "UTC")
_FLOAT = np.dtype("float64")

FRAME_DTYPES: dict[str, Any] = {
    "job_id": _TEXT,
    "provider": _TEXT,
    "status": STATUS_DTYPE,
    "stage": _TEXT,
    "progress": _FLOAT,
    "name": _TEXT,
    "model": _TEXT,
    "hardware": _TEXT,
    "created_at": _TIME,
    "started_at": _TIME,
    "completed_at": _TIME,
    "queue_seconds": _FLOAT,
    "duration_seconds": _FLOAT,
    "cost_usd": _FLOAT,
    "error_message": _TEXT,
    "last_log": _TEXT,
}
FRAME_COLUMNS: tuple[str, ...] = tuple(FRAME_DTYPES)

_TIME_COLUMNS = ("created_at", "started_at", "completed_at")


def _times(values: Sequence[Any]) -> tuple[pd.Series, np.ndarray]:
    """Epoch-µs column (with None) -> (UTC datetime Series, float seconds array with NaN)."""
    us = np.array([np.nan if v is None else v for v in values], dtype="float64")
    as_int = np.where(np.isnan(us), 0, us).astype("int64")
    series = pd.Series(as_int.view("datetime64[us]"), dtype="datetime64[us]").dt.tz_localize("UTC")
    series[np.isnan(us)] = pd.NaT
    return series.astype(_TIME), us / 1e6


def jobs_frame(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """Build the export frame from `JobStore.frame_rows()` output."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in ROW_COLUMNS]
    raw = dict(zip(ROW_COLUMNS, columns, strict=True))
    data: dict[str, Any] = {}
    seconds: dict[str, np.ndarray] = {}
    for name in _TIME_COLUMNS:
        data[name], seconds[name] = _times(raw[name])
    data["queue_seconds"] = np.clip(seconds["started_at"] - seconds["created_at"], 0, None)
    data["duration_seconds"] = np.clip(seconds["completed_at"] - seconds["started_at"], 0, None)
    for name in ("progress", "cost_usd"):
        data[name] = np.array([np.nan if v is None else v for v in raw[name]], dtype="float64")
    for name in ("job_id", "provider", "stage", "name", "model", "hardware", "error_message", "last_log"):
        data[name] = pd.array(raw[name], dtype=_TEXT)
    data["status"] = pd.Categorical(raw["status"], dtype=STATUS_DTYPE)
    frame = pd.DataFrame({name: data[name] for name in FRAME_COLUMNS})
    for name, dtype in FRAME_DTYPES.items():
        if frame[name].dtype != dtype:
            frame[name] = frame[name].astype(dtype)
    return frame
