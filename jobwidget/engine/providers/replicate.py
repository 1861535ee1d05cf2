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
import email.utils
import logging
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
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
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
)
from jobwidget.core.models import Job, ProviderCheck
from jobwidget.core.pricing import Pricing
from jobwidget.core.replicate_convert import (
    is_valid_job_id,
    parse_hardware,
    parse_page,
    problem_detail,
    problem_fields,
    training_to_job,
    validate_training,
)
from jobwidget.core.training_request import TrainingRequest
from jobwidget.engine.providers import json_big
from jobwidget.engine.providers.base import MAX_SERVER_WAIT, JobDetail, Page, Provider, ProviderStats

__all__ = ["DEFAULT_BASE_URL", "RETRY_STATUSES", "RateLimiter", "ReplicateProvider", "RetryPolicy"]

log = logging.getLogger("jobwidget.replicate")

DEFAULT_BASE_URL = "https://api.replicate.com"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_TOKEN_OK = re.compile(r"[\x21-\x7e]+")  # visible ASCII: anything else cannot go into a header anyway
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_POOL_CEILING = 256  # connections the pool may hold; the concurrency semaphore is the real bound

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


# ---------------------------------------------------------------------------------------------- limiter


class RateLimiter:
    """Schedules request send times so that no 60-second window holds more than `max_per_minute`.

    A GCRA (virtual-time token bucket): `burst` requests may go at once, then one every
    60 / (max_per_minute - burst) seconds. Any window of W seconds then holds at most burst + rate x W
    requests, i.e. at most `max_per_minute` in any minute, burst included. Each caller reserves its slot
    synchronously (no lock, no loop: asyncio runs the reservation atomically) and sleeps until it. A slot
    whose caller is cancelled while waiting is not refunded: the limiter errs on the polite side.
    """

    def __init__(
        self,
        max_per_minute: float,
        *,
        burst: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not max_per_minute > 0:
            raise ConfigError(
                f"max_rpm must be a positive number of requests per minute, got {max_per_minute!r}"
            )
        self.max_per_minute = float(max_per_minute)
        if burst is None:
            burst = int(self.max_per_minute // 30)  # 3000/min -> 100 at once
        burst = max(1, min(int(burst), math.floor(self.max_per_minute) - 1))
        self.burst = burst
        # Reserve the burst out of the minute's budget so burst + a minute's refill <= max_per_minute.
        refill_per_minute = (
            self.max_per_minute - burst if self.max_per_minute > burst else self.max_per_minute
        )
        self.interval = 60.0 / refill_per_minute
        self._tolerance = (burst - 1) * self.interval
        self._clock = clock
        self._sleep = sleep
        self._tat: float | None = None  # theoretical arrival time of the next request
        self._paused_until = -math.inf

    def reserve(self) -> float:
        """Take the next slot; returns how long to wait before sending (0: now)."""
        now = self._clock()
        tat = now if self._tat is None else max(self._tat, now)
        send_at = max(now, tat - self._tolerance, self._paused_until)
        self._tat = max(tat, send_at) + self.interval
        return send_at - now

    async def acquire(self) -> float:
        """Wait for a slot; returns the time waited (for stats and tests)."""
        delay = self.reserve()
        if delay > 0:
            await self._sleep(delay)
        return delay

    def pause(self, seconds: float) -> None:
        """Hold every new request for `seconds` (the server said so with a 429)."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def paused_for(self) -> float:
        """Seconds left of the server's requested pause (0 when none)."""
        return max(0.0, self._paused_until - self._clock())


# ---------------------------------------------------------------------------------------------- retries


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one call tries. Bounded by attempts *and* by total waiting, so a call never hangs."""

    max_retries: int = 4  # retries after the first attempt
    base_delay: float = 0.5  # backoff: full jitter in [0, min(max_delay, base x 2^n)]
    max_delay: float = 30.0  # longest single wait, computed or asked for by the server
    budget: float = 60.0  # total seconds one call may spend waiting between attempts

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_delay < 0 or self.max_delay < 0 or self.budget < 0:
            raise ConfigError("retry settings must be non-negative")


def _seconds(raw: str) -> float | None:
    """A header's number of seconds, any length (`1e400` or 400 digits is "very long", not unusable)."""
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        return None
    return None if math.isnan(value) else value


def _server_wait(headers: httpx.Headers, wall_now: float) -> float | None:
    """Seconds the server asks us to wait: the largest of `Retry-After` (seconds or HTTP date),
    `ratelimit-reset` and `x-ratelimit-reset` (seconds; a Unix time if that large), clamped to
    [0, MAX_SERVER_WAIT]. None when no header is usable."""
    waits: list[float] = []
    raw = headers.get("retry-after")
    if raw:
        raw = raw.strip()[:256]  # an HTTP date is short; digits beyond this are "very long" already
        value = _seconds(raw)
        if value is None:
            try:
                when = email.utils.parsedate_to_datetime(raw)
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                value = when.timestamp() - wall_now
            except (TypeError, ValueError, IndexError, OverflowError):
                pass
        if value is not None:
            waits.append(value)
    for name in ("ratelimit-reset", "x-ratelimit-reset"):
        raw = headers.get(name)
        reset = _seconds(raw.strip()[:256]) if raw else None
        if reset is not None:
            waits.append(reset - wall_now if 1e9 < reset < 1e11 else reset)
    return min(MAX_SERVER_WAIT, max(0.0, *waits)) if waits else None


@dataclass(slots=True)
class _Failure:
    """The last retryable outcome of a call, turned into the right exception if the budget runs out."""

    kind: str  # "throttled" | "server" | "timeout" | "network" | "malformed"
    detail: str
    status: int | None = None
    server_wait: float | None = None
    # False when the request cannot have reached the server (no connection): only then is a request
    # that must not run twice (creating a training) safe to send again.
    sent: bool = True


class AmbiguousOutcome(ProviderError):
    """A request that must not run twice failed in a way that leaves open whether the server acted on it
    (a timeout after sending, a 5xx, a lost or unreadable answer). The caller finds out before retrying."""


# ---------------------------------------------------------------------------------------------- provider


class ReplicateProvider(Provider):
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
        self.base_url = _normalize_base_url(base_url, url_from)
        base = httpx.URL(self.base_url)
        self._origin = _origin(base)
        self._api_prefix = base.raw_path.decode("ascii").rstrip("/") + "/v1/"
        in_process = transport is not None and base.host.endswith(".invalid")  # the embedded simulator
        if base.scheme == "http" and base.host not in _LOOPBACK and self._token and not in_process:
            log.warning("sending the Replicate token over plain http to %s", base.host)
        _check_concurrency(max_concurrency)
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
            _check_concurrency(max_concurrency)
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
        """One page (100 on Replicate), newest first, no logs; `cursor` is the previous page's `next`."""
        url = self._api_url("trainings") if cursor is None else self._checked_next(cursor)
        body = await self._request("GET", url, route="GET /v1/trainings")
        jobs, next_url = parse_page(body, pricing=self.pricing, now=self._now(), provider=self.name)
        return Page(jobs=jobs, next_cursor=next_url)

    async def get_job(self, job_id: str) -> JobDetail:
        """The training with its whole accumulated log."""
        url = self._api_url(f"trainings/{self._path_id(job_id)}")
        body = await self._request("GET", url, route="GET /v1/trainings/{id}", job_id=job_id)
        return self.detail_from_payload(self._same_training(body, job_id))

    def detail_from_payload(self, data: object) -> JobDetail:
        """A webhook body (the same object as GET /v1/trainings/{id}) as a job and its logs."""
        training = validate_training(data)
        logs = training.get("logs")
        job = training_to_job(training, pricing=self.pricing, now=self._now(), provider=self.name)
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
        parsed = _parse_url(full)
        if parsed is None:
            raise MalformedResponse(f"{self.label} sent an unparsable next-page link")
        path = parsed.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
        if _origin(parsed) != self._origin or parsed.userinfo or not path.startswith(self._api_prefix):
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

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _check(self, ok: bool, message: str, started: float, account: str | None = None) -> ProviderCheck:
        latency = (time.perf_counter() - started) * 1000
        return ProviderCheck(
            ok=ok, message=self._redact(message), provider=self.name, account=account, latency_ms=latency
        )

    async def _send_once(self, method: str, url: str, route: str, body: Any = None) -> httpx.Response:
        """One attempt: concurrency slot, then rate slot, then send (so limiter times are send times)."""
        if self._closed:
            raise ProviderError(f"this {type(self).__name__} is closed")
        async with self._semaphore:
            await self.limiter.acquire()
            self.stats.requests += 1
            self.stats.by_route[route] = self.stats.by_route.get(route, 0) + 1
            request = self._client.build_request(method, url, json=body)
            return await json_big.read_off_loop(await self._client.send(request, stream=True))

    async def _request(
        self,
        method: str,
        url: str,
        *,
        route: str,
        job_id: str | None = None,
        policy: RetryPolicy | None = None,
        body: Any = None,
        idempotent: bool = True,
    ) -> Any:
        """Send with retries; returns the decoded JSON body or raises a jobwidget `ProviderError`.

        A request with `idempotent=False` is retried only where it cannot have been acted on (429, no
        connection); any other failure raises `AmbiguousOutcome` at once, and a 4xx refusal of its
        content raises `ProviderRejected` with the provider's own message.
        """
        try:
            return await self._request_with_retries(
                method, url, route, job_id, policy or self.retry, body, idempotent
            )
        except JobNotFound:
            raise
        except ProviderError:
            self.stats.errors += 1
            raise

    async def _request_with_retries(
        self,
        method: str,
        url: str,
        route: str,
        job_id: str | None,
        policy: RetryPolicy,
        body: Any = None,
        idempotent: bool = True,
    ) -> Any:
        held = self.limiter.paused_for()
        if held > policy.max_delay:
            # The server asked for a long pause: no request goes out before it ends, whoever asks.
            self.stats.held += 1
            raise RateLimited(
                f"{self.label} asked for a pause in requests (HTTP 429); {route} is not sent for another "
                f"{held:.0f} s",
                retry_after=held,
            )
        waited = 0.0
        failure: _Failure | None = None
        for attempt in range(policy.max_retries + 1):
            # Errors are raised outside the `except` blocks: an exception raised inside one keeps the httpx
            # exception (and its request, with the Authorization header) as __context__.
            fatal: str | None = None
            response: httpx.Response | None = None
            try:
                response = await self._send_once(method, url, route, body)
            except httpx.TimeoutException as exc:
                unsent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                failure = _Failure("timeout", type(exc).__name__, sent=not unsent)
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:  # our fault: no retry helps
                fatal = f"{self.label}: {route} could not be sent ({type(exc).__name__})"
            except httpx.RequestError as exc:  # connect/read/protocol errors, bad encodings
                unsent = isinstance(exc, httpx.ConnectError)
                failure = _Failure(
                    "network", self._redact(f"{type(exc).__name__}: {exc}")[:300], sent=not unsent
                )
            if fatal is not None:
                raise ProviderError(self._redact(fatal))
            if response is not None:
                try:
                    decoded = await json_big.decode_large(response, sliced=route == "GET /v1/trainings/{id}")
                    outcome = self._outcome(response, route, job_id, rejects=not idempotent, decoded=decoded)
                finally:
                    _release(response)
                if not isinstance(outcome, _Failure):
                    return outcome.value
                failure = outcome
            assert failure is not None
            if not idempotent and failure.sent and failure.kind != "throttled":
                raise AmbiguousOutcome(
                    self._redact(f"{self.label}: {route} failed ({failure.detail})"), status=failure.status
                )

            if attempt >= policy.max_retries:
                break
            delay = policy_delay(policy, attempt, failure.server_wait, self._rng)
            if delay is None or waited + delay > policy.budget:
                break  # the server asks for longer than one call may wait: let the caller schedule it
            if failure.kind == "throttled":  # everyone waits, not only this call: the limit is per account
                self.limiter.pause(delay)
            self.stats.retries += 1
            waited += delay
            # The detail may quote the server's error body, and a server may echo our request back.
            log.info("%s: %s, retry %d in %.2fs", route, self._redact(failure.detail), attempt + 1, delay)
            await self._sleep(delay)
        assert failure is not None
        if failure.kind == "throttled" and failure.server_wait:
            self.limiter.pause(failure.server_wait)  # honoured by every later call, not only this one
        raise self._final_error(failure, route, attempt + 1)

    def _outcome(
        self,
        response: httpx.Response,
        route: str,
        job_id: str | None,
        *,
        rejects: bool = False,
        decoded: tuple[Any] | Exception | None = None,
    ) -> _Body | _Failure:
        """Classify one answer: a decoded body, a retryable failure, or raise a final error.

        `decoded`: a large body already decoded off the loop (`json_big.decode_large`), or why it could
        not be."""
        status = response.status_code
        if 200 <= status < 300:
            try:
                if isinstance(decoded, Exception):
                    raise decoded
                return _Body(decoded[0] if decoded is not None else response.json())
            except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, absurd nesting
                ctype = response.headers.get("content-type", "?").split(";")[0]
                return _Failure(
                    "malformed", f"HTTP {status} body is not JSON ({ctype}, {len(response.content)} B)"
                )
        detail = self._problem(response)
        if status in RETRY_STATUSES:
            wait = _server_wait(response.headers, time.time())
            if status == 429:
                self.stats.throttled += 1
                return _Failure("throttled", f"HTTP 429 {detail or 'rate limited'}", status, wait)
            return _Failure(
                "server", f"HTTP {status} {detail or response.reason_phrase}".strip(), status, wait
            )
        if status in (401, 403):
            why = "no token was set (REPLICATE_API_TOKEN)" if not self._token else "check REPLICATE_API_TOKEN"
            extra = f": {detail}" if detail else ""
            raise AuthError(
                self._redact(f"the Replicate token was rejected (HTTP {status}{extra}); {why}"), status=status
            )
        if rejects and status in _REFUSALS:
            raise self._rejected(response, route, detail)
        if status == 404 and job_id is not None:
            raise JobNotFound(job_id, self.label)
        if status == 404:
            message = f"{self.label} answered {route} with HTTP 404 ({detail or 'not found'})"
            raise ProviderError(
                self._redact(f"{message}; is the base URL {self.base_url} right?"), status=404
            )
        if 300 <= status < 400:
            raise ProviderError(
                f"{self.label} answered {route} with a redirect (HTTP {status})", status=status
            )
        raise ProviderError(
            self._redact(
                f"{self.label} answered {route} with HTTP {status}: {detail or response.reason_phrase}"
            ),
            status=status,
        )

    def _rejected(self, response: httpx.Response, route: str, detail: str | None) -> ProviderRejected:
        """The provider's refusal of what we sent, in its own words (and its per-field complaints)."""
        try:
            fields = problem_fields(response.json())
        except (ValueError, RecursionError):
            fields = ()
        # Replicate lists input complaints one per line ("- input.steps: Must be ..."): one line here.
        said = "; ".join(
            line.strip().removeprefix("- ") for line in (detail or "").splitlines() if line.strip()
        )
        said = said or response.reason_phrase or "refused"
        if fields and all(f["field"] not in said for f in fields):
            said += " (" + "; ".join(f"{f['field']}: {f['description']}" for f in fields) + ")"
        what = _REQUESTS.get(route, route)
        return ProviderRejected(
            self._redact(f"{self.label} refused {what} (HTTP {response.status_code}): {said}"),
            status=response.status_code,
            detail=self._redact(detail) if detail else None,
            invalid_fields=tuple({k: self._redact(v) for k, v in f.items()} for f in fields),
        )

    def _problem(self, response: httpx.Response) -> str | None:
        """The `detail` of a problem+json error body, if it has one."""
        try:
            return problem_detail(response.json())
        except (ValueError, RecursionError):
            return None

    def _final_error(self, failure: _Failure, route: str, attempts: int) -> ProviderError:
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        if failure.kind == "throttled":
            hint = f"; it asks to wait {failure.server_wait:.0f} s" if failure.server_wait is not None else ""
            return RateLimited(
                self._redact(f"{self.label} is still rate limiting {route} (HTTP 429) {tries}{hint}"),
                retry_after=failure.server_wait,
            )
        if failure.kind == "malformed":
            return MalformedResponse(
                self._redact(f"{self.label} answered {route} with a {failure.detail} {tries}")
            )
        if failure.kind == "timeout":
            message = f"{self.label} did not answer {route} in time ({failure.detail}) {tries}"
        elif failure.kind == "network":
            message = (
                f"could not reach {self.label} at {self.base_url} for {route} ({failure.detail}) {tries}"
            )
        else:
            message = f"{self.label} is unavailable: {route} answered {failure.detail} {tries}"
        return ProviderUnavailable(self._redact(message), status=failure.status)


@dataclass(frozen=True, slots=True)
class _Body:
    value: Any


_REFUSALS = frozenset({400, 404, 409, 413, 422})  # the request's content was refused: resending won't help
CREATE_ROUTE = "POST /v1/models/{owner}/{name}/versions/{version}/trainings"
_REQUESTS = {CREATE_ROUTE: "the new training"}  # what a refused request was, in a person's words


def _release(response: httpx.Response) -> None:
    """Break httpx's response <-> stream reference cycle once the body is decoded.

    The client binds each response's stream to the response itself, so an answer is freed by the cyclic
    garbage collector, not when the last reference goes: under a burst of log GETs (tens of MB each) the
    bodies piled up until a full collection. An empty stream in its place lets the body go at once.
    """
    response.stream = httpx.ByteStream(b"")


def policy_delay(
    policy: RetryPolicy, attempt: int, server_wait: float | None, rng: random.Random
) -> float | None:
    """The wait before retry number `attempt + 1`, or None when the server asks for more than max_delay.

    Full jitter (uniform in [0, min(max_delay, base x 2^attempt)]) spreads many clients' retries; a server
    hint is a floor, plus a little jitter so clients released by one reset do not stampede together.
    """
    if server_wait is not None:
        if server_wait > policy.max_delay:
            return None
        return server_wait + rng.uniform(0, min(policy.base_delay, policy.max_delay - server_wait))
    return rng.uniform(0, min(policy.max_delay, policy.base_delay * 2**attempt))


def _check_concurrency(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_concurrency must be a whole number of at least 1, got {value!r}")


def _normalize_base_url(raw: str, source: str = "base_url (argument)") -> str:
    """'https://api.replicate.com/v1/' -> 'https://api.replicate.com' (the origin plus any path prefix).

    Errors name `source` and never echo the URL: a pasted one may hold credentials."""
    value = raw.strip().rstrip("/")
    if value.endswith("/v1"):
        value = value[: -len("/v1")].rstrip("/")
    url = _parse_url(value)
    if url is None:
        raise ConfigError(f"{source} is not a valid URL")
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"{source} must be an http(s) URL with a host, such as {DEFAULT_BASE_URL} (scheme {url.scheme!r})"
        )
    if url.userinfo:
        raise ConfigError(
            f"{source} must not hold credentials; pass the token as token= or REPLICATE_API_TOKEN"
        )
    if url.query or url.fragment:
        raise ConfigError(f"{source} must not have a query or fragment")
    return value


def _parse_url(value: str) -> httpx.URL | None:
    """httpx's own parse (the one that sends), or None; errors are not chained into ours (they echo the
    URL, which might hold credentials someone pasted into it)."""
    try:
        return httpx.URL(value)
    except (httpx.InvalidURL, ValueError, TypeError):
        return None


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) with the default port filled in, as httpx will connect."""
    scheme = url.scheme.lower()
    return scheme, url.host.lower(), url.port or (443 if scheme == "https" else 80)
