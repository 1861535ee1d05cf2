"""What a provider's answer means for a stored job, as pure functions: a sighting, a 404, a log read.

- A sighting (a list page, a GET, a webhook) ends any record of the provider having lost the job.
- A 404 is not the end: the job is retried with backoff and stops being polled only after repeated
  misses over minutes (or at once for an id the provider cannot even address).
- A log read sets stage, progress and the last line; the final read of a finished job settles it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jobwidget.core.keys import (
    INLINE,
    INLINE_FIELDS,
    INLINE_LOSS_NAN,
    LOG_CHARS,
    MISSING,
    POLL_STOPPED,
    SETTLED,
)
from jobwidget.core.logparse import parse_logs
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.results import InlineProgress
from jobwidget.engine.providers.base import JobDetail

__all__ = [
    "INLINE_FIELDS",
    "MISSING",
    "MISS_LIMIT",
    "MISS_WINDOW_S",
    "POLL_STOPPED",
    "final_read",
    "missed",
    "progress_fields",
    "sighted",
    "with_progress",
]

# A job the provider answers 404 for is retried with backoff and given up only after this many misses
# spanning at least this long: one transient 404 (a replica behind, a deploy) must not end its polling.
MISS_LIMIT = 5
MISS_WINDOW_S = 600.0
_MISS_BACKOFF_S = (15.0, 30.0, 60.0, 120.0, 300.0)
_SIGHTED = {MISSING: None, POLL_STOPPED: None}  # merged into provider data: a sighting clears misses


def sighted(job: Job) -> Job:
    """`job` as the provider just showed it: merging it ends any record of the provider having lost it."""
    return job.evolve(metadata={**job.metadata, **_SIGHTED})


def missed(job: Job, now: float, label: str, *, final: bool = False) -> Job:
    """One more 404 for `job` at `now`: retry later with backoff, or stop polling after repeated misses
    (`final`: the provider cannot address this id at all, so no later answer can differ)."""
    prior = job.metadata.get(MISSING)
    prior = prior if isinstance(prior, dict) else {}
    count = int(prior.get("count") or 0) + 1
    first = float(prior.get("first") or now)
    if final:
        reason = f"{label} cannot look this job up (not a valid id); it is no longer polled"
        return job.evolve(metadata={**job.metadata, MISSING: None, POLL_STOPPED: reason})
    if count >= MISS_LIMIT and now - first >= MISS_WINDOW_S:
        reason = (
            f"{label} no longer knows this job (404 {count} times over "
            f"{(now - first) / 60:.0f} min); it is no longer polled"
        )
        return job.evolve(metadata={**job.metadata, MISSING: None, POLL_STOPPED: reason})
    delay = _MISS_BACKOFF_S[min(count, len(_MISS_BACKOFF_S)) - 1]
    return job.evolve(
        metadata={**job.metadata, MISSING: {"count": count, "first": first, "retry_at": now + delay}}
    )


def progress_fields(progress: InlineProgress) -> dict[str, Any]:
    """Job fields (and the `inline` metadata cards show) from a parsed log tail."""
    inline = {k: getattr(progress, k) for k in INLINE_FIELDS if getattr(progress, k) is not None}
    if progress.loss_nan:
        inline[INLINE_LOSS_NAN] = True  # the loss is None because it was NaN: the health flags need to know
    return {
        "stage": progress.stage,
        "progress": progress.progress,
        "last_log": progress.last_log,
        "metadata": {INLINE: inline},
    }


def with_progress(detail: JobDetail) -> JobDetail:
    """A running job with what its log tail says (stage, progress, last line, inline figures)."""
    job = detail.job
    if detail.logs is None or job.status is not JobStatus.RUNNING:
        return detail
    fields = progress_fields(parse_logs(detail.logs, job_id=job.job_id))
    # The log's length orders two snapshots of it (it only grows): see `merge_job`.
    fields["metadata"] = {**job.metadata, **fields["metadata"], LOG_CHARS: detail.log_length}
    return dataclasses.replace(detail, job=job.evolve(**fields))


def final_read(detail: JobDetail) -> Job:
    """A finished job with what its final log says (last line, last step counts and loss)."""
    job = detail.job
    meta: dict[str, Any] = {**job.metadata, SETTLED: True}
    if detail.logs is None:
        return job.evolve(metadata=meta)
    fields = progress_fields(parse_logs(detail.logs, job_id=job.job_id))
    meta[INLINE] = fields["metadata"][INLINE]
    return job.evolve(last_log=fields["last_log"], progress=fields["progress"], metadata=meta)
