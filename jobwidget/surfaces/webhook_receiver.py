"""The verified webhook receiver: Standard Webhooks signatures over a streamed body, exactly-once apply.

Why it is built this way:
- Headers first: a delivery without them, or with a stale timestamp, is refused before a byte of its body
  is read. Then the body streams through the HMAC as it arrives, under a size cap, and the bytes of all
  deliveries not verified yet are bounded together (`inflight_bytes`): sixteen concurrent 31 MiB posts
  with forged signatures cannot hold 500 MB, whatever their number.
- The signing secret comes from the settings, or is fetched from the provider once and kept: at start
  when a webhook URL is configured (deliveries are expected), else when the first delivery arrives. A
  failed fetch is tried again on a backoff schedule (2 s, doubling to 5 min), never sooner however many
  deliveries arrive, so forged deliveries cannot turn into provider calls; until the secret is known
  deliveries get 503, which Replicate retries.
- The body is parsed with a depth bound (`jobwidget.core.jsonlimits`): deeply nested JSON is a 400.
- Applying it is the engine's business (`SyncService.ingest` with the delivery id): the update and the
  record of the delivery commit in one transaction, so a retry after a crash is applied, not dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from jobwidget.core.errors import ConfigError, MalformedResponse, ProviderError, WebhookVerificationError
from jobwidget.core.jsonlimits import JsonLimitError, loads_bounded
from jobwidget.core.webhooks import check_headers, check_mac, decode_secret, signing_mac
from jobwidget.engine.runtime import Engine
from jobwidget.surfaces.asgi import error_body
from jobwidget.surfaces.http_limits import CLOSE

__all__ = ["WebhookReceiver"]

log = logging.getLogger("jobwidget.server")

_REFUSAL_LOG_INTERVAL = 10.0  # seconds between log lines about refused webhooks
_SECRET_WAIT = 10.0  # how long a delivery waits for a secret fetch in flight before a 503
_SECRET_RETRY_MAX = 300.0
_SECRET_ATTEMPTS = 60  # then the server stops asking (about 4 hours of backoff); a restart asks again

Json = Callable[[Any, int, "dict[str, str] | None"], Response]


class WebhookReceiver:
    """Verifies and applies deliveries for one engine. `json(data, status, headers)` builds a response
    (the server's, with its redaction); `redact_add` registers the fetched secret for masking."""

    def __init__(
        self,
        engine: Engine,
        *,
        json: Json,
        redact_add: Callable[[str], None],
        tolerance: float,
        max_body: int,
        inflight_bytes: int,
        secret_retry: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.json = json
        self.redact_add = redact_add
        self.tolerance = tolerance
        self.max_body = max_body
        self.inflight_bytes = inflight_bytes
        self.secret_retry = secret_retry
        self.clock = clock
        self.counts: Counter[str] = Counter()  # outcome -> count, for /api/health and tests
        self.held = 0  # unverified body bytes held right now
        self.peak_held = 0
        self._key: bytes | None = None
        self._key_error: str | None = None
        self._key_final = False  # no point asking again (the provider does not sign, or said garbage)
        self._attempt: asyncio.Task[None] | None = None  # the fetch under way, if any
        self._retrying: asyncio.Task[None] | None = None  # the background retries (webhook URL set)
        self._next_fetch = -math.inf  # monotonic time before which the provider is not asked again
        self._secret_delay = secret_retry
        self.secret_fetches = 0
        self._refusal_logged_at = -math.inf
        self._refusals_unlogged = 0

    # -- the signing secret --------------------------------------------------------------------

    @property
    def key_state(self) -> str:
        if self._key is not None:
            return "ready"
        if self._attempt is not None and not self._attempt.done():
            return "fetching"
        if self._key_error is not None:
            return f"unavailable: {self._key_error}"
        return "not fetched yet"

    def start(self) -> None:
        """Take the configured secret; with a webhook URL configured (deliveries are expected), start
        fetching the provider's at once, in the background, retrying with backoff until it has it."""
        configured = self.engine.configured_webhook_secret
        if configured:
            try:
                self._key = decode_secret(configured)
            except ConfigError as exc:
                self._key_error, self._key_final = str(exc), True
        elif self.engine.webhook_url and self._retrying is None:
            self._retrying = asyncio.get_running_loop().create_task(
                self._keep_trying(), name="jobwidget-secret"
            )

    async def stop(self) -> None:
        for task in (self._retrying, self._attempt):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._retrying = self._attempt = None

    def _begin_attempt(self) -> asyncio.Task[None]:
        self._attempt = asyncio.get_running_loop().create_task(self._fetch_once(), name="jobwidget-secret")
        return self._attempt

    async def _fetch_once(self) -> None:
        """Ask the provider for its secret once. A failure sets when the next attempt may be made:
        deliveries never make one sooner, however many arrive."""
        self.secret_fetches += 1
        try:
            secret = await self.engine.fetch_webhook_secret()
            self.redact_add(secret)
            self._key, self._key_error = decode_secret(secret), None
        except NotImplementedError:
            self._key_error, self._key_final = f"{self.engine.provider_label} does not sign webhooks", True
        except ConfigError as exc:
            self._key_error, self._key_final = (
                f"{self.engine.provider_label} gave an unusable secret: {exc}",
                True,
            )
        except ProviderError as exc:
            delay = self._secret_delay
            self._secret_delay = min(_SECRET_RETRY_MAX, delay * 2)
            self._next_fetch = time.monotonic() + delay
            self._key_error = f"the signing secret could not be fetched ({exc}); next try in {delay:.0f} s"
            log.warning("jobwidget: webhook signing secret: %s", self._key_error)

    async def _keep_trying(self) -> None:
        for _ in range(_SECRET_ATTEMPTS):
            if self._key is not None or self._key_final:
                return
            wait = self._next_fetch - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            task = self._attempt if self._attempt is not None and not self._attempt.done() else None
            await asyncio.shield(task or self._begin_attempt())

    async def _key_now(self) -> bytes | None:
        """The key; when none is known and an attempt is due, one is made (and waited for, bounded)."""
        if self._key is None and not self._key_final:
            task = self._attempt
            if (task is None or task.done()) and time.monotonic() >= self._next_fetch:
                task = self._begin_attempt()
            if task is not None and not task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), _SECRET_WAIT)
        return self._key

    # -- deliveries ------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        try:
            parsed = check_headers(request.headers, now=self.clock(), tolerance=self.tolerance)
        except WebhookVerificationError as exc:
            return self._refused("unverified", 401, str(exc), CLOSE)
        key = await self._key_now()
        if key is None:
            self.counts["no_secret"] += 1
            detail = f"cannot verify webhooks yet: {self._key_error or 'the signing secret is being fetched'}"
            return self.error(503, detail, {"Retry-After": "30", **CLOSE})
        body = await self._read_verified(request, key, parsed)
        if isinstance(body, Response):
            return body
        try:
            payload = loads_bounded(body)
        except JsonLimitError as exc:
            return self._refused("malformed", 400, f"the webhook body is refused: {exc}")
        del body
        job_id = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(job_id, str) or not job_id.strip():
            return self._refused(
                "malformed", 422, "the webhook body is not a training object (no string 'id')"
            )
        try:
            result = await self.engine.ingest(payload, delivery_id=parsed.msg_id)
        except NotImplementedError:
            return self._refused("malformed", 422, f"{self.engine.provider_label} does not take webhooks")
        except (MalformedResponse, ValueError, TypeError) as exc:
            return self._refused("malformed", 422, f"the webhook body is not a training object: {exc}")
        out: dict[str, Any] = {"received": True, "duplicate": result.duplicate, "job_id": job_id}
        if result.duplicate:
            self.counts["duplicate"] += 1
            return self.json({**out, "changed": False}, 200, None)
        self.counts["applied"] += 1
        changed = result.changed
        out["changed"] = bool(changed)
        if changed:
            out["status"] = changed[-1].status.value
        return self.json(out, 200, None)

    async def _read_verified(self, request: Request, key: bytes, parsed: Any) -> bytes | Response:
        """The body, read through the HMAC within the shared budget for unverified bytes."""
        mac = signing_mac(key, parsed)
        chunks: list[bytes] = []
        held = 0
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                if self.held + len(chunk) > self.inflight_bytes:
                    self.counts["busy"] += 1
                    detail = "too many webhook bodies are being received at once; retry shortly"
                    return self.error(503, detail, {"Retry-After": "5", **CLOSE})
                self.held += len(chunk)
                held += len(chunk)
                self.peak_held = max(self.peak_held, self.held)
                mac.update(chunk)
                chunks.append(chunk)
            check_mac(parsed, mac)
        except WebhookVerificationError as exc:
            return self._refused("unverified", 401, str(exc))
        except ClientDisconnect:
            return self.error(400, "the client went away before the body arrived", CLOSE)
        finally:
            self.held -= held
        return b"".join(chunks)

    def _refused(
        self, outcome: str, status: int, detail: str, headers: dict[str, str] | None = None
    ) -> Response:
        self.counts[outcome] += 1
        # At most one line per interval: a flood of forged deliveries must not flood the log too.
        now = time.monotonic()
        if now - self._refusal_logged_at >= _REFUSAL_LOG_INTERVAL:
            more = (
                f" (and {self._refusals_unlogged} more since the last report)"
                if self._refusals_unlogged
                else ""
            )
            log.warning("jobwidget: webhook refused (%d): %s%s", status, detail, more)
            self._refusal_logged_at, self._refusals_unlogged = now, 0
        else:
            self._refusals_unlogged += 1
        return self.error(status, detail, headers)

    def error(self, status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
        return self.json(error_body(status, detail), status, headers)
