"""The HTTP API, the SSE event stream and the verified webhook receiver over one `Engine` (SPEC §8).

The routes and JSON shapes are the seed's, so its curl and JavaScript examples work unchanged. Why it is
built this way:
- One Starlette app over the engine, run by uvicorn on the engine's own loop: `jobwidget serve` starts
  the engine in the app's lifespan; a notebook runs the same app on the controller's loop with
  `start_server(engine, ...)`, so webhooks and SSE see exactly the state the panel shows.
- Webhooks are verified (Standard Webhooks, `jobwidget.core.webhooks`) before anything is parsed, then
  deduplicated on `webhook-id` in the store (across restarts and processes), then applied through the
  sync service with the never-regress rule. Headers are checked before the body is read.
- SSE: one bounded queue per client; a client that cannot keep up is dropped, never buffered without
  limit, and the number of streams per client address is capped.
- Security: loopback by default. Another address needs an API token, and then every route but the
  (signed) webhook wants `Authorization: Bearer <token>`. Without a token, the Host header must name
  this machine (DNS-rebinding protection for a browser on the same host). Request bodies are capped.
  Every error is JSON, never a traceback, and known secrets are masked in everything sent out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobwidget.core.errors import (
    ConfigError,
    JobNotFound,
    MalformedResponse,
    ProviderError,
    RateLimited,
    StoreError,
    WebhookVerificationError,
)
from jobwidget.core.models import JobStatus
from jobwidget.core.webhooks import DEFAULT_TOLERANCE, check_headers, decode_secret, verify_signature
from jobwidget.engine.events import PUBLIC_EVENTS, EventBus
from jobwidget.engine.runtime import Engine

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EventHub",
    "ServerHandle",
    "ServerOptions",
    "bind_socket",
    "check_bind",
    "create_app",
    "is_loopback",
    "make_server",
    "start_server",
]

log = logging.getLogger("jobwidget.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
WEBHOOK_PATH = "/api/webhooks/replicate"
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_MiB = 1024 * 1024
_REFUSAL_LOG_INTERVAL = 10.0  # seconds between log lines about refused webhooks
_MIN_SECRET_CHARS = 8  # shorter strings would mask ordinary words, and are no real secret anyway


@dataclass(frozen=True)
class ServerOptions:
    """Knobs of the HTTP surface. The defaults are the seed's (5 streams per address) or conservative."""

    api_token: str | None = field(default=None, repr=False)
    max_body: int = 1 * _MiB  # every route but the webhook
    # A Replicate webhook carries the training's whole log, which reaches megabytes on long runs.
    webhook_max_body: int = 32 * _MiB
    webhook_tolerance: float = DEFAULT_TOLERANCE
    sse_per_client: int = 5
    sse_queue: int = 256  # events buffered per SSE client before it counts as too slow and is dropped
    heartbeat: float = 15.0  # seconds between SSE comment lines, so proxies keep idle streams open
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted without a token, besides loopback's
    max_list: int = 5000  # largest `limit` of GET /api/cloud/jobs

    def __post_init__(self) -> None:
        if self.api_token is not None and (
            not self.api_token.strip() or len(self.api_token) < _MIN_SECRET_CHARS
        ):
            raise ConfigError(f"the API token must be at least {_MIN_SECRET_CHARS} characters")
        for name in ("max_body", "webhook_max_body", "sse_per_client", "sse_queue", "max_list"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"server option {name} must be a positive integer, got {value!r}")
        for name in ("webhook_tolerance", "heartbeat"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"server option {name} must be a positive number of seconds, got {value!r}")


# ------------------------------------------------------------------------------------------- redaction


