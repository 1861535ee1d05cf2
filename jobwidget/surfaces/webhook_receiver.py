"""The verified webhook receiver: Standard Webhooks signatures over a streamed body, exactly-once apply.

Why it is built this way:
- Headers first: a delivery without them, or with a stale timestamp, is refused before a byte of its body
  is read. Then the body streams through the HMAC as it arrives, under a size cap, and the bytes of all
  deliveries not verified yet are bounded together (`inflight_bytes`): sixteen concurrent 31 MiB posts
  with forged signatures cannot hold 500 MB, whatever their number.
- The signing secret comes from the settings, or is fetched from the provider once, in the background,
  when the server starts (retried with backoff if the provider fails). A delivery never triggers a
  fetch, so forged deliveries cost no provider call; until the secret is known they get 503, which
  Replicate retries.
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
        self._key_attempted = asyncio.Event()
        self._key_task: asyncio.Task[None] | None = None
        self.secret_fetches = 0
        self._refusal_logged_at = -math.inf
        self._refusals_unlogged = 0

    # -- the signing secret --------------------------------------------------------------------

    @property
    def key_state(self) -> str:
        if self._key is not None:
            return "ready"
        if self._key_error is not None:
            return f"unavailable: {self._key_error}"
        return "fetching"

    def start(self) -> None:
        """Take the configured secret, or start fetching the provider's (once, in the background)."""
        configured = self.engine.settings.webhook_secret
        if configured:
            try:
                self._key = decode_secret(configured)
            except ConfigError as exc:
                self._key_error = str(exc)
            self._key_attempted.set()
        elif self._key_task is None:
            self._key_task = asyncio.get_running_loop().create_task(
                self._fetch_secret(), name="jobwidget-secret"
            )

    async def stop(self) -> None:
        task, self._key_task = self._key_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _fetch_secret(self) -> None:
        delay = self.secret_retry
        provider = self.engine.provider
        for _ in range(_SECRET_ATTEMPTS):
            self.secret_fetches += 1
            try:
                secret = await provider.webhook_secret()
                self.redact_add(secret)
                self._key, self._key_error = decode_secret(secret), None
                return
            except NotImplementedError:
                self._key_error = f"{provider.label} does not sign webhooks"
                return
            except ConfigError as exc:
                self._key_error = f"{provider.label} gave an unusable secret: {exc}"
                return
            except ProviderError as exc:
                self._key_error = (
                    f"the signing secret could not be fetched ({exc}); retrying in {delay:.0f} s"
                )
                log.warning("jobwidget: webhook signing secret: %s", self._key_error)
            finally:
                self._key_attempted.set()
            await asyncio.sleep(delay)
            delay = min(_SECRET_RETRY_MAX, delay * 2)

    async def _key_now(self) -> bytes | None:
        if self._key is None and not self._key_attempted.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._key_attempted.wait(), _SECRET_WAIT)
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
            result = await self.engine.service.ingest(payload, delivery_id=parsed.msg_id)
        except NotImplementedError:
            return self._refused("malformed", 422, f"{self.engine.provider.label} does not take webhooks")
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
