"""How the Replicate client talks HTTP: one request with the limiter and the concurrency bound, retries
with backoff for what may pass (429, 5xx, timeouts, resets, malformed bodies), and every failure turned
into one `jobwidget` error by its kind (the table in `failures.py`), without the token and without a
traceback's worth of httpx.

`ReplicateHTTP` is the half of `ReplicateProvider` (providers/replicate.py) that does this; the other half
says what to ask Replicate for.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from jobwidget.core.errors import JobNotFound, ProviderError, ProviderRejected, RateLimited
from jobwidget.core.replicate_convert import problem_detail, problem_fields
from jobwidget.engine.providers import json_big
from jobwidget.engine.providers.base import ProviderStats
from jobwidget.engine.providers.failures import RETRY_STATUSES, Failure, FailureKind, kind_of_status
from jobwidget.engine.providers.limits import RateLimiter, RetryPolicy, Sleep, policy_delay, server_wait

__all__ = ["CREATE_ROUTE", "RETRY_STATUSES", "AmbiguousOutcome", "ReplicateHTTP"]

log = logging.getLogger("jobwidget.replicate")


class AmbiguousOutcome(ProviderError):
    """A request that must not run twice failed in a way that leaves open whether the server acted on it
    (a timeout after sending, a 5xx, a lost or unreadable answer). The caller finds out before retrying."""


# ---------------------------------------------------------------------------------------------- provider


class ReplicateHTTP:
    """Requests, retries and error mapping for `ReplicateProvider`, which sets these attributes."""

    name: str
    label: str
    base_url: str
    stats: ProviderStats
    retry: RetryPolicy
    limiter: RateLimiter
    _token: str | None
    _client: httpx.AsyncClient
    _semaphore: asyncio.Semaphore
    _sleep: Sleep
    _rng: random.Random
    _now: Callable[[], datetime]
    _closed: bool

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    async def _send_once(
        self,
        method: str,
        url: str,
        route: str,
        body: Any = None,
        log_lines: int | None = None,
        sent: asyncio.Event | None = None,
    ) -> json_big.Answer:
        """One attempt: concurrency slot, then rate slot, then send (so limiter times are send times); the
        answer received off the loop (`json_big.receive`; `log_lines`: it is a training, its log cut).
        `sent` is set once the request is on the wire (or could not be sent)."""
        if self._closed:
            raise ProviderError(f"this {type(self).__name__} is closed")
        try:
            async with self._semaphore:
                await self.limiter.acquire()
                self.stats.requests += 1
                self.stats.by_route[route] = self.stats.by_route.get(route, 0) + 1
                extensions = {} if sent is None else {"trace": _on_sent(sent)}
                request = self._client.build_request(method, url, json=body, extensions=extensions)
                response = await self._client.send(request, stream=True)
                return await json_big.receive(response, log_lines=log_lines)
        finally:
            if sent is not None:
                sent.set()

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
        log_lines: int | None = None,
        sent: asyncio.Event | None = None,
    ) -> Any:
        """Send with retries; returns the decoded JSON body or raises a jobwidget `ProviderError`.

        `log_lines`: the answer is a training whose `logs` may be cut to a tail holding that many lines
        (a `json_big.LongLog` when it was). `sent`: set once the first attempt is on the wire.

        A request with `idempotent=False` is retried only where it cannot have been acted on (429, no
        connection); any other failure raises `AmbiguousOutcome` at once, and a 4xx refusal of its
        content raises `ProviderRejected` with the provider's own message.
        """
        try:
            return await self._request_with_retries(
                method, url, route, job_id, policy or self.retry, body, idempotent, log_lines, sent
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
        log_lines: int | None = None,
        sent: asyncio.Event | None = None,
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
        failure: Failure | None = None
        for attempt in range(policy.max_retries + 1):
            # Errors are raised outside the `except` blocks: an exception raised inside one keeps the httpx
            # exception (and its request, with the Authorization header) as __context__.
            answer: json_big.Answer | None = None
            try:
                answer = await self._send_once(method, url, route, body, log_lines, sent)
            except httpx.TimeoutException as exc:
                unsent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                failure = Failure(FailureKind.TIMEOUT, type(exc).__name__, sent=not unsent)
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:  # our fault: no retry helps
                failure = Failure(FailureKind.UNSENDABLE, type(exc).__name__, sent=False)
            except httpx.RequestError as exc:  # connect/read/protocol errors, bad encodings
                unsent = isinstance(exc, httpx.ConnectError)
                failure = Failure(
                    FailureKind.NETWORK, self._redact(f"{type(exc).__name__}: {exc}")[:300], sent=not unsent
                )
            if answer is not None:
                try:
                    outcome = self._outcome(answer, route, job_id, rejects=not idempotent)
                finally:
                    _release(answer.response)
                if not isinstance(outcome, Failure):
                    return outcome.value
                failure = outcome
            assert failure is not None
            if not failure.retry:
                raise self._final_error(failure, route, attempt + 1)
            if not idempotent and failure.sent and failure.kind is not FailureKind.THROTTLED:
                raise AmbiguousOutcome(
                    self._redact(f"{self.label}: {route} failed ({failure.detail})"), status=failure.status
                )

            if attempt >= policy.max_retries:
                break
            delay = policy_delay(policy, attempt, failure.server_wait, self._rng)
            if delay is None or waited + delay > policy.budget:
                break  # the server asks for longer than one call may wait: let the caller schedule it
            if failure.kind is FailureKind.THROTTLED:  # everyone waits: the limit is per account
                self.limiter.pause(delay)
            self.stats.retries += 1
            waited += delay
            # The detail may quote the server's error body, and a server may echo our request back.
            log.info("%s: %s, retry %d in %.2fs", route, self._redact(failure.detail), attempt + 1, delay)
            await self._sleep(delay)
        assert failure is not None
        if failure.kind is FailureKind.THROTTLED and failure.server_wait:
            self.limiter.pause(failure.server_wait)  # honoured by every later call, not only this one
        raise self._final_error(failure, route, attempt + 1)

    def _outcome(
        self, answer: json_big.Answer, route: str, job_id: str | None, *, rejects: bool = False
    ) -> _Body | Failure:
        """Classify one answer: a decoded body, a failure of the kind its status says (`failures.RULES`
        decides what each becomes), or raise what only this request can mean (a refusal of what it sent,
        a job that does not exist).

        A large 2xx body comes decoded off the loop (`json_big.receive`), or with why it could not be."""
        response, decoded = answer.response, answer.decoded
        status = response.status_code
        if 200 <= status < 300:
            try:
                if isinstance(decoded, Exception):
                    raise decoded
                return _Body(decoded[0] if decoded is not None else response.json())
            except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, absurd nesting
                ctype = response.headers.get("content-type", "?").split(";")[0]
                return Failure(
                    FailureKind.MALFORMED,
                    f"HTTP {status} body is not JSON ({ctype}, {answer.size} B)",
                )
        detail = self._problem(response)
        if rejects and status in _REFUSALS:
            raise self._rejected(response, route, detail)
        kind = kind_of_status(status)
        if kind is FailureKind.MISSING and job_id is not None:
            raise JobNotFound(job_id, self.label)
        if kind is FailureKind.THROTTLED:
            self.stats.throttled += 1
        wait = server_wait(response.headers, time.time()) if status in RETRY_STATUSES else None
        return Failure.from_answer(kind, status, detail, response.reason_phrase, wait)

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

    def _final_error(self, failure: Failure, route: str, attempts: int) -> ProviderError:
        """What `failure` raises once no retry is left (or none can help): `failures.RULES` says."""
        why = "no token was set (REPLICATE_API_TOKEN)" if not self._token else "check REPLICATE_API_TOKEN"
        return failure.error(
            label=self.label,
            route=route,
            base_url=self.base_url,
            attempts=attempts,
            why=why,
            redact=self._redact,
        )


@dataclass(frozen=True, slots=True)
class _Body:
    value: Any


_REFUSALS = frozenset({400, 404, 409, 413, 422})  # the request's content was refused: resending won't help
CREATE_ROUTE = "POST /v1/models/{owner}/{name}/versions/{version}/trainings"
_REQUESTS = {CREATE_ROUTE: "the new training"}  # what a refused request was, in a person's words


def _on_sent(sent: asyncio.Event) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpx `trace` hook that sets `sent` when the request's body has been written."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            sent.set()

    return trace


def _release(response: httpx.Response) -> None:
    """Break httpx's response <-> stream reference cycle once the body is decoded.

    The client binds each response's stream to the response itself, so an answer is freed by the cyclic
    garbage collector, not when the last reference goes: under a burst of log GETs (tens of MB each) the
    bodies piled up until a full collection. An empty stream in its place lets the body go at once.
    """
    response.stream = httpx.ByteStream(b"")
