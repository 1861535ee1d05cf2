"""`to_dataframe(inputs=True)`: the export frame plus what runs are compared by.

One column per input key any job has (`input.steps`, `input.learning_rate`, ...), so runs group by what
they were started with (`df.groupby("input.lora_rank")["cost_usd"].mean()`), plus what they produced
(`output_version`, `weights_url`) and the job each retries (`retry_of`). A job without a key gets a
missing value there. Each input column takes the narrowest dtype its values fit (nullable boolean,
nullable integer, float, string); lists and objects become their JSON text, so grouping by them works.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from jobwidget.core.columns import HEALTH_COLUMNS, ROW_COLUMNS
from jobwidget.core.frame import jobs_frame

__all__ = ["INPUT_PREFIX", "OUTPUT_COLUMNS", "jobs_frame_with_inputs"]

INPUT_PREFIX = "input."
OUTPUT_COLUMNS = ("retry_of", "output_version", "weights_url")
_TEXT = pd.StringDtype("python")


def _loads(text: Any) -> Any:
    if not isinstance(text, str) or not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _scalar(value: Any) -> Any:
    """A value pandas can group by: lists and objects as their JSON text."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return value


def _column(values: list[Any]) -> Any:
    """The narrowest column the non-missing `values` fit."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pd.array(values, dtype="boolean")
    integers = all(isinstance(v, int) and not isinstance(v, bool) for v in present)
    if present and integers and all(-(2**63) <= v < 2**63 for v in present):
        return pd.array(values, dtype="Int64")
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if v is None else float(v) for v in values], dtype="float64")
    if all(isinstance(v, str) for v in present):
        return pd.array(values, dtype=_TEXT)
    return pd.array([_scalar(v) for v in values], dtype=object)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def jobs_frame_with_inputs(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """Build the frame from `JobStore.frame_rows_with_inputs()` rows (ROW_COLUMNS, inputs, output,
    retry_of): the fixed columns first, then `OUTPUT_COLUMNS`, then the input columns by name."""
    n = len(ROW_COLUMNS) + len(HEALTH_COLUMNS)
    base = jobs_frame([row[:n] for row in rows])
    inputs = [_loads(row[n]) for row in rows]
    outputs = [_loads(row[n + 1]) for row in rows]
    extra: dict[str, Any] = {
        "retry_of": pd.array([_text(row[n + 2]) for row in rows], dtype=_TEXT),
        "output_version": pd.array(
            [_text(o.get("version")) if isinstance(o, dict) else None for o in outputs], dtype=_TEXT
        ),
        "weights_url": pd.array(
            [_text(o.get("weights")) if isinstance(o, dict) else None for o in outputs], dtype=_TEXT
        ),
    }
    keys = sorted({key for d in inputs if isinstance(d, dict) for key in d})
    for key in keys:
        extra[INPUT_PREFIX + key] = _column([d.get(key) if isinstance(d, dict) else None for d in inputs])
    return pd.concat([base, pd.DataFrame(extra, index=base.index)], axis=1)
