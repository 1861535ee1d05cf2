"""A provider double for engine and controller unit tests: jobs in a dict, calls counted.

Integration tests use the simulated Replicate over real HTTP instead; this one keeps unit tests of
the controller's plumbing fast and exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobwidget.core.errors import JobNotFound
from jobwidget.core.logtail import TAIL_LINES
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.results import ProviderCheck
from jobwidget.engine.providers.base import JobDetail, Page, Provider, ProviderStats

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def make_job(i: int, status: str = "running", **kw: object) -> Job:
    return Job(
        job_id=f"job{i:05d}",
        provider="replicate",
        status=JobStatus(status),
        name=f"run {i}",
        model="ostris/flux-dev-lora-trainer",
        hardware="gpu-h100",
        created_at=T0 + timedelta(minutes=i),
        **kw,  # type: ignore[arg-type]
    )


class FakeProvider(Provider):
    label = "Replicate"

    def __init__(self, jobs: list[Job] | None = None, page_size: int = 100) -> None:
        self.jobs: dict[str, Job] = {j.job_id: j for j in jobs or []}
        self.logs: dict[str, str] = {}
        self.page_size = page_size
        self.stats = ProviderStats()
        self.calls: list[str] = []
        self.fail: Exception | None = None

    def _call(self, what: str) -> None:
        self.calls.append(what)
        self.stats.requests += 1
        if self.fail is not None:
            raise self.fail

    def _ordered(self) -> list[Job]:
        return sorted(self.jobs.values(), key=lambda j: (j.created_at, j.job_id), reverse=True)

    async def list_page(self, cursor: str | None = None) -> Page:
        self._call("list")
        start = int(cursor or 0)
        ordered = self._ordered()
        chunk = ordered[start : start + self.page_size]
        nxt = str(start + self.page_size) if start + self.page_size < len(ordered) else None
        return Page(jobs=chunk, next_cursor=nxt)

    async def get_job(self, job_id: str, *, log_lines: int = TAIL_LINES) -> JobDetail:
        self._call(f"get {job_id}")
        if job_id not in self.jobs:
            raise JobNotFound(job_id, "Replicate")
        return JobDetail(job=self.jobs[job_id], logs=self.logs.get(job_id))

    async def cancel(self, job_id: str) -> Job:
        self._call(f"cancel {job_id}")
        job = self.jobs[job_id]
        if job.is_active:
            job = self.jobs[job_id] = job.evolve(status=JobStatus.CANCELLED)
        return job

    async def validate(self) -> ProviderCheck:
        self._call("validate")
        return ProviderCheck(ok=True, message="ok", account="tester")

    async def webhook_secret(self) -> str:
        return "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
