"""Replicate training JSON -> Job: every recorded fixture, the status map, timestamps, cost, and bodies of
the wrong shape (MalformedResponse, never KeyError/TypeError)."""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobwidget.core.errors import MalformedResponse
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.pricing import Pricing
from jobwidget.core.replicate_convert import (
    STATUS_MAP,
    UNKNOWN_STATUS_PLACEHOLDER,
    is_valid_job_id,
    parse_hardware,
    parse_page,
    parse_timestamp,
    problem_detail,
    training_to_job,
    validate_page,
)
from jobwidget.core.rules import merge_job

from .paths import REPLICATE_FIXTURES

FIXTURES = sorted(REPLICATE_FIXTURES.glob("*.json"))
PRICING = Pricing()
SDXL_PRICE = PRICING.price_per_second("gpu-a40-large")
# Fixed "now": 100 s after the processing fixture's started_at (2023-08-16T19:33:42.114513Z).
NOW = datetime(2023, 8, 16, 19, 35, 22, 114513, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((REPLICATE_FIXTURES / name).read_text())


def convert(data: Any, now: datetime = NOW, pricing: Pricing = PRICING) -> Job:
    return training_to_job(data, pricing=pricing, now=now)


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def base_training(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "medrnz3bm5dd6ultvad2tejrte",
        "model": "stability-ai/sdxl",
        "version": "39ed52f2",
        "status": "processing",
        "created_at": "2023-08-16T19:33:26.906823Z",
        "started_at": "2023-08-16T19:33:42.114513Z",
        "completed_at": None,
        "metrics": {},
        "output": None,
        "error": None,
        "urls": {},
    }
    data.update(changes)
    return data


# ----------------------------------------------------------------------------- every fixture in the folder

# What each recorded body must become. A file added to the folder fails `test_every_fixture_has_expectations`
# until someone decides what it means here.
EXPECTED: dict[str, dict[str, Any]] = {
    "replicate_python_cassette_trainings_create_201_starting.json": {
        "status": JobStatus.QUEUED,
        "created_at": dt("2023-08-16T19:33:26.678378"),  # 9 fractional digits, truncated
        "started_at": None,
        "cost_usd": None,
        "hardware": "gpu-a40-large",
        "web_url": "https://replicate.com/p/wj4is6lbdqqkdepnwpr6v2kuva",  # no urls.web: built from the id
        "name": "sdxl training · wj4is6lb",
    },
    "replicate_python_cassette_trainings_create_201_starting_2.json": {
        "status": JobStatus.QUEUED,
        "created_at": dt("2023-08-16T19:33:27.075263"),  # 8 fractional digits
    },
    "replicate_python_cassette_trainings_cancel_200_canceled.json": {
        "status": JobStatus.CANCELLED,
        "cost_usd": round(3e-06 * SDXL_PRICE, 6),  # predict_time in exponent form
        "completed_at": dt("2023-08-16T19:33:27.215203"),
        "error_message": None,
        "output": None,
    },
    "replicate_python_cassette_trainings_get_200_processing.json": {
        "status": JobStatus.RUNNING,
        "cost_usd": None,  # the price is stored; the cost so far is derived where it is read
        "metadata.price_per_s": SDXL_PRICE,
        "metadata.cost_estimate": True,
        "cost_is_estimate": True,
    },
    "replicate_python_respx_trainings_get_succeeded.json": {
        "status": JobStatus.COMPLETED,
        "cost_usd": round(502.713876 * SDXL_PRICE, 6),
        "output": {
            "version": "replicate/my-app-image-generator:"
            "8a43525956ef4039702e509c789964a7ea873697be9033abf9fd2badfe68c9e3",
            "weights": "https://weights.replicate.com/example.tar",
        },
        "name": "my-app-image-generator · zz4ibbon",  # named after what it produced
        "duration_seconds": pytest.approx(502.713876, abs=0.001),
    },
    "openapi_doc_trainings_get_response_200_succeeded.json": {
        "status": JobStatus.COMPLETED,
        "web_url": "https://replicate.com/p/zz4ibbonubfz7carwiefibzgga",  # from urls.web
        "output": {"version": "...", "weights": "..."},
        "name": "sdxl training · zz4ibbon",  # "..." is no model reference: falls back to the trainer
        "metadata.predict_time": 502.713876,
    },
    "openapi_doc_trainings_create_response_201.json": {
        "status": JobStatus.QUEUED,
        "created_at": dt("2023-09-08T16:32:56.990893"),
    },
    "openapi_doc_predictions_get_response_200.json": {
        "status": JobStatus.COMPLETED,
        "hardware": None,  # a prediction's model is no known trainer: no invented price
        "cost_usd": None,
        "output": {"value": "hello Alice"},
    },
    "openapi_doc_trainings_list_response_200.json": {"page": 1, "next": None},
    "openapi_doc_predictions_list_response_200.json": {"page": 1, "next": None},
    "replicate_swift_mock_trainings_list_200_with_cursor.json": {
        "page": 1,
        "next": "https://api.replicate.com/v1/trainings?cursor="
        "g5FWfcbO0EdVeR27rkXr0Z6tI0MjrW34ZejxnGzDeND3phpWWsyMGCQD",
    },
    # Not trainings: refused with MalformedResponse by both entry points.
    "openapi_doc_trainings_create_request.json": {"malformed": True},
    "replicate_python_cassette_trainings_create_404_problem_json.json": {"malformed": True},
    "replicate_python_cassette_hardware_list_200.json": {"malformed": True},
    "replicate_python_webhook_test_vector.json": {"malformed": True},
}


def test_reference_folder_is_there() -> None:
    assert FIXTURES, f"no JSON fixtures in {REPLICATE_FIXTURES}"


def test_every_fixture_has_expectations() -> None:
    missing = sorted(p.name for p in FIXTURES if p.name not in EXPECTED)
    assert not missing, f"new fixtures without expectations in EXPECTED: {missing}"


def _check_job(job: Job, data: dict[str, Any]) -> None:
    assert job.job_id == data["id"]
    assert job.provider == "replicate"
    assert job.status is STATUS_MAP[data["status"]]
    assert job.metadata["provider_status"] == data["status"]
    assert "unknown_status" not in job.metadata
    assert job.model == data.get("model")
    assert job.version == data.get("version")
    for when in (job.created_at, job.started_at, job.completed_at, job.updated_at):
        assert when is None or when.tzinfo is UTC
    assert job.web_url is None or job.web_url.startswith("https://")
    assert job.name and job.job_id[:8] in job.name
    assert job.cost_usd is None or job.cost_usd >= 0
    json.dumps(job.to_dict())  # JSON-ready for the HTTP API and the panel


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_every_fixture_converts_or_is_refused(path: Path) -> None:
    body = json.loads(path.read_text())
    expected = EXPECTED.get(path.name, {})
    if expected.get("malformed") or not (isinstance(body, dict) and ("results" in body or "id" in body)):
        with pytest.raises(MalformedResponse):
            training_to_job(body, pricing=PRICING, now=NOW)
        with pytest.raises(MalformedResponse):
            parse_page(body, pricing=PRICING, now=NOW)
        return
    if "results" in body:
        jobs, next_url = parse_page(body, pricing=PRICING, now=NOW)
        assert [j.job_id for j in jobs] == [r["id"] for r in body["results"]]
        for job, raw in zip(jobs, body["results"], strict=True):
            _check_job(job, raw)
        assert len(jobs) == expected.get("page", len(jobs))
        assert next_url == expected.get("next", next_url)
        return
    job = convert(body)
    _check_job(job, body)
    for key, want in expected.items():
        if key.startswith("metadata."):
            assert job.metadata.get(key.split(".", 1)[1]) == want, key
        else:
            assert getattr(job, key) == want, key


def test_problem_fixture_detail() -> None:
    body = load("replicate_python_cassette_trainings_create_404_problem_json.json")
    assert problem_detail(body) == "The specified training destination does not exist"
    assert problem_detail({"title": "Unauthenticated", "status": 401}) == "Unauthenticated"
    assert problem_detail(["not", "a", "problem"]) is None


def test_hardware_fixture() -> None:
    hardware = parse_hardware(load("replicate_python_cassette_hardware_list_200.json"))
    assert hardware["gpu-t4"] == "Nvidia T4 GPU"
    assert set(hardware) <= set(PRICING.prices)
    with pytest.raises(MalformedResponse):
        parse_hardware({"sku": "cpu"})
    with pytest.raises(MalformedResponse):
        parse_hardware([{"name": "no sku"}])


def test_list_results_carry_no_logs_and_convert_like_get() -> None:
    """A list item and the GET body of one training become the same Job (logs are not part of Job)."""
    from_list = parse_page(load("openapi_doc_trainings_list_response_200.json"), pricing=PRICING, now=NOW)[0][
        0
    ]
    from_get = convert(load("openapi_doc_trainings_get_response_200_succeeded.json"))
    assert from_list.evolve(metadata={}) == from_get.evolve(metadata={})


# ----------------------------------------------------------------------------- status


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("starting", JobStatus.QUEUED),
        ("processing", JobStatus.RUNNING),
        ("succeeded", JobStatus.COMPLETED),
        ("failed", JobStatus.FAILED),
        ("canceled", JobStatus.CANCELLED),
    ],
)
def test_status_map(raw: str, status: JobStatus) -> None:
    job = convert(base_training(status=raw))
    assert job.status is status
    assert job.metadata["provider_status"] == raw


