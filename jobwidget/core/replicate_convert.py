"""Replicate training JSON -> `Job`: pure functions, no I/O.

Kept apart from the HTTP client so the sync engine, the webhook receiver (whose body is the same training
object) and the tests convert with one rule. Everything here is defensive: a provider body of the wrong
shape raises `MalformedResponse`, never KeyError/TypeError, and a bad field (timestamp, metrics, URL)
degrades to None instead of failing the whole job.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jobwidget.core.errors import MalformedResponse
from jobwidget.core.keys import (
    COST_ESTIMATE,
    DESTINATION,
    INPUTS_OMITTED,
    PREDICT_TIME,
    PRICE_PER_S,
    PROVIDER_STATUS,
    SOURCE,
    TOTAL_TIME,
    UNKNOWN_STATUS,
)
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.pricing import Pricing
from jobwidget.core.urlsplit import split_url

__all__ = [
    "JOB_ID_PATTERN",
    "MAX_INPUT_BYTES",
    "STATUS_MAP",
    "STATUS_REASONS",
    "UNKNOWN_STATUS_PLACEHOLDER",
    "WEB_URL_BASE",
    "is_valid_job_id",
    "job_name",
    "parse_hardware",
    "parse_page",
    "parse_timestamp",
    "problem_detail",
    "problem_fields",
    "training_to_job",
    "validate_page",
    "validate_training",
]

STATUS_MAP: Mapping[str, JobStatus] = {
    "starting": JobStatus.QUEUED,
    "processing": JobStatus.RUNNING,
    "succeeded": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "canceled": JobStatus.CANCELLED,
    # In Replicate's OpenAPI schema and its JS client: the training ended before it ever ran.
    "aborted": JobStatus.CANCELLED,
}
# Why a job ended, in words, where the provider's status says more than the unified one.
STATUS_REASONS: Mapping[str, str] = {
    "aborted": "Replicate aborted this training before it started running",
}

# A status Replicate may add one day gets this placeholder plus metadata["unknown_status"]. merge_job keeps
# the stored status whenever unknown_status is set, so the placeholder only ever shows on a job seen for the
# first time. PENDING is the lowest active rank: it keeps the job polled and blocks no later real status.
UNKNOWN_STATUS_PLACEHOLDER = JobStatus.PENDING

# Replicate ids are 26 lowercase base32 chars; accept any URL-path-safe token so a compatible server (the
# simulator) may use its own, while '/', '.', '%' and anything else that could reshape a URL are refused.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
WEB_URL_BASE = "https://replicate.com/p/"

_TS = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt ](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:[.,](?P<frac>\d{1,12}))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:?\d{2})?"
)
# Outside this range a timestamp is a placeholder (Go's zero time, year 9999) or garbage, not an event.
_MIN_YEAR, _MAX_YEAR = 2000, 2100
_MODEL_REF = re.compile(
    r"(?P<owner>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?::\S+)?"
)
_MAX_ERROR_CHARS = 4000
_MAX_URL_CHARS = 2048
_SPACE = re.compile(r"\s")  # what str.isspace calls a space, found in C
# Inputs are kept whole (a retry must send them back exactly); past this size they are not kept at all.
MAX_INPUT_BYTES = 256 * 1024


def is_valid_job_id(job_id: object) -> bool:
    """Whether `job_id` can be put into a URL path as it is (no '/', '..', '%', spaces...)."""
    return isinstance(job_id, str) and JOB_ID_PATTERN.fullmatch(job_id) is not None


def parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 -> aware UTC datetime, or None for missing, invalid or absurd values (never raises).

    Replicate sends 6 to 9 fractional digits and `Z`; Python 3.11's fromisoformat takes at most 6, so the
    fraction is truncated to microseconds. A value without offset is taken as UTC (Replicate's zone).
    """
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return dt.astimezone(UTC) if _MIN_YEAR <= dt.year < _MAX_YEAR else None
    if not isinstance(value, str) or len(value) > 64:
        return None
    m = _TS.fullmatch(value.strip())
    if not m:
        return None
    micro = int((m.group("frac") or "0")[:6].ljust(6, "0"))
    tz = m.group("tz")
    suffix = "+00:00" if tz is None or tz in "Zz" else tz
    try:
        y, mo, d, h, mi, sec = map(int, m.group("y", "mo", "d", "h", "mi", "s"))
        if suffix == "+00:00":  # Replicate's own form: no offset to apply
            dt = datetime(y, mo, d, h, mi, sec, micro, tzinfo=UTC)
        else:
            base = datetime(y, mo, d, h, mi, sec, micro)
            dt = datetime.fromisoformat(base.isoformat() + suffix).astimezone(UTC)
    except (ValueError, OverflowError):  # second 84, month 13, offset +99:00 ...
        return None
    return dt if _MIN_YEAR <= dt.year < _MAX_YEAR else None