class _Redactor:
    """Masks known secret values (provider token, API token, webhook secret) in outgoing text.

    Defence in depth: nothing is meant to carry them, but a training's logs or an error message could.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= _MIN_SECRET_CHARS and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)  # a secret containing another is masked whole

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)


def _error_body(status: int, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": HTTPStatus(status).phrase, "detail": detail, "status": status, **extra}


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    """A JSON answer straight from middleware (before any route runs)."""
    raw = _dumps(body).encode()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


# ------------------------------------------------------------------------------------------ middleware


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _Guard:
    """Authentication (bearer token) or, without a token, the Host check; the webhook route is exempt."""

    def __init__(self, app: ASGIApp, *, token: str | None, allowed_hosts: frozenset[str]) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == WEBHOOK_PATH:
            await self.app(scope, receive, send)
            return
        if self.token is not None:
            given = _header(scope, b"authorization") or ""
            scheme, _, credentials = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), self.token
            ):
                detail = (
                    "this server wants 'Authorization: Bearer <api token>' (the token it was started with)"
                )
                await _send_json(send, 401, _error_body(401, detail), {"WWW-Authenticate": "Bearer"})
                return
        else:
            host = _header(scope, b"host")
            if host is not None and _host_name(host) not in self.allowed_hosts:
                detail = (
                    "this server answers only requests addressed to this machine (Host: localhost or "
                    "127.0.0.1); start it with an API token to serve other names"
                )
                await _send_json(send, 403, _error_body(403, detail))
                return
        await self.app(scope, receive, send)


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class _BodyLimit:
    """Refuse bodies over the limit: at once from Content-Length, or while they stream in (chunked)."""

    def __init__(self, app: ASGIApp, *, default: int, per_path: dict[str, int]) -> None:
        self.app = app
        self.default = default
        self.per_path = per_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.default)
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            await _send_json(send, 413, _error_body(413, f"request body larger than {limit} bytes"))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


# ----------------------------------------------------------------------------------------------- SSE


class _SseClient:
    __slots__ = ("cancel_scope", "dropped", "ip", "queue")

    def __init__(self, ip: str, queue_size: int) -> None:
        self.ip = ip
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(queue_size)
        self.cancel_scope: anyio.CancelScope | None = None
        self.dropped = False


class EventHub:
    """Fans the engine's public events out to SSE clients, each through a bounded queue.

    `publish` runs in the event bus's dispatcher and never waits: a client whose queue is full is
    dropped (its stream is cancelled), so one slow reader can neither stall the others nor grow memory.
    """

    def __init__(
        self, bus: EventBus, *, per_client: int, queue_size: int, redact: Callable[[str], str] = str
    ) -> None:
        self.bus = bus
        self.per_client = per_client
        self.queue_size = queue_size
        self.redact = redact
        self._clients: set[_SseClient] = set()
        self._by_ip: Counter[str] = Counter()
        self._attached = False
        self.closing = False
        self.dropped = 0  # clients dropped for being too slow
        self.refused = 0  # connections refused over the per-address limit
        self.published = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    def attach(self) -> None:
        if not self._attached:
            for event in sorted(PUBLIC_EVENTS):
                self.bus.on(event, self.publish)
            self._attached = True

    def detach(self) -> None:
        if self._attached:
            for event in sorted(PUBLIC_EVENTS):
                self.bus.off(event, self.publish)
            self._attached = False

    def open(self, ip: str) -> _SseClient | None:
        """Register a stream for `ip`, or None when that address already has `per_client` streams."""
        if self.closing or self._by_ip[ip] >= self.per_client:
            self.refused += 1
            return None
        client = _SseClient(ip, self.queue_size)
        self._clients.add(client)
        self._by_ip[ip] += 1
        return client

    def close(self, client: _SseClient) -> None:
        if client in self._clients:
            self._clients.discard(client)
            self._by_ip[client.ip] -= 1
            if self._by_ip[client.ip] <= 0:
                del self._by_ip[client.ip]

    def publish(self, event: dict[str, Any]) -> None:
        if not self._clients:
            return
        self.published += 1
        data = f"data: {self.redact(_dumps(event))}\n\n".encode()
        for client in list(self._clients):
            try:
                client.queue.put_nowait(data)
            except asyncio.QueueFull:
                self._drop(client)

    def _drop(self, client: _SseClient) -> None:
        if client.dropped:
            return
        client.dropped = True
        self.dropped += 1
        log.warning(
            "jobwidget: dropped an SSE client at %s: it fell %d events behind", client.ip, self.queue_size
        )
        while not client.queue.empty():
            client.queue.get_nowait()
        if client.cancel_scope is not None:
            client.cancel_scope.cancel()
        self.close(client)

    def shutdown(self) -> None:
        """End every stream (server stopping): each gets a clean end of response if it can take one."""
        self.closing = True
        for client in list(self._clients):
            try:
                client.queue.put_nowait(None)
            except asyncio.QueueFull:
                self._drop(client)


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]


class _EventStream(Response):
    """`text/event-stream` for one client: `data: {json}` per event, a comment line as heartbeat."""

    def __init__(self, hub: EventHub, ip: str, heartbeat: float) -> None:
        super().__init__(media_type="text/event-stream")
        self.hub = hub
        self.ip = ip
        self.heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":  # headers only: a HEAD must not hold a stream slot open
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return
        client = self.hub.open(self.ip)
        if client is None:
            detail = (
                f"at most {self.hub.per_client} event streams per client address; close one first"
                if not self.hub.closing
                else "the server is shutting down"
            )
            status = 503 if self.hub.closing else 429
            await _send_json(send, status, _error_body(status, detail), {"Retry-After": "5"})
            return
        disconnected = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send(
                {"type": "http.response.body", "body": b": connected\nretry: 3000\n\n", "more_body": True}
            )
            with anyio.CancelScope() as scope_:
                client.cancel_scope = scope_

                async def watch() -> None:
                    nonlocal disconnected
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    disconnected = True
                    scope_.cancel()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch)
                    await self._pump(client, send)
                    tg.cancel_scope.cancel()
            if not disconnected:
                # A clean end of the response (server shutdown, or a dropped slow client if it can still
                # take one more chunk); a client that cannot is cut off by the server closing the socket.
                with anyio.move_on_after(1.0, shield=True):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        finally:
            self.hub.close(client)

    async def _pump(self, client: _SseClient, send: Send) -> None:
        while True:
            with anyio.move_on_after(self.heartbeat) as timer:
                item = await client.queue.get()
            if timer.cancelled_caught:
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                continue
            batch = [item]
            while batch[-1] is not None and not client.queue.empty():
                batch.append(client.queue.get_nowait())  # what queued meanwhile goes out in one write
            payload = b"".join(b for b in batch if b is not None)
            if payload:
                await send({"type": "http.response.body", "body": payload, "more_body": True})
            if batch[-1] is None:
                return


# ----------------------------------------------------------------------------------------------- API

_OPENAPI_BASE: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "jobwidget",
        "version": "0.1.0",
        "description": (
            "Cloud fine-tuning jobs (Replicate trainings): list, sync, inline progress, server-sent events "
            "and a verified webhook receiver. Bound to 127.0.0.1 by default; when started with an API "
            "token, every route but the webhook wants `Authorization: Bearer <token>`."
        ),
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {
            name: {
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for name, description in {
                "BadRequest": "an invalid parameter or body",
                "Unauthorized": "the signature, headers or timestamp were refused",
                "NotFound": "no such job",
                "TooLarge": "the request body is over the limit",
                "Unprocessable": "the body is not a training object",
                "TooMany": "too many event streams from this address",
                "ProviderFailed": "the provider failed or could not be reached",
                "Unavailable": "rate limited, store busy, or the webhook secret not available yet",
            }.items()
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "detail", "status"],
                "properties": {
                    "error": {"type": "string"},
                    "detail": {"type": "string"},
                    "status": {"type": "integer"},
                },
            },
            "Job": {
                "type": "object",
                "required": ["job_id", "provider", "status"],
                "properties": {
                    "job_id": {"type": "string"},
                    "provider": {"type": "string"},
                    "status": {"type": "string", "enum": [s.value for s in JobStatus]},
                    "name": {"type": "string", "nullable": True},
                    "model": {"type": "string", "nullable": True},
                    "version": {"type": "string", "nullable": True},
                    "hardware": {"type": "string", "nullable": True},
                    "created_at": {"type": "string", "format": "date-time", "nullable": True},
                    "started_at": {"type": "string", "format": "date-time", "nullable": True},
                    "completed_at": {"type": "string", "format": "date-time", "nullable": True},
                    "cost_usd": {"type": "number", "nullable": True},
                    "error_message": {"type": "string", "nullable": True},
                    "output": {"type": "object", "nullable": True},
                    "web_url": {"type": "string", "nullable": True},
                    "stage": {"type": "string", "nullable": True},
                    "progress": {"type": "number", "nullable": True},
                    "last_log": {"type": "string", "nullable": True},
                    "updated_at": {"type": "string", "format": "date-time", "nullable": True},
                    "metadata": {"type": "object"},
                    "trained_version": {"type": "string", "nullable": True},
                    "provider_status": {"type": "string", "nullable": True},
                    "projected_finish_at": {"type": "string", "format": "date-time", "nullable": True},
                    "projected_cost_usd": {"type": "number", "nullable": True},
                    "flags": {
                        "type": "object",
                        "description": "raised health flags: nan_loss, stalled, diverging, slow_start",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {"reason": {"type": "string"}, "raised_at": {"type": "number"}},
                        },
                    },
                    "guard_reason": {"type": "string", "nullable": True},
                },
            },
            "History": {
                "type": "object",
                "required": ["job_id", "samples"],
                "properties": {
                    "job_id": {"type": "string"},
                    "samples": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "t": {"type": "number", "description": "epoch seconds of the read"},
                                "step": {"type": "integer", "nullable": True},
                                "total_steps": {"type": "integer", "nullable": True},
                                "loss": {"type": "number", "nullable": True},
                                "loss_nan": {"type": "boolean"},
                                "rate": {"type": "number", "nullable": True},
                                "reads": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            "InlineProgress": {
                "type": "object",
                "required": ["job_id", "stage", "last_log", "progress"],
                "properties": {
                    "job_id": {"type": "string"},
                    "stage": {"type": "string", "nullable": True},
                    "last_log": {"type": "string", "nullable": True},
                    "progress": {"type": "number", "nullable": True},
                    "step": {"type": "integer", "nullable": True},
                    "total_steps": {"type": "integer", "nullable": True},
                    "rate": {"type": "number", "nullable": True},
                    "eta_seconds": {"type": "number", "nullable": True},
                    "loss": {"type": "number", "nullable": True},
                    "loss_nan": {"type": "boolean"},
                },
            },
            "SyncResult": {
                "type": "object",
                "required": ["synced", "updated", "message"],
                "properties": {
                    "synced": {"type": "integer"},
                    "updated": {"type": "integer"},
                    "message": {"type": "string"},
                },
            },
            "ProviderCheck": {
                "type": "object",
                "required": ["ok", "message", "provider"],
                "properties": {
                    "ok": {"type": "boolean"},
                    "message": {"type": "string"},
                    "provider": {"type": "string"},
                    "account": {"type": "string", "nullable": True},
                    "latency_ms": {"type": "number", "nullable": True},
                    "checked_at": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _bad_request(detail: str) -> HTTPException:
    return HTTPException(400, detail)


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 12:
        raise _bad_request(f"{name} must be a whole number between {lo} and {hi}, got {raw!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise _bad_request(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _bool_param(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _bad_request(f"{name} must be true or false, got {raw!r}")


def _status_param(request: Request) -> list[JobStatus] | None:
    raw = request.query_params.getlist("status")
    if not raw:
        return None
    names = [part.strip().lower() for value in raw for part in value.split(",") if part.strip()]
    if not names:
        return None
    known = {s.value: s for s in JobStatus}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise _bad_request(
            f"unknown status {unknown[0]!r}; use one or more of {', '.join(known)} (comma-separated)"
        )
    return [known[n] for n in dict.fromkeys(names)]


class _Api:
    """The route handlers and the state they share (engine, SSE hub, webhook secret, redaction)."""

    def __init__(self, engine: Engine, options: ServerOptions, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.options = options
        self.clock = clock
        provider_token = getattr(engine.provider, "_token", None)  # masked wherever it could leak
        self.redact = _Redactor(
            [
                options.api_token,
                provider_token if isinstance(provider_token, str) else None,
                os.environ.get("REPLICATE_API_TOKEN"),
                engine.settings.webhook_secret,
            ]
        )
        self.hub = EventHub(
            engine.bus, per_client=options.sse_per_client, queue_size=options.sse_queue, redact=self.redact
        )
        self._key: bytes | None = None
        self._key_lock = asyncio.Lock()
        self._claim_lock = asyncio.Lock()
        self.webhooks = Counter[str]()  # outcome -> count, for /api/health and tests
        self._refusal_logged_at = -math.inf
        self._refusals_unlogged = 0
        self.schema = SchemaGenerator(_OPENAPI_BASE)

    # -- responses ---------------------------------------------------------------------------

    def json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        body = self.redact(_dumps(data)).encode()
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    def error(
        self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> Response:
        return self.json(_error_body(status, detail, **extra), status, headers)

    # -- exception handlers ------------------------------------------------------------------

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers) if exc.headers else None
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == HTTPStatus(404).phrase:
            detail = f"no route {request.url.path}; see /openapi.json for the routes this server has"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return self.error(exc.status_code, detail, headers)

    async def on_not_found(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, JobNotFound)
        return self.error(404, str(exc), job_id=exc.job_id)

    async def on_provider_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProviderError)
        label = self.engine.provider.label
        if isinstance(exc, RateLimited):
            retry = str(max(1, round(exc.retry_after))) if exc.retry_after else "30"
            return self.error(503, f"{label} is rate limiting us: {exc}", {"Retry-After": retry})
        return self.error(502, f"{label} could not answer: {exc}")

    async def on_store_error(self, request: Request, exc: Exception) -> Response:
        return self.error(503, f"the job store is unavailable: {exc}", {"Retry-After": "5"})

    async def on_unexpected(self, request: Request, exc: Exception) -> Response:
        log.error("jobwidget: %s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return self.error(500, "an unexpected error occurred; the server log has the details")

    # -- routes ------------------------------------------------------------------------------

    async def list_jobs(self, request: Request) -> Response:
        """Jobs, newest first (the seed's `GET /jobs`).
        ---
        summary: List jobs, newest first
        parameters:
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 5000, default: 50}}
          - {name: provider, in: query, schema: {type: string}}
          - name: status
            in: query
            description: one status or several, comma-separated
            schema: {type: string, example: running}
          - name: sync_active
            in: query
            description: refresh every active job from the provider first
            schema: {type: boolean, default: false}
        responses:
          "200":
            description: the jobs
            content:
              application/json:
                schema:
                  type: object
                  required: [jobs, count]
                  properties:
                    jobs: {type: array, items: {$ref: "#/components/schemas/Job"}}
                    count: {type: integer}
                    sync_error: {type: string}
          "400": {$ref: "#/components/responses/BadRequest"}
        """
        limit = _int_param(request, "limit", 50, 1, self.options.max_list)
        statuses = _status_param(request)
        provider = request.query_params.get("provider") or None
        extra: dict[str, Any] = {}
        if _bool_param(request, "sync_active"):
            try:
                refreshed = await self.engine.service.refresh_active()
                extra["refreshed"] = {"checked": refreshed.checked, "updated": refreshed.updated}
            except ProviderError as exc:  # still answer from the store, and say why it may be stale
                extra["sync_error"] = f"{self.engine.provider.label}: {exc}"
        jobs = await asyncio.to_thread(
            self.engine.store.list, status=statuses, provider=provider, limit=limit
        )
        return self.json({"jobs": [job.to_dict() for job in jobs], "count": len(jobs), **extra})

    async def get_job(self, request: Request) -> Response:
        """One job from the store.
        ---
        summary: One job
        parameters:
          - {name: job_id, in: path, required: true, schema: {type: string}}
        responses:
          "200":
            description: the job
            content: {application/json: {schema: {$ref: "#/components/schemas/Job"}}}
          "404": {$ref: "#/components/responses/NotFound"}
        """
        job_id = request.path_params["job_id"]
        job = await asyncio.to_thread(self.engine.store.get, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return self.json(job.to_dict())

    async def sync(self, request: Request) -> Response:
        """Discover the provider's recent jobs (the seed's `POST /jobs/sync`).
        ---
        summary: Discover and update the provider's recent jobs
        parameters:
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100000, default: 100}}
          - name: all
            in: query
            description: follow every page of the provider's history
            schema: {type: boolean, default: false}
        responses:
          "200":
            description: what the sync did
            content: {application/json: {schema: {$ref: "#/components/schemas/SyncResult"}}}
          "400": {$ref: "#/components/responses/BadRequest"}
          "502": {$ref: "#/components/responses/ProviderFailed"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        limit = _int_param(request, "limit", 100, 1, 100_000)
        everything = _bool_param(request, "all")
        result = await self.engine.service.sync(limit=limit, all=everything)
        return self.json(result.to_dict())

    async def inline_progress(self, request: Request) -> Response:
        """Compact progress of one job from its log tail (the seed's inline-progress API).
        ---
        summary: Stage, progress and last log line of one job
        parameters:
          - {name: job_id, in: path, required: true, schema: {type: string}}
        responses:
          "200":
            description: the progress
            content: {application/json: {schema: {$ref: "#/components/schemas/InlineProgress"}}}
          "404": {$ref: "#/components/responses/NotFound"}
        """
        progress = await self.engine.service.inline_progress(request.path_params["job_id"])
        return self.json(progress.to_dict())

    async def history(self, request: Request) -> Response:
        """A job's progress history, downsampled to a few hundred reads (a NaN loss is `loss_nan`).
        ---
        summary: Loss and step history of one job
        parameters:
          - {name: job_id, in: path, required: true, schema: {type: string}}
        responses:
          "200":
            description: the history, oldest first
            content: {application/json: {schema: {$ref: "#/components/schemas/History"}}}
          "404": {$ref: "#/components/responses/NotFound"}
        """
        job_id = request.path_params["job_id"]
        samples = await self.engine.history(job_id)
        return self.json(
            {
                "job_id": job_id,
                "samples": [
                    {
                        "t": s.t,
                        "step": s.step,
                        "total_steps": s.total,
                        "loss": None if s.nan else s.loss,
                        "loss_nan": s.nan,
                        "rate": s.rate,
                        "reads": s.n,
                    }
                    for s in samples
                ],
            }
        )

    async def validate(self, request: Request) -> Response:
        """Can the server reach the provider with its credentials? (Never an error status: see `ok`.)
        ---
        summary: Check the provider connection
        responses:
          "200":
            description: the check
            content: {application/json: {schema: {$ref: "#/components/schemas/ProviderCheck"}}}
        """
        check = await self.engine.service.validate()
        return self.json(check.to_dict())

    async def health(self, request: Request) -> Response:
        """Liveness and a few counters (cheap: no provider call).
        ---
        summary: Server status
        responses:
          "200":
            description: status
            content:
              application/json:
                schema: {type: object, required: [ok], properties: {ok: {type: boolean}}}
        """
        return self.json(
            {
                "ok": True,
                "provider": self.engine.provider.label,
                "demo": self.engine.provider.is_demo,
                "polling": self.engine.poller.running,
                "sse_clients": self.hub.clients,
                "webhooks": dict(self.webhooks),
            }
        )

    async def events(self, request: Request) -> Response:
        """Server-sent events: `data: {json}` lines, each with a `type` (job_status_changed, job_progress,
        jobs_discovered, sync_completed, poll_error), and `:` comment heartbeats.
        ---
        summary: Live events (text/event-stream)
        responses:
          "200":
            description: an endless event stream
            content: {text/event-stream: {schema: {type: string}}}
          "429": {$ref: "#/components/responses/TooMany"}
        """
        ip = request.client.host if request.client else "unknown"
        return _EventStream(self.hub, ip, self.options.heartbeat)

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI description of this server."""
        return self.json(self.schema.get_schema(routes=request.app.routes))

    # -- webhooks ----------------------------------------------------------------------------

    async def _webhook_key(self) -> bytes:
        """The HMAC key: from the settings, or fetched once from the provider (its default webhook secret)."""
        if self._key is None:
            async with self._key_lock:
                if self._key is None:
                    secret = (
                        self.engine.settings.webhook_secret or await self.engine.provider.webhook_secret()
                    )
                    self.redact.add(secret)
                    self._key = decode_secret(secret)
        return self._key

    async def webhook(self, request: Request) -> Response:
        """A Replicate webhook delivery (Standard Webhooks signature, 5-minute tolerance, deduplicated
        on `webhook-id`). The body is the training object, as `GET /v1/trainings/{id}` returns it.
        ---
        summary: Receive a signed Replicate webhook
        parameters:
          - {name: webhook-id, in: header, required: true, schema: {type: string}}
          - {name: webhook-timestamp, in: header, required: true, schema: {type: string}}
          - {name: webhook-signature, in: header, required: true, schema: {type: string}}
        requestBody:
          required: true
          content: {application/json: {schema: {type: object}}}
        responses:
          "200":
            description: applied, or a duplicate delivery acknowledged
            content: {application/json: {schema: {type: object}}}
          "400": {$ref: "#/components/responses/BadRequest"}
          "401": {$ref: "#/components/responses/Unauthorized"}
          "413": {$ref: "#/components/responses/TooLarge"}
          "422": {$ref: "#/components/responses/Unprocessable"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        try:
            # Headers first: a delivery without them, or with a stale timestamp, is refused unread.
            parsed = check_headers(
                request.headers, now=self.clock(), tolerance=self.options.webhook_tolerance
            )
        except WebhookVerificationError as exc:
            return self._refused("unverified", 401, str(exc))
        body = await request.body()
        try:
            key = await self._webhook_key()
        except (ProviderError, NotImplementedError) as exc:
            self.webhooks["no_secret"] += 1
            detail = f"cannot verify webhooks yet: the signing secret could not be fetched ({exc})"
            return self.error(503, detail, {"Retry-After": "30"})
        except ConfigError as exc:
            self.webhooks["no_secret"] += 1
            return self.error(500, f"cannot verify webhooks: {exc}")
        try:
            verify_signature(key, parsed, body)
        except WebhookVerificationError as exc:
            return self._refused("unverified", 401, str(exc))
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return self._refused("malformed", 400, "the webhook body is not JSON")
        job_id = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(job_id, str) or not job_id.strip():
            return self._refused(
                "malformed", 422, "the webhook body is not a training object (no string 'id')"
            )
        async with self._claim_lock:  # one claim at a time: parallel SQLite writers would wait on each other
            fresh = await asyncio.to_thread(self.engine.store.claim_webhook, parsed.msg_id, job_id=job_id)
        if not fresh:
            self.webhooks["duplicate"] += 1
            return self.json({"received": True, "duplicate": True, "job_id": job_id, "changed": False})
        try:
            result = await self.engine.service.ingest(payload)
        except BaseException as exc:
            # Not applied: forget the id, so a corrected or retried delivery with it is taken.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.engine.store.release_webhook, parsed.msg_id)
            if isinstance(exc, NotImplementedError):
                return self._refused("malformed", 422, f"{self.engine.provider.label} does not take webhooks")
            if isinstance(exc, MalformedResponse | ValueError | TypeError):
                return self._refused("malformed", 422, f"the webhook body is not a training object: {exc}")
            raise
        self.webhooks["applied"] += 1
        changed = result.changed
        body_out: dict[str, Any] = {
            "received": True,
            "duplicate": False,
            "job_id": job_id,
            "changed": bool(changed),
        }
        if changed:
            body_out["status"] = changed[-1].status.value
        return self.json(body_out)

    def _refused(self, outcome: str, status: int, detail: str) -> Response:
        self.webhooks[outcome] += 1
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
        return self.error(status, detail)

    # -- assembly ----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/api/cloud/jobs", self.list_jobs, methods=["GET"]),
            Route("/api/cloud/jobs/sync", self.sync, methods=["POST"]),
            Route("/api/cloud/jobs/{job_id}", self.get_job, methods=["GET"]),
            Route("/api/cloud/jobs/{job_id}/inline-progress", self.inline_progress, methods=["GET"]),
            Route("/api/cloud/jobs/{job_id}/history", self.history, methods=["GET"]),
            Route("/api/cloud/providers/replicate/validate", self.validate, methods=["GET"]),
            Route("/api/events", self.events, methods=["GET"]),
            Route(WEBHOOK_PATH, self.webhook, methods=["POST"]),
            Route("/api/health", self.health, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"], include_in_schema=False),
        ]


def create_app(
    engine: Engine,
    options: ServerOptions | None = None,
    *,
    start_engine: bool = False,
    poll: bool | None = None,
    bind_host: str = DEFAULT_HOST,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The ASGI app over `engine`.

    `start_engine=True` (`jobwidget serve`): the lifespan starts the engine on the server's loop (polling
    per `poll`, default the settings) and closes it at shutdown. False (in a notebook): the engine is
    already running on this loop and is left as it is. `app.state.api` exposes the hub and counters.
    """
    options = options or ServerOptions()
    api = _Api(engine, options, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start_engine:
            await engine.start(poll=engine.settings.poll_enabled if poll is None else poll)
        api.hub.attach()
        try:
            yield
        finally:
            api.hub.detach()
            api.hub.shutdown()
            if start_engine:
                await engine.aclose()

    allowed = {*_LOOPBACK_NAMES, _host_name(bind_host), *(h.lower() for h in options.allowed_hosts)}
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: api.on_http_error,
        JobNotFound: api.on_not_found,
        ProviderError: api.on_provider_error,
        StoreError: api.on_store_error,
        Exception: api.on_unexpected,
    }
    app = Starlette(
        routes=api.routes(),
        middleware=[
            Middleware(_Guard, token=options.api_token, allowed_hosts=frozenset(allowed)),
            Middleware(
                _BodyLimit, default=options.max_body, per_path={WEBHOOK_PATH: options.webhook_max_body}
            ),
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    app.state.api = api
    return app


# ------------------------------------------------------------------------------------------- running


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_token: str | None) -> None:
    """Refuse to face a network without a token: the API would hand anyone the job list."""
    if not is_loopback(host) and not api_token:
        raise ConfigError(
            f"binding {host} exposes the API beyond this machine: pass --api-token (or set "
            "JOBWIDGET_API_TOKEN); every route but the signed webhook then wants "
            "'Authorization: Bearer <token>'"
        )


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: ephemeral), with a clear error when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # Nagle's algorithm meets the client's delayed ACK and every keep-alive response waits ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (pick another --port)"
        ) from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn, ending the SSE streams first at shutdown (they never end by themselves)."""

    def __init__(self, config: uvicorn.Config, hub: EventHub) -> None:
        super().__init__(config)
        self.hub = hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.hub.shutdown()
        await super().shutdown(sockets)


def make_server(
    app: Starlette, *, log_level: str = "info", access_log: bool = True, configure_logging: bool = True
) -> _Server:
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=3,
        server_header=False,
        log_config=uvicorn.config.LOGGING_CONFIG if configure_logging else None,
    )
    return _Server(config, app.state.api.hub)


@dataclass
class ServerHandle:
    """A server running on the engine's loop; `await handle.stop()` ends it (the engine keeps running)."""

    host: str
    port: int
    app: Starlette
    _server: _Server = field(repr=False)
    _task: asyncio.Task[None] = field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return not self._task.done()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, end SSE streams, wait for the server to finish (bounded by `timeout`)."""
        if self._task.done():
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def start_server(
    engine: Engine,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    options: ServerOptions | None = None,
    log_level: str = "warning",
    startup_timeout: float = 10.0,
    **opts: Any,
) -> ServerHandle:
    """Serve the HTTP API over a running `engine`, on the current loop (which must be the engine's).

    For a notebook: `Jobs.serve(port=...)` awaits this on the controller's loop. `port=0` picks a free
    port (see `handle.port`). `opts` are `ServerOptions` fields (e.g. `api_token=`, `sse_per_client=`).
    Logging is left as the host process configured it.
    """
    options = options or ServerOptions(**opts)
    check_bind(host, options.api_token)
    sock = bind_socket(host, port)
    app = create_app(engine, options, start_engine=False, bind_host=host)
    server = make_server(app, log_level=log_level, access_log=False, configure_logging=False)
    bound_port = sock.getsockname()[1]

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit:  # uvicorn exits the process on a startup failure; here it must not
            raise RuntimeError(f"the jobwidget server on {host}:{port} failed to start") from None
        finally:
            sock.close()

    task = asyncio.get_running_loop().create_task(run(), name=f"jobwidget-server:{bound_port}")
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if task.done():
            task.result()  # raises what went wrong
            raise RuntimeError(f"the jobwidget server on {host}:{port} stopped during startup")
        if time.monotonic() > deadline:
            server.should_exit = True
            task.cancel()
            raise RuntimeError(
                f"the jobwidget server on {host}:{port} did not start within {startup_timeout:g} s"
            )
        await asyncio.sleep(0.01)
    log.info("jobwidget: serving the HTTP API at http://%s:%d", host, bound_port)
    return ServerHandle(host=host, port=bound_port, app=app, _server=server, _task=task)
