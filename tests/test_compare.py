"""Comparing and retrying runs, without a provider: what a training request accepts, how a retry is
derived from a job, inputs kept across the transition rule and a store upgrade, and the inputs frame."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobwidget import InvalidRequest
from jobwidget.core.columns import HEALTH_COLUMNS, ROW_COLUMNS
from jobwidget.core.frame import FRAME_COLUMNS
from jobwidget.core.frame_inputs import OUTPUT_COLUMNS, jobs_frame_with_inputs
from jobwidget.core.pricing import Pricing
from jobwidget.core.replicate_convert import MAX_INPUT_BYTES, training_to_job
from jobwidget.core.rules import merge_job
from jobwidget.core.training_request import TrainingRequest, destination_of, retry_request
from jobwidget.engine.stores import JobStore
from jobwidget.engine.stores import sqlite_file as store_mod

from .fakes import make_job

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
V = "a" * 64


def _request(**kw: object) -> TrainingRequest:
    base: dict[str, object] = {
        "model": "o/trainer",
        "version": V,
        "destination": "me/lora",
        "input": {"steps": 5},
    }
    return TrainingRequest.make(**{**base, **kw})  # type: ignore[arg-type]


# -------------------------------------------------------------------------------- training request


def test_request_path_and_body() -> None:
    req = _request(webhook="https://h.example/hook")
    assert req.path() == f"models/o/trainer/versions/{V}/trainings"
    assert req.body() == {
        "destination": "me/lora",
        "input": {"steps": 5},
        "webhook": "https://h.example/hook",
        "webhook_events_filter": ["start", "completed"],
    }
    assert "webhook" not in _request().body()
    assert _request(model=None, version=f"o/trainer:{V}").model == "o/trainer"
    assert _request(model=f"o/trainer:{V}", version=None).version == V


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"model": "trainer"}, "model must be 'owner/name'"),
        ({"model": "../x/y"}, "model must be 'owner/name'"),
        ({"version": "a/b"}, "version must be a version id"),
        ({"version": ""}, "version is required"),
        ({"model": "o/one", "version": f"o/two:{V}"}, "version names model 'o/two' but model is 'o/one'"),
        ({"destination": "me"}, "destination must be 'owner/name'"),
        ({"input": ["steps", 5]}, "input must be a dict"),
        ({"input": {"steps": float("inf")}}, "input.steps is inf"),
        ({"input": {1: "x"}}, "has a key 1 that is not a string"),
        ({"webhook": "ftp://h.example/x"}, "webhook must be an http(s) URL"),
        ({"webhook": "https://h/x", "webhook_events_filter": []}, "webhook_events_filter must be some of"),
    ],
)
def test_request_refuses_what_cannot_be_sent(kw: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidRequest, match=says.replace("(", r"\(").replace(")", r"\)")):
        _request(**kw)


def test_matches_only_the_same_trainer_version_and_inputs() -> None:
    req = _request(input={"steps": 5, "rank": [1, 2]})
    job = make_job(1, version=V, inputs={"rank": [1, 2], "steps": 5}).evolve(model="o/trainer")
    assert req.matches(job)
    assert not req.matches(job.evolve(inputs={"steps": 6, "rank": [1, 2]}))
    assert not req.matches(job.evolve(version="b" * 64))
    assert not req.matches(job.evolve(inputs=None))


def test_retry_request_keeps_everything_but_the_changes() -> None:
    job = make_job(
        1, "failed", version=V, inputs={"steps": 5, "lr": 1e-4}, metadata={"destination": "me/lora"}
    )
    req = retry_request(job, {"lr": 2e-4})
    assert (req.model, req.version, req.destination) == (job.model, V, "me/lora")
    assert req.input == {"steps": 5, "lr": 2e-4} and req.retry_of == job.job_id
    assert destination_of(make_job(2, output={"version": "me/from-output:abc"})) == "me/from-output"
    with pytest.raises(InvalidRequest, match="pass destination="):
        retry_request(job.evolve(metadata={}), {})
    with pytest.raises(InvalidRequest, match="no version on record"):
        retry_request(job.evolve(version=None), {})
    with pytest.raises(InvalidRequest, match="inputs of job job00001 are not known"):
        retry_request(job.evolve(inputs=None), {})


# ------------------------------------------------------------------------------ inputs on the job


def test_inputs_come_from_the_training_and_oversized_ones_are_not_kept() -> None:
    data = {"id": "t1", "status": "succeeded", "model": "o/t", "input": {"steps": 5, "name": "a\ud800b"}}
    job = training_to_job(data, pricing=Pricing(), now=NOW)
    assert job.inputs == {"steps": 5, "name": "a\ufffdb"}, "lone surrogates cleaned like other text"
    huge = training_to_job({**data, "input": {"blob": "x" * MAX_INPUT_BYTES}}, pricing=Pricing(), now=NOW)
    assert huge.inputs is None and "more than the 256 KB kept" in huge.metadata["inputs_omitted"]
    odd = training_to_job({**data, "input": "not an object"}, pricing=Pricing(), now=NOW)
    assert odd.inputs is None and "not an object" in odd.metadata["inputs_omitted"]


def test_a_finished_job_gains_inputs_and_link_but_never_loses_them() -> None:
    done = make_job(1, "completed")
    seen = merge_job(done, done.evolve(inputs={"steps": 5}, retry_of="job0"))
    assert seen.inputs == {"steps": 5} and seen.retry_of == "job0"
    assert merge_job(seen, seen.evolve(inputs=None, retry_of=None)) == seen
    running = make_job(2, inputs={"steps": 5}, retry_of="job0")
    assert merge_job(running, running.evolve(inputs=None, retry_of=None, progress=10.0)).inputs == {
        "steps": 5
    }


def test_a_schema_2_store_upgrades_in_place_keeping_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    for version in (1, 2):
        for statement in store_mod._MIGRATIONS[version]:
            conn.execute(statement)
    conn.execute(
        "INSERT INTO jobs (job_id, provider, status, model, created_at, metadata) VALUES (?, ?, ?, ?, ?, ?)",
        ("old1", "replicate", "completed", "o/t", 1_700_000_000_000_000, "{}"),
    )
    conn.execute("PRAGMA user_version = 2")
    conn.execute(f"PRAGMA application_id = {store_mod.APPLICATION_ID}")
    conn.commit()
    conn.close()
    with JobStore(path) as store:
        old = store.get("old1")
        assert old is not None and old.inputs is None and old.retry_of is None
        store.upsert([old.evolve(inputs={"steps": 7})])
        assert store.get("old1").inputs == {"steps": 7}
        assert [j.job_id for j in store.list(model="o/t")] == ["old1"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "jobs_model_created" in indexes
    conn.close()


# ------------------------------------------------------------------------------------ the frame


def test_inputs_frame_has_a_column_per_input_with_the_narrowest_dtype(tmp_path: Path) -> None:
    jobs = [
        make_job(
            1,
            "completed",
            cost_usd=1.0,
            inputs={"steps": 500, "lr": 1e-4, "rank": 16, "caption": True},
            output={"version": "me/a:1", "weights": "https://w.example/1.tar"},
        ),
        make_job(
            2, "completed", cost_usd=3.0, inputs={"steps": 1000, "lr": 2e-4, "rank": 16, "res": [512, 768]}
        ),
        make_job(3, "failed", cost_usd=0.5, inputs={"steps": 1000, "lr": 1, "rank": 32, "caption": False}),
        make_job(4, "running", retry_of="job00003"),
    ]
    with JobStore(tmp_path / "j.sqlite3") as store:
        store.upsert(jobs)
        df = jobs_frame_with_inputs(store.frame_rows_with_inputs())
    inputs = ["input.caption", "input.lr", "input.rank", "input.res", "input.steps"]
    assert list(df.columns) == [*FRAME_COLUMNS, *OUTPUT_COLUMNS, *inputs]
    assert df["input.steps"].dtype == "Int64" and df["input.rank"].dtype == "Int64"
    assert df["input.lr"].dtype == np.float64, "ints and floats mixed: float"
    assert df["input.caption"].dtype == "boolean"
    assert df.set_index("job_id").loc["job00002", "input.res"] == "[512,768]", "lists as JSON text"
    assert df.groupby("input.rank")["cost_usd"].mean().to_dict() == {16: 2.0, 32: 0.5}
    by_id = df.set_index("job_id")
    assert by_id.loc["job00001", "output_version"] == "me/a:1"
    assert by_id.loc["job00001", "weights_url"] == "https://w.example/1.tar"
    assert by_id.loc["job00004", "retry_of"] == "job00003" and pd.isna(by_id.loc["job00004", "input.steps"])
    empty = jobs_frame_with_inputs([])
    assert list(empty.columns) == [*FRAME_COLUMNS, *OUTPUT_COLUMNS] and len(empty) == 0


def test_inputs_frame_survives_odd_stored_json() -> None:
    row = ("j1", "replicate", "completed", *([None] * (len(ROW_COLUMNS) + len(HEALTH_COLUMNS) - 3)))
    df = jobs_frame_with_inputs([(*row, "{broken", json.dumps([1, 2]), None)])
    assert len(df) == 1 and pd.isna(df.loc[0, "output_version"])