def _number(value: object) -> float | None:
    """A finite non-negative float, or None (bools, strings, NaN, negatives are not durations)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _text(value: object, limit: int = 512) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] if value else None


def _https_url(value: object) -> str | None:
    """The URL if it is a plain https link we may show as a link (no javascript:, no http, no spaces)."""
    if not isinstance(value, str) or len(value) > _MAX_URL_CHARS or _SPACE.search(value):
        return None
    try:
        parts = split_url(value)  # uncached: see core/urlsplit.py
    except ValueError:
        return None
    if parts.scheme.lower() != "https" or not parts.hostname or "@" in parts.netloc:
        return None
    return value


def _error_text(value: object) -> str | None:
    """Replicate's `error` is usually a string, sometimes an object; make it one readable line or block."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        for key in ("detail", "message", "title", "error"):
            text = _error_text(value.get(key))
            if text:
                return text
        return _error_text(str(dict(value))) if value else None
    if isinstance(value, list | tuple):
        parts = [t for t in (_error_text(v) for v in value) if t]
        return "; ".join(parts)[:_MAX_ERROR_CHARS] or None
    text = str(value).strip()
    return text[:_MAX_ERROR_CHARS] or None


def _model_name(ref: object) -> str | None:
    """'owner/name:version' -> 'name' (None unless it really is a model reference)."""
    if not isinstance(ref, str):
        return None
    m = _MODEL_REF.fullmatch(ref.strip())
    return m.group("name") if m else None


def job_name(data: Mapping[str, Any], output: Mapping[str, Any] | None, job_id: str) -> str:
    """A label a person recognises: what the training produces (destination, else the output model),
    else which trainer ran, plus a short id because one destination is trained many times."""
    label = _model_name(data.get("destination")) or _model_name(output.get("version") if output else None)
    if not label:
        trainer = _model_name(data.get("model"))
        label = f"{trainer} training" if trainer else "training"
    return f"{label} · {job_id[:8]}"


def _output(value: object) -> Mapping[str, Any] | None:
    """Training output is `{"version", "weights"}`; other shapes (a prediction's string) are wrapped."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    return {"value": value}


def _inputs(value: object) -> tuple[dict[str, Any] | None, str | None]:
    """The training's `input` to keep, or (None, why not): not an object, or too large to keep whole."""
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        return None, f"its input is a {type(value).__name__}, not an object"
    try:
        size = len(
            json.dumps(value, ensure_ascii=False, allow_nan=False, default=str).encode("utf-8", "replace")
        )
    except (TypeError, ValueError, RecursionError):
        return None, "its input cannot be stored as JSON"
    if size > MAX_INPUT_BYTES:
        return (
            None,
            f"its input is {size // 1024} KB, more than the {MAX_INPUT_BYTES // 1024} KB kept per job",
        )
    return {str(k): v for k, v in value.items()}, None


def validate_training(data: object) -> Mapping[str, Any]:
    """The body as a training mapping, or MalformedResponse saying what is wrong with it."""
    if not isinstance(data, Mapping):
        raise MalformedResponse(f"expected a training object (JSON object), got {type(data).__name__}")
    job_id = data.get("id")
    if not isinstance(job_id, str) or not job_id.strip():
        raise MalformedResponse("training object without a string 'id'")
    return data


