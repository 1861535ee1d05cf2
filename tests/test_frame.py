from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from jobwidget.core.frame import FRAME_COLUMNS, FRAME_DTYPES, jobs_frame
from jobwidget.core.models import Job, JobStatus
from jobwidget.engine.stores import JobStore

EXPECTED_COLUMNS = [
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
    "queue_seconds",
    "duration_seconds",
    "cost_usd",
    "error_message",
    "last_log",
    "projected_finish_at",
    "projected_cost_usd",
    "flags",
]


def _check_dtypes(df: pd.DataFrame) -> None:
    assert list(df.columns) == EXPECTED_COLUMNS == list(FRAME_COLUMNS)
    assert isinstance(df["status"].dtype, pd.CategoricalDtype)
    assert list(df["status"].cat.categories) == [s.value for s in JobStatus]
    for col in ("created_at", "started_at", "completed_at", "projected_finish_at"):
        assert isinstance(df[col].dtype, pd.DatetimeTZDtype) and str(df[col].dt.tz) == "UTC"
    for col in ("queue_seconds", "duration_seconds", "cost_usd", "progress", "projected_cost_usd"):
        assert df[col].dtype == np.float64
    assert dict(df.dtypes) == FRAME_DTYPES


def test_empty_frame_has_the_same_columns_and_dtypes():
    df = jobs_frame([])
    assert len(df) == 0
    _check_dtypes(df)
    assert df.groupby("status", observed=False)["cost_usd"].sum().to_dict() == {
        s.value: 0.0 for s in JobStatus
    }


def test_frame_from_store_values_and_dtypes():
    t = datetime(2026, 5, 1, 10, tzinfo=UTC)
    s = JobStore(":memory:")
    s.upsert(
        [
            Job(
                job_id="a",
                provider="replicate",
                status="completed",
                created_at=t,
                started_at=t + timedelta(seconds=90),
                completed_at=t + timedelta(seconds=690),
                cost_usd=0.915,
                name="é",
                hardware="gpu-h100",
            ),
            Job(
                job_id="b",
                provider="replicate",
                status="running",
                created_at=t + timedelta(hours=1),
                progress=30.0,
                stage="Training",
                last_log="step 300/1000",
            ),
            Job(job_id="c", provider="replicate", status="failed", error_message="OOM"),
        ]
    )
    df = jobs_frame(s.frame_rows())
    _check_dtypes(df)
    assert list(df["job_id"]) == ["b", "a", "c"]  # newest first, undated last
    a = df.set_index("job_id").loc["a"]
    assert a["queue_seconds"] == 90.0 and a["duration_seconds"] == 600.0 and a["cost_usd"] == 0.915
    assert a["created_at"] == pd.Timestamp("2026-05-01T10:00:00Z") and a["name"] == "é"
    b = df.set_index("job_id").loc["b"]
    assert pd.isna(b["completed_at"]) and np.isnan(b["duration_seconds"]) and b["progress"] == 30.0
    totals = df.groupby("status", observed=False)["cost_usd"].sum()
    assert totals["completed"] == pytest.approx(0.915) and totals["cancelled"] == 0.0
