"""What a job becomes when an update arrives: the transition rule and the settling of finished jobs.

One rule, one place: every store applies `merge_job` inside its write transaction, so a stale poll, a
late webhook and a second process all obey it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jobwidget.core.keys import (
    INLINE,
    INLINE_ETA_SECONDS,
    INLINE_RATE,
    INLINE_STEP,
    INLINE_TOTAL_STEPS,
    LOG_CHARS,
    SETTLED,
    UNKNOWN_STATUS,
)
from jobwidget.core.models import Job, JobStatus, can_transition

__all__ = ["merge_job", "settle"]

# Fields an update may fill in on a job that already finished: billing and output arrive late
# (predict_time lands after the status flip), but status and log-derived fields never change again.
# Inputs too: a job stored before inputs were kept gets them from its next sighting.
_TERMINAL_LATE_FIELDS = (
    "completed_at",
    "started_at",
    "cost_usd",
    "error_message",
    "output",
    "web_url",
    "inputs",
    "retry_of",
)
# Inline-progress figures that describe a run in motion; a finished job has none.
_MOTION_FIGURES = (INLINE_ETA_SECONDS, INLINE_RATE)


def _merge_metadata(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """`old` overlaid with `new`; a key `new` sets to None is removed (how a sighting clears a miss)."""
    meta = {**old, **new}
    for key, value in new.items():
        if value is None:
            del meta[key]
    return meta


def settle(job: Job, previous: Job | None = None) -> Job:
    """A terminal job as it should read from now on: nothing in motion, one consistent story.

    No stage, no ETA or rate; progress 100 when it completed, else the last figure known (from this
    update or the one before); the last log line and step counts are whatever the final log said.
    """
    if not job.is_terminal:
        return job
    inline = job.metadata.get(INLINE)
    changes: dict[str, Any] = {}
    if job.stage is not None:
        changes["stage"] = None
    if job.status is JobStatus.COMPLETED:
        progress: float | None = 100.0
    else:
        progress = job.progress if job.progress is not None else (previous.progress if previous else None)
    if progress != job.progress:
        changes["progress"] = progress
    if job.cost_usd is None and job.price_per_s is not None and job.started_at and job.completed_at:
        # Billing has not landed: what the run cost at the price it ran at (a later billed figure wins).
        seconds = max(0.0, (job.completed_at - job.started_at).total_seconds())
        changes["cost_usd"] = round(seconds * job.price_per_s, 6)
    if isinstance(inline, Mapping):
        still = {k: v for k, v in inline.items() if k not in _MOTION_FIGURES}
        step, total = still.get(INLINE_STEP), still.get(INLINE_TOTAL_STEPS)
        counted = isinstance(step, int | float) and isinstance(total, int | float)
        if job.status is JobStatus.COMPLETED and counted and step < total:  # type: ignore[operator]
            still.pop(INLINE_STEP, None)  # a stale count beside "100 %" would contradict it
            still.pop(INLINE_TOTAL_STEPS, None)
        if still != dict(inline):
            changes["metadata"] = {**job.metadata, INLINE: still}
    return job.evolve(**changes) if changes else job


def merge_job(existing: Job | None, incoming: Job) -> Job:
    """Combine what the store holds with what just arrived, applying the transition rule.

    - New job: taken as it is (settled if it is already finished).
    - An unknown provider status (`metadata["unknown_status"]`) keeps the previous status.
    - A stale update (its status may not follow the current one) changes nothing but late billing
      fields of the same terminal job. The final log read once when a job finishes (`metadata
      ["settled"]`) may still set its last line and step counts, once.
    - Fields the update does not know (None) keep their stored value; metadata is merged.
    - A job's name is chosen once: the trained version arriving on completion is its own field.
    - A job that becomes terminal is settled (see `settle`).
    """
    if existing is None:
        if any(v is None for v in incoming.metadata.values()):
            incoming = incoming.evolve(metadata=_merge_metadata({}, incoming.metadata))
        return settle(incoming)
    status = incoming.status
    if incoming.metadata.get(UNKNOWN_STATUS):
        status = existing.status
    if not can_transition(existing.status, status):
        return existing
    if existing.is_terminal:
        # Same terminal status again: only late billing/output fields may be filled or corrected.
        changes = {
            name: getattr(incoming, name)
            for name in _TERMINAL_LATE_FIELDS
            if getattr(incoming, name) is not None and getattr(incoming, name) != getattr(existing, name)
        }
        late_meta = {k: v for k, v in incoming.metadata.items() if k != UNKNOWN_STATUS}
        if incoming.metadata.get(SETTLED) and not existing.metadata.get(SETTLED):
            if incoming.last_log is not None:
                changes["last_log"] = incoming.last_log
            if existing.status is not JobStatus.COMPLETED and incoming.progress is not None:
                changes["progress"] = incoming.progress
        else:
            late_meta.pop(INLINE, None)  # log figures of a finished job change only with its final read
            late_meta.pop(SETTLED, None)
        meta = _merge_metadata(existing.metadata, late_meta)
        if meta != dict(existing.metadata):
            changes["metadata"] = meta
        return settle(existing.evolve(**changes), existing) if changes else existing
    merged: dict[str, Any] = {}
    for f in dataclasses.fields(Job):
        new = getattr(incoming, f.name)
        old = getattr(existing, f.name)
        if f.name == "metadata":
            meta = _merge_metadata(old, new)
            if not new.get(UNKNOWN_STATUS):
                meta.pop(UNKNOWN_STATUS, None)
            merged[f.name] = meta
        elif f.name == "status":
            merged[f.name] = status
        elif f.name == "name":
            merged[f.name] = old if old else new
        else:
            merged[f.name] = new if new is not None else old
    if status is existing.status and _older_log(existing, incoming):
        # An out-of-order delivery (an older snapshot of the same run): its log fields would move the
        # card backwards. Everything else it carries is merged as usual.
        for name in _LOG_FIELDS:
            merged[name] = getattr(existing, name)
        for key in _LOG_META:
            if key in existing.metadata:
                merged["metadata"][key] = existing.metadata[key]
            else:
                merged["metadata"].pop(key, None)
    return settle(Job(**merged), existing)


# What a job's log says (read together from one log, so kept or replaced together), and the metadata
# key recording how long that log was: Replicate's log only grows, so a shorter one is an older snapshot.
_LOG_FIELDS = ("stage", "progress", "last_log")
_LOG_META = (INLINE, LOG_CHARS)


def _older_log(existing: Job, incoming: Job) -> bool:
    """Whether `incoming`'s log-derived fields describe an earlier moment than `existing`'s.

    Progress moves forward within one status unless the log shows a new run: the log grew while the
    progress fell (a restarted run writes on), or the run has another start time.
    """
    new_len, old_len = incoming.metadata.get(LOG_CHARS), existing.metadata.get(LOG_CHARS)
    if isinstance(new_len, int) and isinstance(old_len, int) and new_len != old_len:
        return new_len < old_len
    if incoming.started_at is not None and existing.started_at not in (None, incoming.started_at):
        return False
    return (
        incoming.progress is not None
        and existing.progress is not None
        and incoming.progress < existing.progress
    )
