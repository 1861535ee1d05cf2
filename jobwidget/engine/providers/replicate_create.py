"""Starting a training on Replicate without ever starting it twice.

`POST /v1/models/{owner}/{name}/versions/{version}/trainings` is not idempotent and Replicate takes no
idempotency key, so the POST is sent again only where it cannot have reached Replicate (429, no
connection: the client's own rule for requests marked not idempotent). When the outcome is open (a
timeout after sending, a 5xx, an answer lost or unreadable), the newest list page is read first: it lists
trainings newest first with their trainer, version and input, so a training this request created is
recognised and adopted: one with the same trainer, version and input that the caller did not know before
sending (`exclude`, the ids it had). Creation times are not compared: they are the provider's clock, and
the machine's may be minutes off. Only when none is there is the POST sent again.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from jobwidget.core.errors import MalformedResponse, ProviderError, ProviderUnavailable
from jobwidget.core.models import Job
from jobwidget.core.replicate_convert import training_to_job, validate_training
from jobwidget.core.training_request import TrainingRequest
from jobwidget.engine.providers.limits import policy_delay
from jobwidget.engine.providers.replicate_http import CREATE_ROUTE, AmbiguousOutcome

if TYPE_CHECKING:
    from jobwidget.engine.providers.replicate import ReplicateProvider

__all__ = ["CREATE_ROUTE", "create_training"]


async def create_training(
    provider: ReplicateProvider, request: TrainingRequest, exclude: Collection[str] = ()
) -> Job:
    """The training `request` started, as Replicate answered it (or as its list shows it)."""
    url = provider._api_url(request.path())
    policy = provider.retry
    waited = 0.0
    doubt = ""
    for attempt in range(policy.max_retries + 1):
        try:
            body = await provider._request(
                "POST", url, route=CREATE_ROUTE, body=request.body(), idempotent=False
            )
            return training_to_job(
                validate_training(body), pricing=provider.pricing, now=provider._now(), provider=provider.name
            )
        except (AmbiguousOutcome, MalformedResponse) as exc:
            doubt = str(exc)
        found = await _find_created(provider, request, exclude, doubt)
        if found is not None:
            return found
        delay = policy_delay(policy, attempt, None, provider._rng)
        if attempt >= policy.max_retries or delay is None or waited + delay > policy.budget:
            break
        waited += delay
        provider.stats.retries += 1
        await provider._sleep(delay)
    raise ProviderUnavailable(
        f"{provider.label} did not confirm the new training ({doubt}), and it is not among the newest "
        "trainings, so none was started; try again"
    )


async def _find_created(
    provider: ReplicateProvider, request: TrainingRequest, exclude: Collection[str], doubt: str
) -> Job | None:
    """The newest training on the first list page that this request made, or None."""
    try:
        page = await provider.list_page()
    except ProviderError as exc:
        raise ProviderUnavailable(
            f"{provider.label} did not confirm the new training ({doubt}), and its list could not be read "
            f"to check ({exc}); it was not sent again, so as not to start it twice. jobs.sync() shows it if "
            "it was started"
        ) from None
    for job in page.jobs:  # newest first
        if job.job_id not in exclude and request.matches(job):
            return job
    return None