@pytest.mark.parametrize("raw", ["requeued", "PAUSED", "", None, 7, ["processing"]])
def test_unknown_status_is_reported_and_keeps_the_stored_status(raw: Any) -> None:
    job = convert(base_training(status=raw))
    assert job.metadata["unknown_status"]  # truthy, so merge_job keeps the previous status
    assert job.status is UNKNOWN_STATUS_PLACEHOLDER
    running = convert(base_training(status="processing"))
    merged = merge_job(running, job)
    assert merged.status is JobStatus.RUNNING
    assert merged.metadata["unknown_status"] == job.metadata["unknown_status"]
    finished = convert(base_training(status="succeeded", metrics={"predict_time": 10}))
    assert merge_job(finished, job).status is JobStatus.COMPLETED
    # The next known status clears the report.
    assert "unknown_status" not in merge_job(merged, running).metadata


def test_unknown_status_placeholder_never_blocks_a_later_real_status() -> None:
    first = convert(base_training(status="paused"))
    for raw in STATUS_MAP:
        assert merge_job(first, convert(base_training(status=raw))).status is STATUS_MAP[raw]


# ----------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("2023-08-16T19:33:26.678378653Z", datetime(2023, 8, 16, 19, 33, 26, 678378, tzinfo=UTC)),
        ("2023-08-16T19:33:27.07526337Z", datetime(2023, 8, 16, 19, 33, 27, 75263, tzinfo=UTC)),
        ("2023-08-16T19:33:27.215203Z", datetime(2023, 8, 16, 19, 33, 27, 215203, tzinfo=UTC)),
        ("2023-08-16T19:33:27.2Z", datetime(2023, 8, 16, 19, 33, 27, 200000, tzinfo=UTC)),
        ("2023-08-16T19:33:27Z", datetime(2023, 8, 16, 19, 33, 27, tzinfo=UTC)),
        ("2023-08-16T19:33:27", datetime(2023, 8, 16, 19, 33, 27, tzinfo=UTC)),  # no offset: UTC
        ("2023-08-16T21:33:27.5+02:00", datetime(2023, 8, 16, 19, 33, 27, 500000, tzinfo=UTC)),
        ("2023-08-16 19:33:27.123456789+0000", datetime(2023, 8, 16, 19, 33, 27, 123456, tzinfo=UTC)),
        ("2022-04-26T20:00:84.583803Z", None),  # second 84 (replicate-javascript's mock)
        ("2023-02-30T00:00:00Z", None),
        ("0001-01-01T00:00:00Z", None),  # Go's zero time
        ("9999-12-31T23:59:59.999999999Z", None),
        ("2023-08-16T19:33:27+25:00", None),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1692214407, None),
        ("2023-08-16T19:33:27Z" + " " * 100, None),
    ],
)
def test_parse_timestamp(raw: Any, want: datetime | None) -> None:
    assert parse_timestamp(raw) == want


