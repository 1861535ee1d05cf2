"""The HTTP API, the SSE event stream and the verified webhook receiver over one `Engine`.

The routes and JSON shapes follow the reference system's, so its curl and JavaScript examples work
unchanged. Why it is built this way:
- One Starlette app over the engine, run by uvicorn on the engine's own loop: `jobwidget serve` starts
  the engine in the app's lifespan; a notebook runs the same app on the controller's loop with
  `start_server(engine, ...)`, so webhooks and SSE see exactly the state the panel shows.
- The parts live in their own modules: access rules (`http_guard`), what a request may cost
  (`http_limits`: body size, header and body timeouts, cancelling work whose client left), the event
  stream (`sse`: a shared byte-bounded log, ids that are store revisions, Last-Event-ID replay) and the
  webhook receiver (`webhook_receiver`: streamed verification, exactly-once apply). This module holds
  the routes, the options and the assembly.
- Concurrent `?sync_active=true` readers share one refresh, and every discovery shares one sync whatever
  its `limit` (`jobwidget.engine.shared`): twenty readers cost what one does.
- Loopback by default. Another address needs an API token. Every error is JSON, never a traceback, and
  known secrets are masked in everything sent out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from jobwidget.core.errors import ConfigError, JobNotFound, ProviderError, RateLimited, StoreError
from jobwidget.core.models import JobStatus
from jobwidget.core.webhooks import DEFAULT_TOLERANCE
from jobwidget.engine.runtime import Engine
from jobwidget.engine.shared import Coalesced
from jobwidget.engine.sync import RefreshResult
from jobwidget.surfaces.asgi import dumps, error_body
from jobwidget.surfaces.http_guard import Guard, host_name
from jobwidget.surfaces.http_limits import (
    BodyLimit,
    CancelOnDisconnect,
    HeaderTimeoutStats,
    protocol_with_header_timeout,
)
from jobwidget.surfaces.sse import EventHub, EventStream, parse_event_id
from jobwidget.surfaces.webhook_receiver import WebhookReceiver

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
_BACKLOG = 2048
_MiB = 1024 * 1024
_MIN_SECRET_CHARS = 8  # shorter strings would mask ordinary words, and are no real secret anyway
_THREAD_ROWS = 200  # a list answer with more rows than this is built in a worker thread


@dataclass(frozen=True)
class ServerOptions:
    """Knobs of the HTTP surface. The defaults are the reference system's (5 streams per address) or
    conservative."""

    api_token: str | None = field(default=None, repr=False)
    max_body: int = 1 * _MiB  # every route but the webhook
    # A Replicate webhook carries the training's whole log, which reaches megabytes on long runs.
    webhook_max_body: int = 32 * _MiB
    # Body bytes of all webhook deliveries not verified yet, together: bounds memory under a flood.
    webhook_inflight: int = 64 * _MiB
    webhook_tolerance: float = DEFAULT_TOLERANCE
    secret_retry: float = 2.0  # first wait before fetching the webhook secret again after a failure
    sse_per_client: int = 5
    sse_max_clients: int = 100  # event streams in total
    sse_buffer: int = 8 * _MiB  # bytes of recent events kept for every stream to read and to resume from
    sse_stall: float = 5.0  # a stream whose socket took nothing this long when the log passes it is dropped
    heartbeat: float = 15.0  # seconds between SSE comment lines, so proxies keep idle streams open
    header_timeout: float = 10.0  # seconds to send a request's headers
    body_timeout: float = 60.0  # seconds to send a request's body
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted without a token, besides loopback's
    allowed_origins: tuple[str, ...] = ()  # origins (https://host:port) whose pages may POST without a token
    max_list: int = 5000  # largest `limit` of GET /api/cloud/jobs

    def __post_init__(self) -> None:
        if self.api_token is not None and (
            not self.api_token.strip() or len(self.api_token) < _MIN_SECRET_CHARS
        ):
            raise ConfigError(f"the API token must be at least {_MIN_SECRET_CHARS} characters")
        for name in (
            "max_body",
            "webhook_max_body",
            "webhook_inflight",
            "sse_per_client",
            "sse_max_clients",
            "sse_buffer",
            "max_list",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"server option {name} must be a positive integer, got {value!r}")
        for name in ("webhook_tolerance", "heartbeat", "header_timeout", "body_timeout", "secret_retry"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
                raise ConfigError(f"server option {name} must be a positive number of seconds, got {value!r}")
        if (
            isinstance(self.sse_stall, bool)
            or not isinstance(self.sse_stall, int | float)
            or self.sse_stall < 0
        ):
            raise ConfigError(f"server option sse_stall must be a number of seconds, got {self.sse_stall!r}")


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
                    "inputs": {"type": "object", "nullable": True},
                    "retry_of": {"type": "string", "nullable": True},
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
        # Every credential in play is masked wherever text could carry it.
        self.redact = _Redactor([options.api_token, os.environ.get("REPLICATE_API_TOKEN"), *engine.secrets()])
        self.hub = EventHub(
            engine,
            engine,
            per_client=options.sse_per_client,
            max_clients=options.sse_max_clients,
            buffer_bytes=options.sse_buffer,
            stall=options.sse_stall,
            redact=self.redact,
        )
        self.receiver = WebhookReceiver(
            engine,
            json=self.json,
            redact_add=self.redact.add,
            tolerance=options.webhook_tolerance,
            max_body=options.webhook_max_body,
            inflight_bytes=options.webhook_inflight,
            secret_retry=options.secret_retry,
            clock=clock,
        )
        # Concurrent `?sync_active=true` readers share one refresh; it stops when they have all left.
        self.refresh: Coalesced[None, RefreshResult] = Coalesced(
            lambda _: engine.refresh_active(), name="jobwidget-refresh"
        )
        self.header_timeouts = HeaderTimeoutStats()
        self.schema = SchemaGenerator(_OPENAPI_BASE)

    @property
    def webhooks(self) -> dict[str, int]:
        return self.receiver.counts

    async def start(self) -> None:
        self.hub.attach(await self.engine.revision())
        self.receiver.start()

    async def stop(self) -> None:
        self.hub.detach()
        self.hub.shutdown()
        await self.receiver.stop()

    # -- responses ---------------------------------------------------------------------------

    def json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        body = self.redact(dumps(data)).encode()
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    def error(
        self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> Response:
        return self.json(error_body(status, detail, **extra), status, headers)

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
        label = self.engine.provider_label
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
        """Jobs, newest first (the reference system's `GET /jobs`).
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
        if provider is not None and provider != self.engine.provider_name:
            raise _bad_request(
                f"unknown provider {provider!r}; this server knows {self.engine.provider_name!r} only"
            )
        extra: dict[str, Any] = {}
        if _bool_param(request, "sync_active"):
            try:
                refreshed = await self.refresh(None)
                extra["refreshed"] = {"checked": refreshed.checked, "updated": refreshed.updated}
            except ProviderError as exc:  # still answer from the store, and say why it may be stale
                extra["sync_error"] = f"{self.engine.provider_label}: {exc}"
        jobs = await self.engine.list_jobs(status=statuses, provider=provider, limit=limit)

        def build() -> bytes:
            # Row by row: each encoder call is short, so the thread hands the GIL back to the loop
            # between rows (one `dumps` of 5,000 rows would hold it for tens of milliseconds).
            rows = ",".join([self.redact(dumps(j.to_dict())) for j in jobs])
            rest = self.redact(dumps({"count": len(jobs), **extra}))
            return f'{{"jobs":[{rows}],{rest[1:]}'.encode()

        # Thousands of rows take tens of milliseconds to build: off the loop, which serves the panel,
        # the event streams and webhooks meanwhile. A short answer is built in place (a thread hop costs
        # more than it does).
        body = await asyncio.to_thread(build) if len(jobs) > _THREAD_ROWS else build()
        return Response(body, media_type="application/json")

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
        return self.json((await self.engine.get(job_id)).to_dict())

    async def sync(self, request: Request) -> Response:
        """Discover the provider's recent jobs (the reference system's `POST /jobs/sync`).
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
        result = await self.engine.sync(limit=limit, all=everything)
        return self.json(result.to_dict())

    async def inline_progress(self, request: Request) -> Response:
        """Compact progress of one job from its log tail (the reference system's inline-progress API).
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
        progress = await self.engine.inline_progress(request.path_params["job_id"])
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
        check = await self.engine.validate()
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
                "provider": self.engine.provider_label,
                "demo": self.engine.is_demo,
                "polling": self.engine.polling,
                "sse_clients": self.hub.clients,
                "webhooks": dict(self.webhooks),
                "webhook_secret": self.receiver.key_state,
            }
        )

    async def events(self, request: Request) -> Response:
        """Server-sent events: `data: {json}` lines, each with a `type` (job_status_changed, job_progress,
        jobs_discovered, sync_completed, poll_error), `id:` lines (store revisions) and `:` heartbeats.
        A client sending `Last-Event-ID` (browsers do on reconnect; or `?last_event_id=`) first gets
        what it missed.
        ---
        summary: Live events (text/event-stream)
        parameters:
          - {name: last_event_id, in: query, schema: {type: string, pattern: "^[0-9]+([.][0-9]+)?$"}}
        responses:
          "200":
            description: an endless event stream
            content: {text/event-stream: {schema: {type: string}}}
          "400": {$ref: "#/components/responses/BadRequest"}
          "429": {$ref: "#/components/responses/TooMany"}
          "503": {$ref: "#/components/responses/Unavailable"}
        """
        ip = request.client.host if request.client else "unknown"
        raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        last = parse_event_id(raw) if raw else None
        if raw and last is None:
            raise _bad_request(f"Last-Event-ID must be an event id this server sent, got {raw[:40]!r}")
        return EventStream(self.hub, ip, self.options.heartbeat, last, raw)

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI description of this server."""
        return self.json(self.schema.get_schema(routes=request.app.routes))

    # -- webhooks ----------------------------------------------------------------------------

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
        return await self.receiver.handle(request)

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
            await engine.start(poll=engine.poll_enabled if poll is None else poll)
        await api.start()
        try:
            yield
        finally:
            await api.stop()
            if start_engine:
                await engine.aclose()

    allowed = {*_LOOPBACK_NAMES, host_name(bind_host), *(h.lower() for h in options.allowed_hosts)}
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
            Middleware(
                Guard,
                token=options.api_token,
                allowed_hosts=frozenset(allowed),
                allowed_origins=frozenset(options.allowed_origins),
                exempt=frozenset({WEBHOOK_PATH}),
            ),
            Middleware(
                BodyLimit,
                default=options.max_body,
                per_path={WEBHOOK_PATH: options.webhook_max_body},
                timeout=options.body_timeout,
            ),
            Middleware(CancelOnDisconnect, prefix="/api/cloud/"),
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
        sock.listen(_BACKLOG)  # connections made as soon as the address is printed wait, not fail
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
    api = app.state.api
    config = uvicorn.Config(
        app,
        http=protocol_with_header_timeout(api.options.header_timeout, api.header_timeouts),
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=3,
        server_header=False,
        log_config=uvicorn.config.LOGGING_CONFIG if configure_logging else None,
    )
    return _Server(config, api.hub)


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
