"""The job's field table (core/fields.py) against the model, the JSON, the frame and the stores: a field
added in one place and not the others fails here (or when models.py is imported)."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobwidget.core import fields
from jobwidget.core.columns import HEALTH_COLUMNS, ROW_COLUMNS
from jobwidget.core.fields import API_FIELDS, FRAME_FIELDS, JOB_FIELDS, JobField, check_model, job_schema
from jobwidget.core.keys import HealthFlag
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.results import InlineProgress, ProviderCheck, SyncResult
from jobwidget.core.schema import Kind, dataclass_schema, kind_of, schema_of
from jobwidget.engine.stores import JobStore
from jobwidget.engine.stores.sqlite_rows import _COLUMNS

from . import store_contract


def test_the_table_describes_every_field_of_the_model_and_only_those():
    stored = [f.name for f in JOB_FIELDS if f.stored]
    assert sorted(stored) == sorted(f.name for f in dataclasses.fields(Job))
    for f in JOB_FIELDS:
        if not f.stored:
            assert isinstance(getattr(Job, f.name), property), f.name


def test_a_field_added_to_the_model_without_a_row_is_refused():
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Wider(Job):
        priority: int | None = None

    with pytest.raises(TypeError, match="'priority'"):
        check_model(Wider)


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        (JobField("priority", "a row without its field"), "'priority'"),
        (JobField("eta", "a derived row without its property", stored=False), "'eta' is not a property"),
        (JobField("name", "a row twice"), "twice"),
        (JobField("cost", "read from nowhere", stored=False, read="nowhere"), "not a property"),
    ],
)
def test_a_row_without_its_field_is_refused(monkeypatch: pytest.MonkeyPatch, row: JobField, needle: str):
    monkeypatch.setattr(fields, "JOB_FIELDS", (*JOB_FIELDS, row))
    with pytest.raises(TypeError, match=needle):
        check_model(Job)


def _full_job() -> Job:
    return store_contract.full_job().evolve(updated_at=datetime(2026, 3, 4, tzinfo=UTC))


def test_to_dict_has_the_api_fields_in_the_table_order_as_json_values():
    data = _full_job().to_dict()
    assert list(data) == [f.name for f in API_FIELDS]
    schema = job_schema(Job)
    assert list(schema["properties"]) == list(data) == schema["required"]
    py_types = {"string": str, "number": (int, float), "object": dict, "integer": int, "boolean": bool}
    for name, value in data.items():
        prop = schema["properties"][name]
        if value is None:
            assert prop.get("nullable"), name
            continue
        assert isinstance(value, py_types[prop["type"]]) and not isinstance(value, bool), (name, value)
        if prop.get("format") == "date-time":
            assert value.endswith("Z") and datetime.fromisoformat(value).tzinfo is not None
    assert data["status"] in schema["properties"]["status"]["enum"]


def test_a_running_job_s_json_cost_is_its_cost_so_far():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job(
        job_id="j1",
        provider="replicate",
        status=JobStatus.RUNNING,
        started_at=start,
        metadata={"price_per_s": 0.001},
    )
    cost = job.to_dict()["cost_usd"]
    assert cost is not None and cost > 0 and cost == round(cost, 6)
    assert job.cost_usd is None  # the stored cost is not rewritten


def test_the_frame_and_store_columns_follow_the_table():
    from jobwidget.core.frame import FRAME_COLUMNS, FRAME_DTYPES

    assert FRAME_COLUMNS == tuple(f.name for f in FRAME_FIELDS) == tuple(FRAME_DTYPES)
    assert tuple(f.name for f in FRAME_FIELDS if f.stored) == ROW_COLUMNS
    derived = {f.name for f in FRAME_FIELDS if not f.stored}
    assert derived == set(HEALTH_COLUMNS) - {"price_per_s"} | {"queue_seconds", "duration_seconds"}
    assert tuple(f.name for f in dataclasses.fields(Job)) == _COLUMNS


def test_the_sqlite_jobs_table_has_a_column_for_every_stored_field(tmp_path: Path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.close()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    assert columns == {f.name for f in JOB_FIELDS if f.stored} | {"rev"}


def test_the_contract_s_full_job_sets_every_stored_field():
    """So the store contract's round trip proves each column is kept (a field without a migration fails)."""
    job = store_contract.full_job()
    unset = [f.name for f in dataclasses.fields(Job) if getattr(job, f.name) is None]
    assert unset == ["updated_at"]  # the store sets it


# --------------------------------------------------------------------------------- types -> schemas


def test_kinds_and_schemas_of_type_hints():
    assert kind_of(str | None) is Kind.TEXT and kind_of(bool) is Kind.BOOLEAN and kind_of(int) is Kind.INTEGER
    assert kind_of(datetime | None) is Kind.TIME and kind_of(JobStatus) is Kind.ENUM
    assert schema_of(float | None) == {"type": "number", "nullable": True}
    assert schema_of(JobStatus)["enum"] == [s.value for s in JobStatus]
    assert schema_of(dict[str, HealthFlag], "why") == {
        "type": "object",
        "description": "why",
        "additionalProperties": {
            "type": "object",
            "properties": {"reason": {"type": "string"}, "raised_at": {"type": "number"}},
        },
    }
    assert schema_of(dict[str, Any]) == {"type": "object"}


@pytest.mark.parametrize("hint", [tuple[str, ...], list[int], int | str, bytes])
def test_a_type_without_a_json_kind_is_refused_by_name(hint: Any):
    with pytest.raises(TypeError, match="JSON kind"):
        kind_of(hint)


@pytest.mark.parametrize(
    ("value", "schema"),
    [
        (
            InlineProgress("j1", "Training", "step 1/2", 50.0, step=1, total_steps=2),
            dataclass_schema(InlineProgress),
        ),
        (
            ProviderCheck(ok=True, message="ok", account="alice", latency_ms=3.5),
            dataclass_schema(ProviderCheck),
        ),
        (SyncResult(1, 2, "m", ("a",)), dataclass_schema(SyncResult, SyncResult.JSON_FIELDS)),
    ],
)
def test_result_schemas_describe_their_to_dict(value: Any, schema: dict[str, Any]):
    data = value.to_dict()
    assert set(data) == set(schema["properties"]) == set(schema["required"])
    py_types = {"string": str, "number": (int, float), "integer": int, "boolean": bool}
    for name, v in data.items():
        prop = schema["properties"][name]
        assert (v is None and prop.get("nullable")) or isinstance(v, py_types[prop["type"]]), (name, v)