def test_bad_timestamps_never_break_a_job() -> None:
    job = convert(
        base_training(created_at="garbage", started_at={"x": 1}, completed_at="0000-00-00T00:00:00Z")
    )
    assert (job.created_at, job.started_at, job.completed_at) == (None, None, None)
    assert job.cost_usd is None  # no start time: no estimate rather than a wrong one


# ----------------------------------------------------------------------------- cost and hardware


def test_cost_is_predict_time_times_the_trainer_price() -> None:
    job = convert(base_training(status="succeeded", metrics={"predict_time": 200.0, "total_time": 230.5}))
    assert job.hardware == "gpu-a40-large"
    assert job.cost_usd == pytest.approx(200.0 * SDXL_PRICE)
    assert not job.cost_is_estimate
    assert job.metadata["total_time"] == 230.5


def test_multi_gpu_sku_multiplies() -> None:
    pricing = Pricing.from_config({"trainers": {"acme/big-trainer": "gpu-h100-4x"}})
    job = convert(
        base_training(model="acme/big-trainer", status="succeeded", metrics={"predict_time": 10}),
        pricing=pricing,
    )
    assert job.hardware == "gpu-h100-4x"
    assert job.cost_usd == pytest.approx(10 * 4 * PRICING.prices["gpu-h100"])


