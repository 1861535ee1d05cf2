"""What a user starts or reads through the engine, beyond watching: a training, a retry, a log tail.

A training jobwidget starts is in the store (and so on every panel, and announced) the moment the
provider accepts it, with what only this side knows: the inputs as sent when the provider's answer does
not echo them, the destination (Replicate never reports it) and the job it retries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jobwidget.core.errors import JobNotFound, ProviderError
from jobwidget.core.keys import DESTINATION
from jobwidget.core.logtail import TAIL_LINES, LogTail, log_tail
from jobwidget.core.models import Job
from jobwidget.core.replicate_convert import job_name
from jobwidget.core.training_request import TrainingRequest, retry_request
from jobwidget.engine.sync import SyncService

__all__ = ["launch", "read_log", "relaunch"]


async def launch(service: SyncService, request: TrainingRequest) -> Job:
    """Start the training `request` describes; returns it as stored (usually queued)."""
    # The trainer's runs known now: if the provider's answer is lost, none of them is the new one.
    known = await service.store.list(model=request.model, limit=1000)
    job = await service.provider.create_training(request, exclude={j.job_id for j in known})
    named = {"destination": request.destination, "model": job.model}  # Replicate's answer names neither
    job = job.evolve(
        name=job_name(named, job.output, job.job_id),
        inputs=job.inputs if job.inputs is not None else dict(request.input),
        retry_of=request.retry_of,
        metadata={**job.metadata, DESTINATION: request.destination},
    )
    result = await service.apply([job], source="create")
    service._announce_discovered(result)
    return await service.store.get(job.job_id) or job


async def relaunch(
    service: SyncService,
    job_id: str,
    changes: Mapping[str, Any],
    *,
    destination: str | None = None,
    webhook: str | None = None,
    webhook_events_filter: Iterable[str] | None = None,
) -> Job:
    """Start a training like `job_id` with `changes` to its inputs, linked to it (`retry_of`).

    A job stored before inputs were kept is read from the provider first: it still has them.
    """
    job = await service.store.get(job_id)
    if job is None:
        raise JobNotFound(job_id)
    if job.inputs is None and job.provider == service.provider.name:
        await service.fetch(job_id)
        job = await service.store.get(job_id) or job
    request = retry_request(
        job, changes, destination=destination, webhook=webhook, webhook_events_filter=webhook_events_filter
    )
    return await launch(service, request)


async def read_log(service: SyncService, job_id: str, lines: int = TAIL_LINES) -> tuple[Job, LogTail]:
    """The job as the provider reports it now (stored, with its progress) and the tail of its log.

    The whole log is read (only the per-job GET has it), cut to its tail as it is decoded (a large
    answer's head is never kept whole) and let go at once.
    """
    stored = await service.store.get(job_id)
    if stored is None:
        raise JobNotFound(job_id)
    if stored.provider != service.provider.name:
        raise ProviderError(f"job {job_id} belongs to {stored.provider}, not {service.provider.label}")
    detail = await service.read(job_id, lines)
    tail = log_tail(detail.logs, lines, total=detail.log_lines)
    job = await service.store.get(job_id) or detail.job
    return job, tail
