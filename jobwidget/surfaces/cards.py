"""What one job looks like on the panel: a compact card dict, and the diff between two of them.

Everything a provider or a training script wrote passes through here before it reaches the browser: text
is clipped to one line and a size cap, tokens are redacted, links are https or nothing, numbers are finite
and rounded for display.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jobwidget.core.health import FLAG_NAMES, SPARK_POINTS
from jobwidget.core.keys import (
    HEALTH,
    HEALTH_SPARK,
    INLINE,
    INLINE_ETA_SECONDS,
    INLINE_LOSS,
    INLINE_LOSS_NAN,
    INLINE_RATE,
    INLINE_STEP,
    INLINE_TOTAL_STEPS,
    POLL_STOPPED,
    UNKNOWN_STATUS,
)
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.urlsplit import split_url

__all__ = ["card_diff", "clip", "epoch", "int_or_none", "job_to_card", "num"]

# Caps keep one card well under 1 KB whatever the provider sends (a new card travels whole).
_MAX_NAME = 100
_MAX_MODEL = 100
_MAX_SHORT = 40
_MAX_LOG = 160
_MAX_ERROR = 160
_MAX_NOTE = 120
_MAX_URL = 300

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")

# Defence in depth: Job holds no secrets, but an error text copied from a provider response might.
_SECRET_PATTERNS = (
    re.compile(r"r8_[A-Za-z0-9]{8,}"),
    re.compile(r"(?i)(bearer|token)\s+[A-Za-z0-9._\-]{8,}"),
    re.compile(r"whsec_[A-Za-z0-9+/=]{8,}"),
)


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text


def clip(value: Any, limit: int) -> str | None:
    """One line of text, redacted, at most `limit` characters (None stays None, empty becomes None)."""
    if value is None:
        return None
    text = _CONTROL.sub(" ", redact(str(value))).strip()  # inner spacing kept: tqdm bars line up
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 3] + "..."


def epoch(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def num(value: Any, digits: int) -> float | None:
    """A finite float rounded for display (fewer bytes, and a re-rounded value compares equal)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return round(f, digits) if math.isfinite(f) else None


def int_or_none(value: Any) -> int | None:
    f = num(value, 0)
    return None if f is None else int(f)


def sig(value: Any, digits: int = 4) -> float | None:
    """Round to significant digits: a loss of 3.512345e-05 keeps its meaning in a few bytes."""
    f = num(value, 12)
    if f is None or f == 0:
        return f
    return round(f, digits - 1 - math.floor(math.log10(abs(f))))


def https_url(value: Any) -> str | None:
    """The URL if it is a plain https link, else None: the card never links to anything else."""
    if not isinstance(value, str) or len(value) > _MAX_URL:
        return None
    if not value.startswith("https://") or any(c.isspace() or ord(c) < 32 for c in value):
        return None
    try:
        parts = split_url(value)  # uncached: see core/urlsplit.py
    except ValueError:
        return None
    return value if parts.scheme == "https" and parts.netloc else None


def note(metadata: Mapping[str, Any]) -> str | None:
    stopped = metadata.get(POLL_STOPPED)
    if stopped:
        reason = stopped if isinstance(stopped, str) else "the provider no longer knows this job"
        return clip(f"Not polled any more: {reason}", _MAX_NOTE)
    unknown = metadata.get(UNKNOWN_STATUS)
    if unknown:
        detail = unknown if isinstance(unknown, str) else "unrecognised"
        return clip(f"Provider reported an unknown status ({detail}); showing the last known one", _MAX_NOTE)
    return None


def _flags(job: Job) -> list[dict[str, Any]] | None:
    """[{"n": name, "r": reason, "at": raised epoch s}, ...] in the rules' order; None when none."""
    out = []
    for name in FLAG_NAMES:
        flag = job.flags.get(name)
        if flag is not None:
            out.append(
                {
                    "n": name,
                    "r": clip(flag.get("reason"), _MAX_NOTE) or name,
                    "at": int_or_none(flag.get("raised_at")),
                }
            )
    return out or None