def test_running_cost_is_an_estimate_from_elapsed_time() -> None:
    """The stored job does not move with the clock: it keeps the price and derives the cost when read."""
    later = dt("2023-08-16T19:43:42.114513")  # 600 s after start
    job = convert(base_training(), now=later)
    assert job.cost_usd is None and job.price_per_s == SDXL_PRICE
    assert convert(base_training(), now=later + timedelta(seconds=30)) == job.evolve(
        updated_at=later + timedelta(seconds=30)
    )  # a later poll of the same training converts to the same job
    assert job.cost_at(later) == pytest.approx(600 * SDXL_PRICE)
    assert job.priced(later).cost_usd == pytest.approx(600 * SDXL_PRICE)
    assert job.metadata["cost_estimate"] is True and job.cost_is_estimate


def test_running_estimate_with_clock_skew_is_zero_not_negative() -> None:
    early = dt("2023-08-16T19:00:00")  # now before started_at
    assert convert(base_training(), now=early).cost_at(early) == 0.0


@pytest.mark.parametrize("bad", [-5, -0.001, float("nan"), float("inf"), "502.7", True, None, [1]])
def test_bad_predict_time_is_ignored(bad: Any) -> None:
    finished = convert(base_training(status="succeeded", metrics={"predict_time": bad}))
    assert finished.cost_usd is None and "predict_time" not in finished.metadata
    running = convert(base_training(metrics={"predict_time": bad}))
    assert running.cost_at(NOW) == pytest.approx(100 * SDXL_PRICE) and running.cost_is_estimate


@pytest.mark.parametrize("metrics", [None, [], "x", {}])
def test_metrics_of_any_shape(metrics: Any) -> None:
    assert convert(base_training(status="failed", metrics=metrics)).cost_usd is None


