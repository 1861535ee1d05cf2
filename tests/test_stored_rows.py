"""Jobs built from store rows decode each field when first read (core/stored.py): whatever is read first,
in whatever order, from however many threads, the job is the one that was written."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import pickle
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobwidget.core.models import Job, JobStatus, _clean, _clean_walk
from jobwidget.core.stored import RowLayout, from_epoch_us, loads_json
from jobwidget.engine.stores import JobStore
from jobwidget.engine.stores.sqlite_rows import _COLUMNS, _job_to_row, _row_to_job

FIELDS = [f.name for f in dataclasses.fields(Job)]
T = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)

texts = st.none() | st.text(max_size=12)
times = st.none() | st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
# Small mappings are decoded with the plain fields, large ones (over 256 characters of JSON) on their own.
mappings = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=80) | st.none(), max_size=8)
jobs = st.builds(
    Job,
    job_id=st.text(min_size=1, max_size=12),
    provider=st.just("replicate"),
    status=st.sampled_from(list(JobStatus)),
    name=texts,
    model=texts,
    created_at=times,
    started_at=times,
    completed_at=times,
    updated_at=times,
    cost_usd=st.none() | st.floats(allow_nan=False),
    progress=st.none() | st.floats(0, 100),
    error_message=texts,
    last_log=texts,
    output=st.none() | mappings,
    metadata=mappings,
    inputs=st.none() | mappings,
    retry_of=texts,
)


def _fields(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in FIELDS}


@settings(max_examples=200, deadline=None)
@given(job=jobs, order=st.permutations(FIELDS))
def test_a_job_read_back_is_the_written_one_whatever_is_read_first(job: Job, order: list[str]) -> None:
    stored = _row_to_job(_job_to_row(job))
    for name in order:
        assert getattr(stored, name) == getattr(job, name), name
    assert stored == job
    assert _fields(stored) == _fields(job)


@settings(max_examples=100, deadline=None)
@given(job=jobs)
def test_an_undecoded_job_compares_copies_pickles_and_evolves_as_any_job(job: Job) -> None:
    row = _job_to_row(job)
    assert _row_to_job(row) == job
    assert repr(_row_to_job(row)) == repr(job)
    assert _row_to_job(row).to_dict() == job.to_dict()
    assert pickle.loads(pickle.dumps(_row_to_job(row))) == job
    assert copy.copy(_row_to_job(row)) == job
    assert _row_to_job(row).evolve(name="renamed") == job.evolve(name="renamed")
    assert dataclasses.asdict(_row_to_job(row)) == dataclasses.asdict(job)


def test_missing_attributes_are_still_missing_before_and_after_decoding() -> None:
    stored = _row_to_job(_job_to_row(Job(job_id="a", provider="replicate", status="running")))
    assert not hasattr(stored, "no_such_field")
    assert getattr(stored, "_repr_mimebundle_", None) is None  # what IPython probes for
    assert stored.status is JobStatus.RUNNING
    assert not hasattr(stored, "no_such_field")
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.name = "x"  # type: ignore[misc]


def test_the_row_is_let_go_once_every_field_is_decoded() -> None:
    big = {f"key{i}": "value" * 10 for i in range(20)}  # large enough to be decoded on its own
    job = Job(job_id="a", provider="replicate", status="completed", output={"a": 1}, metadata=big)
    stored = _row_to_job(_job_to_row(job))
    with pytest.raises(AttributeError):
        job._pending  # noqa: B018 - a job built by its constructor never holds a row
    for name in FIELDS:
        if name != "metadata":
            getattr(stored, name)
    assert stored._pending is not None, "the row went before metadata was decoded"
    assert stored.metadata == big
    with pytest.raises(AttributeError):
        stored._pending  # noqa: B018
    assert stored == job


def test_a_job_read_from_a_store_is_one_object_the_collector_tracks(tmp_path: Any) -> None:
    # Its undecoded row is held in plain values, which a collection stops tracking: ten thousand jobs
    # read at once add ten thousand tracked objects, not thirty (what made a full collection likely).
    big = {f"key{i}": "value" * 10 for i in range(20)}
    job = Job(job_id="a", provider="replicate", status="running", created_at=T, metadata=big)
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        store.upsert([job], now=T)
        listed = store.list()[0]
        gc.collect()
        assert gc.is_tracked(listed)
        assert not gc.is_tracked(listed._pending), f"a stored job's row stays tracked: {listed._pending!r}"
        assert listed.status is JobStatus.RUNNING
        gc.collect()  # only the large mapping is left undecoded: still plain values, one pass enough
        assert listed._pending is not None and not gc.is_tracked(listed._pending)
        assert listed.metadata == big
        assert listed == job.evolve(updated_at=T)


def test_threads_reading_one_job_at_once_all_see_the_written_values() -> None:
    job = Job(
        job_id="a",
        provider="replicate",
        status="running",
        created_at=T,
        metadata={"inline": {"step": 3}, "price_per_s": 0.001},
        output={"weights": "w"},
    )
    expected = _fields(job)
    for _ in range(50):
        stored = _row_to_job(_job_to_row(job))
        seen: list[dict[str, Any]] = []
        barrier = threading.Barrier(4)

        def read(
            order: list[str],
            stored: Job = stored,
            barrier: threading.Barrier = barrier,
            seen: list[dict[str, Any]] = seen,
        ) -> None:
            barrier.wait(timeout=10)
            seen.append({name: getattr(stored, name) for name in order})

        threads = [threading.Thread(target=read, args=(FIELDS[k:] + FIELDS[:k],)) for k in (0, 5, 12, 18)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert len(seen) == 4, "a reading thread never finished"
        assert all(s == expected for s in seen)


def test_store_reads_are_undecoded_until_used(tmp_path: Any) -> None:
    job = Job(job_id="a", provider="replicate", status="running", created_at=T, metadata={"x": 1})
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        store.upsert([job], now=T)
        listed = store.list()[0]
        got = store.get("a")
        assert got is not None
        assert listed._pending is not None and got._pending is not None
        assert listed == got == job.evolve(updated_at=T)


def test_a_layout_must_name_every_field_once() -> None:
    with pytest.raises(ValueError, match="every Job field"):
        RowLayout(_COLUMNS[:-1], times=(), mappings=())
    with pytest.raises(ValueError, match="every Job field"):
        RowLayout((*_COLUMNS, "job_id"), times=(), mappings=())


@given(st.integers(min_value=-62135596800 * 10**6, max_value=253402300799999999))
def test_epoch_microseconds_decode_exactly(us: int) -> None:
    expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    got = from_epoch_us(us)
    assert got == expected and got is not None and got.tzinfo is UTC


@pytest.mark.parametrize("text", ['{"a": 1}', "[1, 2]", '"s"', "null", "1e400", '{"a": NaN}', "{}"])
def test_loads_json_reads_what_json_loads_reads(text: str) -> None:
    assert json.dumps(loads_json(text)) == json.dumps(json.loads(text))


@pytest.mark.parametrize("text", ['  {"a": 1} ', '{"a": 1}\n'])
def test_loads_json_accepts_surrounding_whitespace_as_json_loads_does(text: str) -> None:
    assert loads_json(text) == {"a": 1}


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "nope"])
def test_loads_json_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_json(text)


# -- evolve checks only what changes ----------------------------------------------------------------

changes = st.fixed_dictionaries(
    {},
    optional={
        "job_id": st.text(max_size=6),
        "status": st.sampled_from([*JobStatus, "running", "bogus"]),
        "name": texts | st.just("bad \ud800 surrogate"),
        "error_message": texts | st.just("token r8_abcdefghijkl leaked"),
        "last_log": texts | st.just("é r8_abcdefghijkl"),
        "metadata": mappings | st.just({"k": ["\udc00", {"n": "\ud800"}]}),
        "output": st.none() | mappings,
        "created_at": times | st.just(datetime(2026, 1, 1)),  # naive: refused
        "cost_usd": st.none() | st.integers(0, 10),
        "progress": st.none() | st.integers(0, 100),
    },
)


@settings(max_examples=300, deadline=None)
@given(job=jobs, change=changes, stored=st.booleans())
def test_evolve_is_dataclasses_replace(job: Job, change: dict[str, Any], stored: bool) -> None:
    base = _row_to_job(_job_to_row(job)) if stored else job
    try:
        expected: Job | type[Exception] = dataclasses.replace(job, **change)
    except (ValueError, TypeError) as exc:
        expected = type(exc)
    if isinstance(expected, Job):
        got = base.evolve(**change)
        assert got == expected and _fields(got) == _fields(expected)
        assert type(got.status) is JobStatus and type(got.cost_usd) in (float, type(None))
    else:
        with pytest.raises(expected):
            base.evolve(**change)


def test_evolve_refuses_an_unknown_field() -> None:
    with pytest.raises(TypeError, match="no field 'colour'"):
        Job(job_id="a", provider="replicate", status="running").evolve(colour="red")


# -- cleaning mappings: a quick look first, a rebuild only when a string needs it ---------------------

_leaves = st.text(max_size=4) | st.sampled_from(["\ud800", "a\udfffb", "é"]) | st.integers() | st.none()
_nested = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=3) | st.just("\udc01") | st.integers(), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(value=_nested)
def test_cleaning_is_the_full_walk_and_keeps_clean_values_as_they_are(value: Any) -> None:
    cleaned = _clean(value)
    assert repr(cleaned) == repr(_clean_walk(value))
    if repr(cleaned) == repr(value):
        assert cleaned is value  # nothing to clean: nothing rebuilt
    json.dumps(cleaned, ensure_ascii=False).encode("utf-8")  # no lone surrogate is left
