"""The HTTP API as one Starlette app over an `Engine`: the routes (their docstrings are the OpenAPI
operations) and the assembly with the guard, the limits, the event stream and the webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from jobwidget.core.errors import JobNotFound, ProviderError, RateLimited, StoreError
from jobwidget.core.models import Job
from jobwidget.core.results import RefreshResult
from jobwidget.engine.runtime import Engine
from jobwidget.engine.shared import Coalesced
from jobwidget.engine.stores.query import Cursor
from jobwidget.surfaces.asgi import dumps, error_body
from jobwidget.surfaces.http_guard import Guard, host_name
from jobwidget.surfaces.http_limits import (
    BodyLimit,
    CancelOnDisconnect,
    HeaderTimeoutStats,
)
from jobwidget.surfaces.http_options import (
    DEFAULT_HOST,
    LOOPBACK_NAMES,
    WEBHOOK_PATH,
    Redactor,
    ServerOptions,
)
from jobwidget.surfaces.http_params import bad_request, bool_param, int_param, status_param
from jobwidget.surfaces.http_pieces import PiecesResponse, json_list_pieces
from jobwidget.surfaces.openapi import OPENAPI_BASE
from jobwidget.surfaces.sse import EventHub, EventStream, parse_event_id
from jobwidget.surfaces.webhook_receiver import WebhookReceiver

__all__ = ["create_app"]

log = logging.getLogger("jobwidget.server")

_THREAD_ROWS = 200  # a list answer with more rows than this is built in a worker thread
_CHUNK_ROWS = 500  # ... from store reads of this many rows at a time (`_Api._long_list`)


class _Api:
    """The route handlers and the state they share (engine, SSE hub, webhook secret, redaction)."""

    def __init__(self, engine: Engine, options: ServerOptions, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.options = options
        self.clock = clock
        # Every credential in play is masked wherever text could carry it.
        self.redact = Redactor([options.api_token, os.environ.get("REPLICATE_API_TOKEN"), *engine.secrets()])
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
        self.schema = SchemaGenerator(OPENAPI_BASE)

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
        limit = int_param(request, "limit", 50, 1, self.options.max_list)
        statuses = status_param(request)
        provider = request.query_params.get("provider") or None
        if provider is not None and provider != self.engine.provider_name:
            raise bad_request(
                f"unknown provider {provider!r}; this server knows {self.engine.provider_name!r} only"
            )
        extra: dict[str, Any] = {}
        if bool_param(request, "sync_active"):
            try:
                refreshed = await self.refresh(None)
                extra["refreshed"] = {"checked": refreshed.checked, "updated": refreshed.updated}
            except ProviderError as exc:  # still answer from the store, and say why it may be stale
                extra["sync_error"] = f"{self.engine.provider_label}: {exc}"
        if limit > _THREAD_ROWS:
            texts = await self._long_list(limit, status=statuses, provider=provider)
            rest = self.redact(dumps({"count": len(texts), **extra}))[1:]
            # Joined and encoded in pieces, off the loop, and sent in pieces (`http_pieces`): one join of
            # 5,000 rows would hold the GIL for tens of milliseconds, even from a worker thread.
            return PiecesResponse(await asyncio.to_thread(json_list_pieces, "jobs", texts, rest))
        jobs = await self.engine.list_jobs(status=statuses, provider=provider, limit=limit)
        rest = self.redact(dumps({"count": len(jobs), **extra}))[1:]
        rows = ",".join([self.redact(dumps(j.to_dict())) for j in jobs])
        return Response(f'{{"jobs":[{rows}],{rest}'.encode(), media_type="application/json")

    async def _long_list(self, limit: int, **query: Any) -> list[str]:
        """Up to `limit` jobs' JSON texts, newest first, read and rendered `_CHUNK_ROWS` at a time (the
        store's keyset cursor: no job skipped or repeated), each chunk rendered in a worker thread.

        Holding all 5,000 jobs while the answer was built kept them alive across young garbage
        collections, which promoted them to the oldest generation and brought on a full collection (every
        thread stopped for 60-90 ms) about every other such answer; rendered text is not tracked."""
        texts: list[str] = []
        before: Cursor | None = None
        while len(texts) < limit:
            want = min(_CHUNK_ROWS, limit - len(texts))
            chunk = await self.engine.list_jobs(limit=want, before=before, **query)
            texts += await asyncio.to_thread(self._render, chunk)
            if len(chunk) < want:
                break
            before = (chunk[-1].created_at, chunk[-1].job_id)
        return texts

    def _render(self, jobs: list[Job]) -> list[str]:
        return [self.redact(dumps(j.to_dict())) for j in jobs]

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
        limit = int_param(request, "limit", 100, 1, 100_000)
        everything = bool_param(request, "all")
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
            raise bad_request(f"Last-Event-ID must be an event id this server sent, got {raw[:40]!r}")
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

    allowed = {*LOOPBACK_NAMES, host_name(bind_host), *(h.lower() for h in options.allowed_hosts)}
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