def test_unknown_trainer_has_no_cost_and_no_hardware() -> None:
    job = convert(base_training(model="someone/unlisted", status="succeeded", metrics={"predict_time": 9}))
    assert job.hardware is None and job.cost_usd is None
    assert job.metadata["predict_time"] == 9  # kept, so a later price table can bill it


def test_late_billing_fills_a_finished_job() -> None:
    done = convert(base_training(status="succeeded", metrics={}))
    billed = convert(base_training(status="succeeded", metrics={"predict_time": 42}))
    assert merge_job(done, billed).cost_usd == pytest.approx(42 * SDXL_PRICE)


# ----------------------------------------------------------------------------- urls, errors, names, output


@pytest.mark.parametrize(
    ("web", "want"),
    [
        ("https://replicate.com/p/abc", "https://replicate.com/p/abc"),
        ("http://replicate.com/p/abc", "https://replicate.com/p/medrnz3bm5dd6ultvad2tejrte"),
        ("javascript:alert(1)", "https://replicate.com/p/medrnz3bm5dd6ultvad2tejrte"),
        ("https://user:pw@evil.example/", "https://replicate.com/p/medrnz3bm5dd6ultvad2tejrte"),
        ("https://replicate.com/p/a b", "https://replicate.com/p/medrnz3bm5dd6ultvad2tejrte"),
        (None, "https://replicate.com/p/medrnz3bm5dd6ultvad2tejrte"),
        (42, "https://replicate.com/p/medrnz3bm5dd6ultvad2tejrte"),
    ],
)
def test_web_url_is_https_only(web: Any, want: str) -> None:
    assert convert(base_training(urls={"web": web})).web_url == want


@pytest.mark.parametrize("job_id", ["../account", "a/b", "x%2f", "a b", "é"])
def test_no_web_url_built_from_an_unsafe_id(job_id: str) -> None:
    assert not is_valid_job_id(job_id)
    assert convert(base_training(id=job_id, urls=None)).web_url is None


@pytest.mark.parametrize(
    ("error", "want"),
    [
        ("CUDA out of memory", "CUDA out of memory"),
        ("  \n", None),
        ({"detail": "Training failed: bad zip"}, "Training failed: bad zip"),
        ({"message": "oops"}, "oops"),
        (["first", {"detail": "second"}], "first; second"),
        (None, None),
        (500, "500"),
    ],
)
def test_error_message(error: Any, want: str | None) -> None:
    assert convert(base_training(status="failed", error=error)).error_message == want


def test_long_error_is_capped() -> None:
    assert len(convert(base_training(status="failed", error="x" * 100_000)).error_message or "") <= 4000


def test_name_prefers_the_destination() -> None:
    job = convert(base_training(destination="alice/flux-cat-v2"))
    assert job.name == "flux-cat-v2 · medrnz3b"
    assert job.metadata["destination"] == "alice/flux-cat-v2"
    assert convert(base_training(model=None)).name == "training · medrnz3b"


def test_output_mapping_is_copied() -> None:
    output = {"version": "alice/cat:abc", "weights": "https://x/w.tar"}
    job = convert(base_training(status="succeeded", output=output))
    output["weights"] = "changed"
    assert job.output == {"version": "alice/cat:abc", "weights": "https://x/w.tar"}


def test_naive_now_is_taken_as_utc() -> None:
    assert convert(base_training(), now=NOW.replace(tzinfo=None)).updated_at == NOW


# ----------------------------------------------------------------------------- shape errors


@pytest.mark.parametrize(
    "body",
    [
        None,
        "page",
        42,
        [],
        {},
        {"results": None},
        {"results": {"id": "x"}},
        {"results": ["x"]},
        {"results": [{"status": "processing"}]},
        {"results": [{"id": 5}]},
        {"results": [{"id": "  "}]},
        {"results": [], "next": 5},
        {"results": [], "next": {"url": "x"}},
    ],
)
def test_malformed_pages(body: Any) -> None:
    with pytest.raises(MalformedResponse):
        parse_page(body, pricing=PRICING, now=NOW)


