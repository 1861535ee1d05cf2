"""The exceptions jobwidget raises. Messages say what happened and what to do, and never hold a token."""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "ConfigError",
    "InvalidRequest",
    "JobNotFound",
    "JobwidgetError",
    "MalformedResponse",
    "PaginationStopped",
    "ProviderError",
    "ProviderRejected",
    "ProviderUnavailable",
    "RateLimited",
    "StoreCorruptError",
    "StoreError",
    "WebhookVerificationError",
]


class JobwidgetError(Exception):
    """Base class of every jobwidget error."""


class JobNotFound(JobwidgetError, KeyError):
    """No such job (in the store, or at the provider: HTTP 404)."""

    def __init__(self, job_id: str, where: str = "the job store", *, permanent: bool = False) -> None:
        self.job_id = job_id
        self.permanent = permanent  # True: no later answer can differ (an id the provider can't address)
        super().__init__(f"job {job_id!r} not found in {where}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ConfigError(JobwidgetError, ValueError):
    """An invalid setting; the message names the setting and where it came from."""


class StoreError(JobwidgetError):
    """The job store could not be read or written."""


class StoreCorruptError(StoreError):
    """The store path holds something that is not a readable jobwidget store; it is left untouched."""


class ProviderError(JobwidgetError):
    """The provider answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class AuthError(ProviderError):
    """The API token is missing or was rejected (401/403)."""


class RateLimited(ProviderError):
    """Still rate limited (429) after the retry budget."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=429)


class ProviderUnavailable(ProviderError):
    """5xx answers, timeouts or connection errors outlasted the retry budget."""


class MalformedResponse(ProviderError):
    """The provider answered with a body that is not the JSON we expect."""


class PaginationStopped(MalformedResponse):
    """The provider's job list did not end properly (an empty page linking on, a next-page link seen
    before in the same walk, or more pages than the budget); `jobs` holds what was read until then."""

    def __init__(self, message: str, *, jobs: list[Any], pages: int) -> None:
        self.jobs = jobs
        self.pages = pages
        super().__init__(message)


class WebhookVerificationError(JobwidgetError):
    """A webhook delivery failed Standard Webhooks verification (forged, stale or malformed)."""


class InvalidRequest(JobwidgetError, ValueError):
    """A training request jobwidget can tell is wrong before sending it (a malformed model, version,
    destination or input); nothing was sent."""


class ProviderRejected(ProviderError):
    """The provider refused the request as it was given (HTTP 400, 404, 409, 422): `detail` is the
    provider's own message and `invalid_fields` its per-field complaints, if any. Nothing was created
    and nothing is retried: sending the same request again gets the same answer."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str | None = None,
        invalid_fields: tuple[dict[str, str], ...] = (),
    ) -> None:
        self.detail = detail
        self.invalid_fields = invalid_fields
        super().__init__(message, status=status)


class JobsTimeout(JobwidgetError, TimeoutError):
    """`jobs.wait()` ran out of time; `.pending` holds the jobs still active."""

    def __init__(self, message: str, pending: list[Any]) -> None:
        super().__init__(message)
        self.pending = pending
