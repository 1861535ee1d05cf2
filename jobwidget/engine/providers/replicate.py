"""Replicate's trainings API over httpx (async): polite under load, robust under faults, and never leaks
the token.

Design, in short (details at each piece):
- Every HTTP attempt takes a concurrency slot (asyncio.Semaphore), then a rate-limiter slot, then is sent
  at once: the limiter decides *send* times, so waiting on the semaphore can never bunch requests up.
- Retries (exponential backoff with full jitter, server hints honoured) cover 429, 500/502/503/504,
  timeouts, connection errors and unreadable 2xx bodies. All our calls are idempotent: GETs, and
  `POST /trainings/{id}/cancel`, which on Replicate is a no-op answering the training once it is
  canceled or finished; so cancel is retried too.
- A 429 pauses the shared limiter, so concurrent calls back off together instead of each being refused.
  A server asking for a longer wait than `RetryPolicy.max_delay` gets an immediate `RateLimited` carrying
  `retry_after`: the poller schedules that wait rather than one call blocking for minutes.
- The token lives in the client's default headers (and `_token`) only. Error messages are built by us,
  never httpx's exception objects (they carry the request and its headers); they pass a redactor and are
  raised outside `except` blocks, so no httpx exception is chained as `__context__`. `repr(provider)`
  shows `token=***`; pickling is refused.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import quote, urljoin

import httpx

from jobwidget.core.errors import (
    AuthError,
    ConfigError,
    JobNotFound,
    MalformedResponse,
    ProviderError,
)
from jobwidget.core.logtail import TAIL_LINES
from jobwidget.core.models import Job
from jobwidget.core.pricing import Pricing
from jobwidget.core.replicate_convert import (
    is_valid_job_id,
    parse_hardware,
    training_to_job,
    validate_page,
    validate_training,
)
from jobwidget.core.results import ProviderCheck
from jobwidget.core.training_request import TrainingRequest
from jobwidget.engine.providers.base import JobDetail, Page, Provider, ProviderStats
from jobwidget.engine.providers.json_big import LongLog
from jobwidget.engine.providers.limits import (
    Clock,
    RateLimiter,
    RetryPolicy,
    Sleep,
)
from jobwidget.engine.providers.replicate_http import RETRY_STATUSES, ReplicateHTTP
from jobwidget.engine.providers.replicate_urls import (
    DEFAULT_BASE_URL,
    LOOPBACK,
    check_concurrency,
    normalize_base_url,
    origin,
    parse_url,
)

__all__ = ["DEFAULT_BASE_URL", "RETRY_STATUSES", "RateLimiter", "ReplicateProvider", "RetryPolicy"]

log = logging.getLogger("jobwidget.replicate")

_TOKEN_OK = re.compile(r"[\x21-\x7e]+")  # visible ASCII: anything else cannot go into a header anyway
_POOL_CEILING = 256  # connections the pool may hold; the concurrency semaphore is the real bound


class ReplicateProvider(ReplicateHTTP, Provider):
    """Replicate trainings through `httpx.AsyncClient`; see the module docstring for the policies.

    `transport` is the seam for tests and the in-process simulator (any `httpx.AsyncBaseTransport`).
    `sleep`, `clock`, `rng` and `now` are injectable so tests run instantly and deterministically.
    Job ids that are not `[A-Za-z0-9_-]{1,128}` raise `JobNotFound` before any request: such an id cannot
    exist at Replicate, and refusing it keeps ids like `../account` from reshaping the URL.
    """

    def __init__(
        self,
        token: str | None = None,
        base_url: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        pricing: Pricing | None = None,
        max_rpm: float = 3000,
        max_concurrency: int = 16,
        timeout: float | httpx.Timeout = 30.0,
        max_retries: int = 4,
        retry_policy: RetryPolicy | None = None,
        label: str = "Replicate",
        name: str = "replicate",
        is_demo: bool = False,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        now: Callable[[], datetime] | None = None,
        burst: int | None = None,
        max_pages: int = 1000,
    ) -> None:
        token_from = "token (argument)" if token is not None else "REPLICATE_API_TOKEN (environment)"
        token = token if token is not None else os.environ.get("REPLICATE_API_TOKEN")
        token = token.strip() if token else None
        if token and not _TOKEN_OK.fullmatch(token):
            raise ConfigError(f"{token_from} contains spaces or non-ASCII characters; check it")
        self._token = token or None
        if base_url:
            url_from = "base_url (argument)"
        elif os.environ.get("REPLICATE_BASE_URL", "").strip():
            base_url, url_from = os.environ["REPLICATE_BASE_URL"], "REPLICATE_BASE_URL (environment)"
        else:
            base_url, url_from = DEFAULT_BASE_URL, "the default base URL"
        self.base_url = normalize_base_url(base_url, url_from)
        base = httpx.URL(self.base_url)
        self._origin = origin(base)
        self._api_prefix = base.raw_path.decode("ascii").rstrip("/") + "/v1/"
        in_process = transport is not None and base.host.endswith(".invalid")  # the embedded simulator
        if base.scheme == "http" and base.host not in LOOPBACK and self._token and not in_process:
            log.warning("sending the Replicate token over plain http to %s", base.host)
        check_concurrency(max_concurrency)
        if isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1:
            raise ConfigError(f"max_pages must be a positive whole number, got {max_pages!r}")
        self.max_pages = max_pages

        self.name = name
        self.label = label
        self.is_demo = is_demo
        self.stats = ProviderStats()
        self.pricing = pricing or Pricing()
        self.retry = retry_policy or RetryPolicy(max_retries=max_retries)
        self.max_concurrency = max_concurrency
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._now = now or (lambda: datetime.now(UTC))
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._clock = clock
        self._burst = burst
        self.limiter = RateLimiter(max_rpm, burst=burst, clock=clock, sleep=sleep)

        headers = {"Accept": "application/json", "User-Agent": "jobwidget (+replicate trainings client)"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if not isinstance(timeout, httpx.Timeout):
            if (
                isinstance(timeout, bool)
                or not isinstance(timeout, int | float)
                or not 0 < timeout < math.inf
            ):
                raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
            timeout = httpx.Timeout(timeout, connect=min(10.0, float(timeout)))
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            transport=transport,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(  # the semaphore bounds requests; room here lets `configure` raise it
                max_connections=max(max_concurrency, _POOL_CEILING),
                max_keepalive_connections=max_concurrency,
                keepalive_expiry=30,
            ),
            follow_redirects=False,  # a redirect is an error here, not a place to send the token
        )
        self._closed = False

    # ------------------------------------------------------------------------------------- dunder

    def __repr__(self) -> str:
        token = "***" if self._token else "None"
        return (
            f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r}, token={token}, "
            f"max_rpm={self.limiter.max_per_minute:g}, max_concurrency={self.max_concurrency})"
        )

    __str__ = __repr__

    def __getstate__(self) -> None:
        raise TypeError(f"{type(self).__name__} holds a live HTTP client and a token: it cannot be pickled")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def configure(
        self,
        *,
        pricing: Pricing | None = None,
        max_requests_per_minute: float | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        """Adopt settings given to jobwidget (`Jobs(provider=ReplicateProvider(...), config=...)`)."""
        if pricing is not None:
            self.pricing = pricing
        if max_requests_per_minute is not None and max_requests_per_minute != self.limiter.max_per_minute:
            self.limiter = RateLimiter(
                max_requests_per_minute, burst=self._burst, clock=self._clock, sleep=self._sleep
            )
        if max_concurrency is not None and max_concurrency != self.max_concurrency:
            check_concurrency(max_concurrency)
            self.max_concurrency = max_concurrency
            self._semaphore = asyncio.Semaphore(max_concurrency)  # calls in flight keep the old one

    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._client.aclose()

    # ------------------------------------------------------------------------------------- API

    def secrets(self) -> tuple[str, ...]:
        return (self._token,) if self._token else ()

    async def list_page(self, cursor: str | None = None) -> Page:
        """One page (100 on Replicate), newest first, no logs; `cursor` is the previous page's `next`.
        Its jobs are built off the loop (`page_jobs`)."""
        body, _count, next_url = await self.page_body(cursor)
        return Page(jobs=await self.page_jobs(body), next_cursor=next_url)

    async def page_body(
        self, cursor: str | None, sent: asyncio.Event | None = None
    ) -> tuple[Any, int, str | None]:
        """A list page checked but not yet built into jobs: its cursor is known before that work."""
        try:
            url = self._api_url("trainings") if cursor is None else self._checked_next(cursor)
        except MalformedResponse:
            if sent is not None:
                sent.set()  # a refused link sends nothing
            raise
        body = await self._request("GET", url, route="GET /v1/trainings", sent=sent)
        results, next_url = validate_page(body)
        return results, len(results), next_url

    async def page_jobs(self, body: Any) -> list[Job]:
        """A page's trainings as jobs, built in a worker thread (about 15 ms of Python for a hundred)."""
        pricing, now, name = self.pricing, self._now(), self.name
        return await asyncio.to_thread(
            lambda: [training_to_job(item, pricing=pricing, now=now, provider=name) for item in body]
        )

    async def get_job(self, job_id: str, *, log_lines: int = TAIL_LINES) -> JobDetail:
        """The training with its accumulated log: whole, or its tail when the answer is large (at least
        `log_lines` lines and what the log parser reads; `json_big`)."""
        url = self._api_url(f"trainings/{self._path_id(job_id)}")
        body = await self._request(
            "GET", url, route="GET /v1/trainings/{id}", job_id=job_id, log_lines=log_lines
        )
        return self.detail_from_payload(self._same_training(body, job_id))

    def detail_from_payload(self, data: object) -> JobDetail:
        """A webhook body (the same object as GET /v1/trainings/{id}) as a job and its logs."""
        training = validate_training(data)
        logs = training.get("logs")
        job = training_to_job(training, pricing=self.pricing, now=self._now(), provider=self.name)
        if isinstance(logs, LongLog):  # a large GET answer's log, cut to its tail off the loop
            return JobDetail(job=job, logs=logs.tail, log_chars=logs.chars, log_newlines=logs.newlines)
        return JobDetail(job=job, logs=logs if isinstance(logs, str) else None)

    async def cancel(self, job_id: str) -> Job:
        """Cancel (idempotent on Replicate: a finished training comes back unchanged)."""
        url = self._api_url(f"trainings/{self._path_id(job_id)}/cancel")
        body = await self._request("POST", url, route="POST /v1/trainings/{id}/cancel", job_id=job_id)
        training = self._same_training(body, job_id)
        return training_to_job(training, pricing=self.pricing, now=self._now(), provider=self.name)

    async def create_training(self, request: TrainingRequest, *, exclude: Collection[str] = ()) -> Job:
        """Start a training (`POST /v1/models/{owner}/{name}/versions/{version}/trainings`), never twice:
        see `replicate_create` for how a lost answer is resolved."""
        from jobwidget.engine.providers.replicate_create import create_training

        return await create_training(self, request, exclude)

    async def validate(self) -> ProviderCheck:
        """`GET /v1/account` with a short retry budget. Never raises: the answer is in the check."""
        started = time.perf_counter()
        quick = RetryPolicy(max_retries=1, base_delay=self.retry.base_delay, max_delay=5.0, budget=5.0)
        try:
            body = await self._request("GET", self._api_url("account"), route="GET /v1/account", policy=quick)
        except asyncio.CancelledError:
            raise
        except AuthError as exc:
            return self._check(False, str(exc), started)
        except ProviderError as exc:
            text = str(exc) if self.base_url in str(exc) else f"{self.label} at {self.base_url}: {exc}"
            return self._check(False, text, started)
        except Exception as exc:  # never raises, whatever goes wrong
            message = self._redact(f"{type(exc).__name__}: {exc}")
            return self._check(False, f"could not use {self.label} at {self.base_url}: {message}", started)
        if not isinstance(body, dict):
            message = f"{self.label} at {self.base_url} answered GET /v1/account with no account object"
            return self._check(False, message, started)
        account = next((body[k] for k in ("username", "name") if isinstance(body.get(k), str)), None)
        message = f"Connected to {self.label}" + (f" as {account}" if account else "")
        return self._check(True, message, started, account=account)

    async def webhook_secret(self) -> str:
        """The account's `whsec_...` signing secret (never logged or put in a message)."""
        route = "GET /v1/webhooks/default/secret"
        body = await self._request("GET", self._api_url("webhooks/default/secret"), route=route)
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key:
            raise MalformedResponse(f"{self.label} answered {route} without a 'key' string")
        return key

    async def list_hardware(self) -> dict[str, str]:
        """`GET /v1/hardware` -> {sku: name} (Replicate publishes no prices there)."""
        return parse_hardware(await self._request("GET", self._api_url("hardware"), route="GET /v1/hardware"))

    # ------------------------------------------------------------------------------------- URLs and ids

    def _api_url(self, path: str) -> str:
        return f"{self.base_url}/v1/{path}"

    def _path_id(self, job_id: str) -> str:
        if not is_valid_job_id(job_id):
            shown = job_id[:64] if isinstance(job_id, str) else type(job_id).__name__
            raise JobNotFound(shown, f"{self.label} (not a valid training id)", permanent=True)
        return quote(job_id, safe="")

    def _checked_next(self, url: str) -> str:
        """The `next` link, followed verbatim, only if it stays on our origin and API path: the token
        must never travel to another host because a page said so. Checked with httpx's own URL parser,
        the one that sends the request, so no parser differential can slip another host through."""
        if not isinstance(url, str) or not url or len(url) > 4096:
            raise MalformedResponse(f"{self.label} sent an unusable next-page link")
        full = urljoin(self._api_url(""), url)  # a relative link resolves against our own API root
        parsed = parse_url(full)
        if parsed is None:
            raise MalformedResponse(f"{self.label} sent an unparsable next-page link")
        path = parsed.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
        if origin(parsed) != self._origin or parsed.userinfo or not path.startswith(self._api_prefix):
            where = f"{parsed.scheme}://{parsed.host}{path}"
            raise MalformedResponse(
                f"{self.label} sent a next-page link to {where}, outside "
                f"{self.base_url}{self._api_prefix.rstrip('/')}; refusing to follow it with the token"
            )
        return full

    def _same_training(self, body: Any, job_id: str) -> dict[str, Any]:
        training = validate_training(body)
        if training.get("id") != job_id:
            raise MalformedResponse(
                f"{self.label} answered for training {training.get('id')!r}, not {job_id!r}"
            )
        return dict(training)

    # ------------------------------------------------------------------------------------- HTTP

    def _check(self, ok: bool, message: str, started: float, account: str | None = None) -> ProviderCheck:
        latency = (time.perf_counter() - started) * 1000
        return ProviderCheck(
            ok=ok, message=self._redact(message), provider=self.name, account=account, latency_ms=latency
        )