def training_to_job(
    data: Mapping[str, Any], *, pricing: Pricing, now: datetime, provider: str = "replicate"
) -> Job:
    """One Replicate training (list item, GET body, cancel answer or webhook body) as a `Job`.

    Cost: `metrics.predict_time` x the trainer's hardware price once Replicate reports it (billed). While
    running, the price per second is stored (`metadata["price_per_s"]`, with `cost_estimate`) and the cost
    so far is derived from it where it is read (`Job.cost_at`), so the job does not change with the clock;
    otherwise None (unknown rather than invented: merge_job fills it in when billing lands).
    """
    data = validate_training(data)
    job_id = data["id"].strip()
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    metadata: dict[str, Any] = {}

    raw_status = data.get("status")
    word = raw_status.strip().lower() if isinstance(raw_status, str) else None
    status = STATUS_MAP.get(word) if word else None
    if isinstance(raw_status, str):
        metadata[PROVIDER_STATUS] = raw_status
    if status is None:
        metadata[UNKNOWN_STATUS] = raw_status if isinstance(raw_status, str) and raw_status else "<missing>"
        status = UNKNOWN_STATUS_PLACEHOLDER

    model = _text(data.get("model"))
    sku = pricing.sku_for(model)
    created_at = parse_timestamp(data.get("created_at"))
    started_at = parse_timestamp(data.get("started_at"))
    completed_at = parse_timestamp(data.get("completed_at"))

    metrics = data.get("metrics")
    metrics = metrics if isinstance(metrics, Mapping) else {}
    predict_time = _number(metrics.get("predict_time"))
    total_time = _number(metrics.get("total_time"))
    cost: float | None = None
    if predict_time is not None:
        metadata[PREDICT_TIME] = predict_time
        cost = pricing.cost(sku, predict_time)
    elif status is JobStatus.RUNNING and started_at is not None:
        price = pricing.price_per_second(sku)
        if price is not None:  # the cost so far is derived from this where it is read (Job.cost_at)
            metadata[PRICE_PER_S] = price
            metadata[COST_ESTIMATE] = True
    if total_time is not None:
        metadata[TOTAL_TIME] = total_time

    urls = data.get("urls")
    web_url = _https_url(urls.get("web")) if isinstance(urls, Mapping) else None
    if web_url is None and is_valid_job_id(job_id):
        web_url = WEB_URL_BASE + job_id

    source = _text(data.get("source"), 32)
    if source:
        metadata[SOURCE] = source
    destination = _text(data.get("destination"), 256)
    if destination:
        metadata[DESTINATION] = destination

    output = _output(data.get("output"))
    inputs, omitted = _inputs(data.get("input"))
    if omitted:
        metadata[INPUTS_OMITTED] = omitted
    return Job(
        job_id=job_id,
        provider=provider,
        status=status,
        name=job_name(data, output, job_id),
        model=model,
        version=_text(data.get("version"), 256),
        hardware=sku,
        created_at=created_at,
        started_at=started_at,
        completed_at=completed_at,
        cost_usd=cost,
        error_message=_error_text(data.get("error")) or (STATUS_REASONS.get(word) if word else None),
        output=output,
        web_url=web_url,
        updated_at=now,
        metadata=metadata,
        inputs=inputs,
    )


def validate_page(body: object) -> tuple[list[Mapping[str, Any]], str | None]:
    """A list page's results and its `next` link, or MalformedResponse."""
    if not isinstance(body, Mapping):
        raise MalformedResponse(f"expected a list page (JSON object), got {type(body).__name__}")
    results = body.get("results")
    if not isinstance(results, list):
        raise MalformedResponse("list page without a 'results' array")
    next_url = body.get("next")
    if next_url is not None and not isinstance(next_url, str):
        raise MalformedResponse(
            f"list page 'next' must be a URL string or null, got {type(next_url).__name__}"
        )
    return [validate_training(item) for item in results], (next_url or None)


def parse_page(
    body: object, *, pricing: Pricing, now: datetime, provider: str = "replicate"
) -> tuple[list[Job], str | None]:
    """`GET /v1/trainings` body -> (jobs newest first, next URL or None)."""
    results, next_url = validate_page(body)
    return [training_to_job(item, pricing=pricing, now=now, provider=provider) for item in results], next_url


def parse_hardware(body: object) -> dict[str, str]:
    """`GET /v1/hardware` body -> {sku: display name}."""
    if not isinstance(body, list):
        raise MalformedResponse(f"expected a hardware list (JSON array), got {type(body).__name__}")
    out: dict[str, str] = {}
    for item in body:
        sku = item.get("sku") if isinstance(item, Mapping) else None
        if not isinstance(sku, str) or not sku:
            raise MalformedResponse("hardware entry without a string 'sku'")
        out[sku] = _text(item.get("name"), 128) or sku
    return out


def problem_detail(body: object) -> str | None:
    """The human part of an `application/problem+json` error body (`detail`, else `title`)."""
    if not isinstance(body, Mapping):
        return None
    for key in ("detail", "title", "message"):
        text = _text(body.get(key), 500)
        if text:
            return text
    return None


def problem_fields(body: object) -> tuple[dict[str, str], ...]:
    """Replicate's per-field complaints in a 422 body (`invalid_fields`: [{"field", "description"}])."""
    raw = body.get("invalid_fields") if isinstance(body, Mapping) else None
    if not isinstance(raw, list):
        return ()
    out: list[dict[str, str]] = []
    for item in raw[:50]:
        if isinstance(item, Mapping) and isinstance(item.get("field"), str):
            description = item.get("description")
            text = description[:500] if isinstance(description, str) else ""
            out.append({"field": item["field"][:200], "description": text})
    return tuple(out)
