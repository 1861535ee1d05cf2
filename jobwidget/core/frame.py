"""Rows -> the `to_dataframe()` frame (columns in docs/compatibility.md). Pure: rows in, a frame out.

Columns and dtypes are fixed, with or without jobs, so `groupby("status")["cost_usd"].sum()` and
friends work on an empty store too, and status is categorical over all seven statuses so counts
show the zeros. The columns are the frame fields of the job's field table (core/fields.py), each dtype
follows from the field's type: text as pandas strings, times as UTC datetimes, numbers as float64, an
enum as a categorical over its values, a mapping as its keys, comma-separated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from jobwidget.core.columns import HEALTH_COLUMNS, ROW_COLUMNS
from jobwidget.core.fields import FRAME_FIELDS, field_kinds, field_types
from jobwidget.core.health import FLAG_NAMES, Sample
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.schema import Kind, unwrap_optional

__all__ = ["FRAME_COLUMNS", "FRAME_DTYPES", "HISTORY_DTYPES", "ROW_COLUMNS", "history_frame", "jobs_frame"]

_TEXT = pd.StringDtype("python")
_TIME = pd.DatetimeTZDtype("us", "UTC")
_FLOAT = np.dtype("float64")
_KIND_DTYPES: dict[Kind, Any] = {
    Kind.TEXT: _TEXT,
    Kind.TIME: _TIME,
    Kind.NUMBER: _FLOAT,
    Kind.INTEGER: pd.Int64Dtype(),
    Kind.BOOLEAN: pd.BooleanDtype(),
    Kind.OBJECT: _TEXT,  # its keys, comma-separated ("nan_loss,stalled"); "" when none
}
_KINDS = field_kinds(Job)


def _dtype(name: str) -> Any:
    if _KINDS[name] is Kind.ENUM:  # categorical over every value, so counts show the zeros
        members = unwrap_optional(field_types(Job)[name])[0]
        return pd.CategoricalDtype([m.value for m in members], ordered=False)
    return _KIND_DTYPES[_KINDS[name]]


FRAME_DTYPES: dict[str, Any] = {f.name: _dtype(f.name) for f in FRAME_FIELDS}
FRAME_COLUMNS: tuple[str, ...] = tuple(FRAME_DTYPES)


def _times(values: Sequence[Any]) -> tuple[pd.Series, np.ndarray]:
    """Epoch-µs column (with None) -> (UTC datetime Series, float seconds array with NaN)."""
    us = np.array([np.nan if v is None else v for v in values], dtype="float64")
    as_int = np.where(np.isnan(us), 0, us).astype("int64")
    series = pd.Series(as_int.view("datetime64[us]"), dtype="datetime64[us]").dt.tz_localize("UTC")
    series[np.isnan(us)] = pd.NaT
    return series.astype(_TIME), us / 1e6


def _flag_names(value: Any) -> str:
    """The flags JSON object as "a,b" in the rules' order (unknown names after them)."""
    if not value:
        return ""
    try:
        names = list(json.loads(value)) if isinstance(value, str) else list(value)
    except (TypeError, ValueError):
        return ""
    return ",".join(
        sorted(map(str, names), key=lambda n: (FLAG_NAMES.index(n) if n in FLAG_NAMES else 99, n))
    )


def _cost_now(cost: np.ndarray, price: np.ndarray, status: Sequence[Any], started: np.ndarray) -> np.ndarray:
    """Each running job's cost so far (elapsed x its price per second) at the time the frame is built;
    every other job's stored cost."""
    running = np.array([s == JobStatus.RUNNING.value for s in status], dtype=bool)
    live = running & ~np.isnan(price) & ~np.isnan(started)
    if not live.any():
        return cost
    elapsed = np.clip(time.time() - started, 0, None)
    return np.where(live, np.round(elapsed * np.nan_to_num(price), 6), cost)


def jobs_frame(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """Build the export frame from `JobStore.frame_rows()` output (ROW_COLUMNS, then HEALTH_COLUMNS)."""
    names = (*ROW_COLUMNS, *HEALTH_COLUMNS)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    raw = dict(zip(names, columns, strict=True))
    data: dict[str, Any] = {}
    seconds: dict[str, np.ndarray] = {}
    for name in ROW_COLUMNS:  # stored columns, by kind
        kind = _KINDS[name]
        if kind is Kind.TIME:
            data[name], seconds[name] = _times(raw[name])
        elif kind is Kind.NUMBER:
            data[name] = np.array([np.nan if v is None else v for v in raw[name]], dtype="float64")
        elif kind is Kind.ENUM:
            data[name] = pd.Categorical(raw[name], dtype=FRAME_DTYPES[name])
        else:
            data[name] = pd.array(raw[name], dtype=FRAME_DTYPES[name])
    # Derived columns: from the stored times, and from the health metadata (HEALTH_COLUMNS).
    data["queue_seconds"] = np.clip(seconds["started_at"] - seconds["created_at"], 0, None)
    data["duration_seconds"] = np.clip(seconds["completed_at"] - seconds["started_at"], 0, None)
    finish = [None if v is None else round(float(v) * 1e6) for v in raw["projected_finish_at"]]
    data["projected_finish_at"] = _times(finish)[0]
    for name in ("projected_cost_usd", "price_per_s"):
        data[name] = np.array([np.nan if v is None else v for v in raw[name]], dtype="float64")
    price = data.pop("price_per_s")
    data["cost_usd"] = _cost_now(data["cost_usd"], price, raw["status"], seconds["started_at"])
    data["flags"] = pd.array([_flag_names(v) for v in raw["flags"]], dtype=_TEXT)
    frame = pd.DataFrame({name: data[name] for name in FRAME_COLUMNS})
    for name, dtype in FRAME_DTYPES.items():
        if frame[name].dtype != dtype:
            frame[name] = frame[name].astype(dtype)
    return frame


HISTORY_DTYPES: dict[str, Any] = {
    "time": _TIME,
    "step": pd.Int64Dtype(),
    "total_steps": pd.Int64Dtype(),
    "loss": _FLOAT,  # NaN both when the loss was NaN and when the read had none: see `loss_nan`
    "loss_nan": np.dtype("bool"),
    "rate": _FLOAT,
    "reads": pd.Int64Dtype(),  # progress reads the row stands for (older rows are merged neighbours)
}


def history_frame(samples: Sequence[Sample]) -> pd.DataFrame:
    """One row per kept progress read, oldest first, with fixed columns and dtypes (`HISTORY_DTYPES`)."""
    time, _ = _times([round(s.t * 1e6) for s in samples])
    frame = pd.DataFrame(
        {
            "time": time,
            "step": pd.array([s.step for s in samples], dtype=pd.Int64Dtype()),
            "total_steps": pd.array([s.total for s in samples], dtype=pd.Int64Dtype()),
            "loss": np.array([np.nan if s.loss is None else s.loss for s in samples], dtype="float64"),
            "loss_nan": np.array([s.nan for s in samples], dtype="bool"),
            "rate": np.array([np.nan if s.rate is None else s.rate for s in samples], dtype="float64"),
            "reads": pd.array([s.n for s in samples], dtype=pd.Int64Dtype()),
        }
    )
    for name, dtype in HISTORY_DTYPES.items():
        if frame[name].dtype != dtype:
            frame[name] = frame[name].astype(dtype)
    return frame