def _spark(job: Job) -> list[list[Any]] | None:
    """The loss sparkline as [[step, loss or None (a NaN)], ...]: finite numbers only, a bounded count."""
    health = job.metadata.get(HEALTH)
    raw = health.get(HEALTH_SPARK) if isinstance(health, Mapping) else None
    if not isinstance(raw, list):
        return None
    points: list[list[Any]] = []
    for item in raw[-SPARK_POINTS:]:
        if not isinstance(item, list | tuple) or len(item) != 2:
            continue
        step, loss = int_or_none(item[0]), None if item[1] is None else sig(item[1], 4)
        if step is None or (loss is None and item[1] is not None):
            continue  # not a number: left out (only a real NaN, sent as None, is drawn as one)
        points.append([step, loss])
    return points if len(points) >= 2 else None


def job_to_card(job: Job) -> dict[str, Any]:
    """The compact dict the view renders for one job (None fields are left out).

    Keys: id, status, name, model, hw, stage, pct, log, step, total, eta, rate, loss, nan, cost, pps, est,
    created, started, ended, err, url, note, retry_of; run health: flags [{n, r, at}], spark [[step,
    loss|null]], pfin (projected finish), pcost (projected cost), guard (what a guard did). Times are
    epoch seconds; numbers are rounded for display. Stage, ETA, rate and projections only make sense
    while a job is active and are dropped once it finishes.
    """
    meta = job.metadata or {}
    inline = meta.get(INLINE)
    inline = inline if isinstance(inline, Mapping) else {}
    active = job.is_active
    ticking = job.status is JobStatus.RUNNING and job.started_at is not None and job.price_per_s is not None
    card: dict[str, Any] = {
        "id": job.job_id,
        "status": job.status.value,
        "name": clip(job.name, _MAX_NAME),
        "model": clip(job.model, _MAX_MODEL),
        "hw": clip(job.hardware, _MAX_SHORT),
        "stage": clip(job.stage, _MAX_SHORT) if active else None,
        "pct": num(job.progress, 1),
        "log": clip(job.last_log, _MAX_LOG),
        "step": int_or_none(inline.get(INLINE_STEP)),
        "total": int_or_none(inline.get(INLINE_TOTAL_STEPS)),
        "eta": int_or_none(inline.get(INLINE_ETA_SECONDS)) if active else None,
        "rate": sig(inline.get(INLINE_RATE), 3) if active else None,
        "loss": sig(inline.get(INLINE_LOSS), 4),
        # A running job with a known price carries the price, not a cost that moves with the clock: the
        # view ticks `(now - started) x pps` itself, so a poll that changes nothing sends nothing.
        "cost": None if ticking else num(job.cost_usd, 4),
        "pps": job.price_per_s if ticking else None,
        "est": True if job.cost_is_estimate or ticking else None,
        "created": epoch(job.created_at),
        "started": epoch(job.started_at),
        "ended": epoch(job.completed_at),
        "err": clip(job.error_message, _MAX_ERROR),
        "url": https_url(job.web_url),
        "note": note(meta),
        "retry_of": clip(job.retry_of, _MAX_NAME),
        "nan": True if inline.get(INLINE_LOSS_NAN) is True else None,
        "flags": _flags(job),
        "spark": _spark(job) if job.status.value not in ("pending", "uploading", "queued") else None,
        "pfin": epoch(job.projected_finish_at) if active else None,
        "pcost": num(job.projected_cost_usd, 4) if active else None,
        "guard": clip(job.guard_reason, _MAX_NOTE),
    }
    if card["pct"] is not None:
        card["pct"] = min(100.0, max(0.0, card["pct"]))
    return {k: v for k, v in card.items() if v is not None}


def card_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fields of `after` that differ from `before` (dropped ones as None), with the id; None if equal.

    A running job's tick changes a handful of fields (progress, step, ETA, loss, log line, cost), so a
    patch carries ~200 bytes instead of the whole card.
    """
    diff = {k: v for k, v in after.items() if before.get(k, _MISSING) != v}
    diff.update({k: None for k in before if k not in after})
    if not diff:
        return None
    diff["id"] = after["id"]
    return diff


_MISSING = object()