@pytest.mark.parametrize("body", [None, "x", [], {}, {"id": None}, {"id": 1}, {"id": ""}])
def test_malformed_trainings(body: Any) -> None:
    with pytest.raises(MalformedResponse):
        training_to_job(body, pricing=PRICING, now=NOW)


def test_empty_next_is_last_page() -> None:
    assert validate_page({"results": [], "next": ""}) == ([], None)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
TRAINING_KEYS = ["id", "status", "model", "version", "created_at", "started_at", "completed_at", "metrics"]
TRAININGISH = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=30)},
    optional={k: JSON for k in [*TRAINING_KEYS[1:], "output", "error", "urls", "destination", "logs"]},
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(JSON, TRAININGISH, st.fixed_dictionaries({"results": st.lists(TRAININGISH, max_size=3)}))
)
def test_any_json_is_a_job_or_malformed(body: Any) -> None:
    """Whatever a server sends, conversion gives Jobs or MalformedResponse: never KeyError, TypeError..."""
    with contextlib.suppress(MalformedResponse):
        parse_page(body, pricing=PRICING, now=NOW)
    try:
        job = training_to_job(body, pricing=PRICING, now=NOW)
    except MalformedResponse:
        return
    json.dumps(job.to_dict(), default=str)
    assert job.cost_usd is None or (math.isfinite(job.cost_usd) and job.cost_usd >= 0)
    assert job.created_at is None or job.created_at - NOW < timedelta(days=365 * 100)


def test_aborted_is_terminal_cancelled_with_a_reason_and_the_raw_status_kept() -> None:
    queued = convert(base_training(status="starting"))
    aborted = convert(base_training(status="aborted", started_at=None))
    assert aborted.status is JobStatus.CANCELLED and aborted.is_terminal
    assert aborted.provider_status == "aborted"
    assert aborted.error_message == "Replicate aborted this training before it started running"
    merged = merge_job(queued, aborted)
    assert merged.status is JobStatus.CANCELLED and merged.to_dict()["provider_status"] == "aborted"


def test_the_name_is_chosen_once_and_the_trained_version_is_its_own_field() -> None:
    running = convert(base_training(status="processing", destination=None, output=None))
    done = convert(
        base_training(
            status="succeeded",
            destination=None,
            output={"version": "me/brisk-otter-24:abc", "weights": "https://example.com/w.tar"},
        )
    )
    assert running.name != done.name  # the provider data alone would rename it...
    merged = merge_job(running, done)
    assert merged.name == running.name  # ...the store does not
    assert merged.trained_version == "me/brisk-otter-24:abc"
    assert merged.to_dict()["trained_version"] == "me/brisk-otter-24:abc"


def test_costs_are_rounded_to_micro_dollars() -> None:
    job = convert(base_training(status="succeeded", metrics={"predict_time": 123.456789}))
    assert job.cost_usd == round(job.cost_usd, 6)
    assert len(repr(job.to_dict()["cost_usd"]).split(".")[1]) <= 6


def test_links_are_checked_without_filling_urllibs_cache() -> None:
    # Each job's link is new: through urllib's cache of recent answers they only churned it, and the
    # answers it held were kept long enough to bring the next full garbage collection sooner.
    from urllib.parse import urlsplit

    from jobwidget.surfaces.cards import job_to_card

    info = getattr(urlsplit, "cache_info", None)
    if info is None:
        pytest.skip("this Python's urlsplit keeps no cache")
    urlsplit.cache_clear()  # type: ignore[attr-defined]
    links = [f"https://replicate.com/p/job{i}" for i in range(3)]
    jobs = [convert(base_training(id=f"job{i}", urls={"web": link})) for i, link in enumerate(links)]
    assert [job.web_url for job in jobs] == links
    assert [job_to_card(job)["url"] for job in jobs] == links
    assert info().currsize == 0, "a job's link went through urllib's cache"
