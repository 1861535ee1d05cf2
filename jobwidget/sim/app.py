"""Replicate's trainings API as one Starlette app, over the simulated fleet, with fault knobs.

Every `/v1` request goes through the same gate, in this order: count it, add latency, check the token
(401), apply the rate limit (429 with `ratelimit-*` and `Retry-After`), maybe hang (timeouts), maybe
fail (500/502/503), answer, maybe corrupt a 200 body. The random faults draw from one seeded RNG, a fixed
number of draws per request, so a given request sequence meets the same faults every run. Network faults
(connection resets, slow bodies) draw two numbers per request from a second seeded RNG, so they leave the
first sequence as it was; they act on the wire (`_NetworkFaults`).

`/_sim/*` is the harness's control surface (config, stats, transient 404s, trainings started elsewhere):
no auth, no faults, not counted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import random
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobwidget.sim.config import SimConfig
from jobwidget.sim.fleet import ACCOUNT, Fleet

__all__ = ["SimStats", "SimulatedConnectionReset", "SimulatedReplicate"]

Handler = Callable[[Request], Awaitable[Response]]

HARDWARE = [
    {"sku": "cpu", "name": "CPU"},
    {"sku": "gpu-t4", "name": "Nvidia T4 GPU"},
    {"sku": "gpu-a40-small", "name": "Nvidia A40 GPU"},
    {"sku": "gpu-a40-large", "name": "Nvidia A40 (Large) GPU"},
    {"sku": "gpu-l40s", "name": "Nvidia L40S GPU"},
    {"sku": "gpu-2x-l40s", "name": "2x Nvidia L40S GPU"},
    {"sku": "gpu-a100-large", "name": "Nvidia A100 (80GB) GPU"},
    {"sku": "gpu-a100-large-2x", "name": "2x Nvidia A100 (80GB) GPU"},
    {"sku": "gpu-h100", "name": "Nvidia H100 GPU"},
]

_BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An `application/problem+json` error, Replicate's error shape."""
    body = json.dumps({"detail": detail, "status": status, "title": title}).encode()
    return Response(body, status_code=status, media_type="application/problem+json", headers=headers)


@dataclass
class SimStats:
    """What the simulator was asked: benchmarks read it to count provider calls."""

    total: int = 0
    by_route: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0  # 429s
    server_errors: int = 0  # 5xx
    timeouts: int = 0  # requests made to hang
    malformed: int = 0  # 200s with a broken body
    unauthorized: int = 0  # 401s
    resets: int = 0  # connections reset instead of answered
    slow_bodies: int = 0  # bodies trickled out over `slow_body_seconds`
    since: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_route": dict(self.by_route),
            "by_status": dict(self.by_status),
            "rate_limited": self.rate_limited,
            "server_errors": self.server_errors,
            "timeouts": self.timeouts,
            "malformed": self.malformed,
            "unauthorized": self.unauthorized,
            "resets": self.resets,
            "slow_bodies": self.slow_bodies,
            "since": self.since,
        }


class _Window:
    """Fixed one-minute rate-limit window on the simulator's clock."""

    def __init__(self) -> None:
        self.start = -math.inf
        self.count = 0

    def take(self, now: float, limit: int) -> tuple[bool, int, float]:
        """(allowed, remaining, seconds until reset) for one more request at `now`."""
        if now - self.start >= 60.0 or now < self.start:
            self.start, self.count = now, 0
        reset = max(0.0, self.start + 60.0 - now)
        if self.count >= limit:
            return False, 0, reset
        self.count += 1
        return True, limit - self.count, reset


def _encode_cursor(position: int, generation: int) -> str:
    raw = f"p{position}.g{generation}.jobwidget-sim".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, generation: int) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        pos, gen, tag = raw.split(".")
        if tag != "jobwidget-sim" or gen != f"g{generation}" or not pos.startswith("p"):
            return None
        value = int(pos[1:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return value if value >= 0 else None


class SimulatedReplicate:
    """The simulator: a seeded `Fleet` behind Replicate's HTTP API (`.app`, an ASGI app).

    Serve it in-process with `SimTransport(sim)` or on loopback with `serve(...)`/`start_in_thread(...)`.
    `clock` drives the fleet and the rate-limit window (tests pass a manual clock); latency and hangs
    are real sleeps.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        **overrides: Any,
    ) -> None:
        cfg = config or SimConfig()
        if overrides:
            cfg = cfg.replace(**overrides)
        self._lock = threading.Lock()
        self.clock = clock
        self.fleet = Fleet(cfg, clock)
        self.stats = SimStats(since=clock())
        self._faults = random.Random(f"jobwidget-sim:{cfg.seed}:faults")
        self._net = random.Random(f"jobwidget-sim:{cfg.seed}:network")
        self._misses = random.Random(f"jobwidget-sim:{cfg.seed}:not-found")
        self._window = _Window()
        self.app: ASGIApp = _NetworkFaults(self._build_app())

    @property
    def config(self) -> SimConfig:
        return self.fleet.config

    def configure(self, **changes: Any) -> SimConfig:
        """Change knobs at runtime; fleet-shaping ones (seed, fleet_size, ...) rebuild the fleet."""
        with self._lock:
            new = self.config.replace(**changes)
            rebuilt = self.fleet.reconfigure(new)
            if rebuilt or "seed" in changes:
                self._faults = random.Random(f"jobwidget-sim:{new.seed}:faults")
                self._net = random.Random(f"jobwidget-sim:{new.seed}:network")
                self._misses = random.Random(f"jobwidget-sim:{new.seed}:not-found")
            if "rate_limit" in changes:
                self._window = _Window()
            return new

    def add_training(
        self,
        model: str | None = None,
        *,
        steps: int | None = None,
        outcome: str | None = None,
        queue: float | None = None,
        fault: object = None,
    ) -> str:
        """Start a training "from elsewhere" (the web, another script) now; returns its id.

        It is `starting` at once and listed first; `outcome` (succeeded, failed, canceled, aborted; None:
        the configured mix) and `queue` (nominal seconds before it runs, or is aborted) pin its course;
        `fault` gives a run that succeeds a run-health fault ("nan_loss", "stall", "cold_boot",
        "diverging", or {"kind", "at_step", "seconds"}: sim/health_faults.py).
        """
        return self.fleet.add(model=model, steps=steps, outcome=outcome, queue=queue, fault=fault).id

    def vanish(self, training_id: str, times: int = 1) -> None:
        """Answer 404 to the next `times` GETs/cancels of `training_id`, and leave it out of the list
        meanwhile; then it is back, its timeline having run on. KeyError if there is no such training."""
        self.fleet.vanish(training_id, times)

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = SimStats(since=self.clock())

    def stats_snapshot(self) -> dict[str, Any]:
        """Request counters plus cheap fleet figures (what `GET /_sim/stats` returns)."""
        with self._lock:
            data = self.stats.to_dict()
        data["fleet"] = self.fleet.counts()
        return data

    # ------------------------------------------------------------------------------- the gate

    def _count(self, route: str) -> tuple[float, float, float, float, float]:
        with self._lock:
            self.stats.total += 1
            self.stats.by_route[route] = self.stats.by_route.get(route, 0) + 1
            r = self._faults.random
            return r(), r(), r(), r(), r()

    def _network_fault(self, scope: Scope) -> None:
        """Maybe mark this request's answer for a reset or a slow body (`_NetworkFaults` acts on it)."""
        cfg = self.config
        with self._lock:
            d_reset, d_slow = self._net.random(), self._net.random()
            if d_reset < cfg.reset_rate:
                self.stats.resets += 1
                # half before any byte of the answer, half after the headers and part of the body
                where = "start" if d_reset < cfg.reset_rate / 2 else "body"
                scope[_FAULT_KEY] = ("reset", where)
            elif d_slow < cfg.slow_body_rate:
                self.stats.slow_bodies += 1
                scope[_FAULT_KEY] = ("slow", cfg.slow_body_seconds)

    def _finish(self, response: Response) -> Response:
        key = str(response.status_code)
        with self._lock:
            self.stats.by_status[key] = self.stats.by_status.get(key, 0) + 1
            if response.status_code == 429:
                self.stats.rate_limited += 1
            elif response.status_code >= 500:
                self.stats.server_errors += 1
            elif response.status_code == 401:
                self.stats.unauthorized += 1
        return response

    def _auth_error(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "token") or not token:
            return problem(401, "Unauthenticated", "You did not pass an authentication token")
        expected = self.config.token
        if expected is not None and token != expected:
            return problem(401, "Unauthenticated", "Invalid token.")
        return None

    def _malformed(self, response: Response, draw: float) -> Response:
        body = bytes(response.body)
        if draw < 0.6:
            bad = body[: max(1, len(body) * 3 // 5)]
        elif draw < 0.8:
            bad = b""
        else:
            bad = body + b"\n<!-- upstream connect error or disconnect/reset before headers -->"
        with self._lock:
            self.stats.malformed += 1
        return Response(bad, status_code=200, media_type="application/json", headers=_extra_headers(response))

    def _gated(self, route: str, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            d_latency, d_hang, d_error, d_kind, d_body = self._count(route)
            cfg = self.config
            delay = cfg.latency + cfg.latency_jitter * (2 * d_latency - 1)
            if delay > 0:
                await anyio.sleep(delay)
            limit_headers: dict[str, str] = {}
            response = self._auth_error(request)
            if response is None and cfg.rate_limit:
                with self._lock:
                    allowed, remaining, reset = self._window.take(self.clock(), cfg.rate_limit)
                reset_s = max(1, math.ceil(reset))
                limit_headers = {"ratelimit-remaining": str(remaining), "ratelimit-reset": str(reset_s)}
                if not allowed:
                    response = problem(
                        429,
                        "Too Many Requests",
                        f"Request was throttled. Your rate limit resets in ~{reset_s}s.",
                        headers={**limit_headers, "Retry-After": str(reset_s)},
                    )
            if response is None:
                if d_hang < cfg.timeout_rate:
                    with self._lock:
                        self.stats.timeouts += 1
                    await anyio.sleep(cfg.hang_seconds)
                if d_error < cfg.error_rate:
                    response = _server_error(d_kind)
                else:
                    response = await handler(request)
                    if response.status_code == 200 and d_body < cfg.malformed_rate:
                        response = self._malformed(response, d_body / max(cfg.malformed_rate, 1e-12))
            for key, value in limit_headers.items():
                response.headers.setdefault(key, value)
            self._network_fault(request.scope)
            return self._finish(response)

        return endpoint

    # ------------------------------------------------------------------------------ handlers

    def _base(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def _list(self, request: Request) -> Response:
        cursor = request.query_params.get("cursor")
        position: int | None = None
        if cursor:
            position = _decode_cursor(cursor, self.fleet.generation)
            if position is None:
                return problem(400, "Invalid cursor", "The cursor is invalid or has expired.")
        base = self._base(request)
        page = self.fleet.list_page(position, base)
        generation = self.fleet.generation

        def link(pos: int | None) -> str | None:
            return None if pos is None else f"{base}/v1/trainings?cursor={_encode_cursor(pos, generation)}"

        return _json(
            {
                "next": link(page.next_position),
                "previous": link(page.previous_position),
                "results": page.results,
            }
        )

    def _missed(self) -> bool:
        """A random transient 404 (`not_found_rate`), drawn from its own RNG only when the knob is on."""
        rate = self.config.not_found_rate
        if not rate:
            return False
        with self._lock:
            return self._misses.random() < rate

    async def _get(self, request: Request) -> Response:
        if self._missed():
            return _not_found()
        data = self.fleet.get(request.path_params["training_id"], self._base(request))
        return _not_found() if data is None else _json(data)

    async def _cancel(self, request: Request) -> Response:
        if self._missed():
            return _not_found()
        data = self.fleet.cancel(request.path_params["training_id"], self._base(request))
        return _not_found() if data is None else _json(data)

    async def _create(self, request: Request) -> Response:
        params = request.path_params
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return problem(400, "Invalid request body", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return problem(422, "Invalid input", "The request body must be a JSON object.")
        destination = body.get("destination")
        if not isinstance(destination, str) or destination.count("/") != 1 or "" in destination.split("/"):
            return problem(404, "Not found", "The specified training destination does not exist")
        inputs = body.get("input", {})
        if not isinstance(inputs, dict):
            return problem(422, "Invalid input", "input: must be an object")
        webhook = body.get("webhook")
        events = body.get("webhook_events_filter")
        if webhook is not None and (
            not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
        ):
            return problem(422, "Invalid input", "webhook: must be an HTTP(S) URL")
        allowed = {"start", "output", "logs", "completed"}
        if events is not None and (not isinstance(events, list) or not set(events) <= allowed):
            return problem(
                422,
                "Invalid input",
                "webhook_events_filter: must be a subset of start, output, logs, completed",
            )
        data = self.fleet.create(
            model=f"{params['owner']}/{params['name']}",
            version=params["version"],
            input=inputs,
            destination=destination,
            webhook=webhook,
            webhook_events_filter=events,
            base_url=self._base(request),
        )
        return _json(data, status=201)

    async def _account(self, request: Request) -> Response:
        return _json(
            {"type": "user", "username": ACCOUNT, "name": "jobwidget demo (simulated)", "github_url": None}
        )

    async def _hardware(self, request: Request) -> Response:
        return _json(HARDWARE)

    async def _secret(self, request: Request) -> Response:
        return _json({"key": self.fleet.webhook_secret})

    async def _unknown(self, request: Request) -> Response:
        return _not_found()

    # ------------------------------------------------------------------------------- control

    async def _get_config(self, request: Request) -> Response:
        return _json(self.config.to_dict())

    async def _post_config(self, request: Request) -> Response:
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of settings")
            generation = self.fleet.generation
            config = self.configure(**changes)
        except ValueError as exc:
            return problem(400, "Invalid simulator config", str(exc))
        return _json({"config": config.to_dict(), "rebuilt": self.fleet.generation != generation})

    async def _post_vanish(self, request: Request) -> Response:
        """`{"id": ..., "times": 2}`: that training answers 404 twice (and is off the list meanwhile)."""
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict) or not isinstance(body.get("id"), str):
                raise ValueError('the body must be a JSON object with "id" (and optional "times")')
            times = body.get("times", 1)
            self.vanish(body["id"], times)
        except KeyError:
            return problem(404, "Not found", f"No training {body['id']!r} in the simulated fleet.")
        except ValueError as exc:
            return problem(400, "Invalid request", str(exc))
        return _json({"id": body["id"], "times": times})

    async def _post_training(self, request: Request) -> Response:
        """`{"model"?, "steps"?, "outcome"?, "queue"?, "fault"?}`: a training started elsewhere, now (201)."""
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            unknown = set(body) - {"model", "steps", "outcome", "queue", "fault"}
            if unknown:
                raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
            tid = self.add_training(**body)
        except ValueError as exc:
            return problem(400, "Invalid request", str(exc))
        return _json(self.fleet.get(tid, self._base(request)) or {"id": tid}, status=201)

    async def _get_stats(self, request: Request) -> Response:
        return _json(self.stats_snapshot())

    async def _reset_stats(self, request: Request) -> Response:
        self.reset_stats()
        return _json(self.stats_snapshot())

    def _build_app(self) -> Starlette:
        g = self._gated
        tid = "/v1/trainings/{training_id}"
        pid = "/v1/predictions/{training_id}"
        create = "/v1/models/{owner}/{name}/versions/{version}/trainings"
        routes = [
            Route("/v1/trainings", g("GET /v1/trainings", self._list), methods=["GET"]),
            Route(tid, g("GET /v1/trainings/{id}", self._get), methods=["GET"]),
            Route(tid + "/cancel", g("POST /v1/trainings/{id}/cancel", self._cancel), methods=["POST"]),
            # Create and cancel answers link to /v1/predictions/{id}: trainings are predictions there too.
            Route(pid, g("GET /v1/predictions/{id}", self._get), methods=["GET"]),
            Route(pid + "/cancel", g("POST /v1/predictions/{id}/cancel", self._cancel), methods=["POST"]),
            Route(
                create,
                g("POST /v1/models/{owner}/{name}/versions/{version}/trainings", self._create),
                methods=["POST"],
            ),
            Route("/v1/account", g("GET /v1/account", self._account), methods=["GET"]),
            Route("/v1/hardware", g("GET /v1/hardware", self._hardware), methods=["GET"]),
            Route(
                "/v1/webhooks/default/secret",
                g("GET /v1/webhooks/default/secret", self._secret),
                methods=["GET"],
            ),
            Route(
                "/v1/{path:path}",
                g("other", self._unknown),
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            ),
            Route("/_sim/config", self._get_config, methods=["GET"]),
            Route("/_sim/config", self._post_config, methods=["POST"]),
            Route("/_sim/vanish", self._post_vanish, methods=["POST"]),
            Route("/_sim/trainings", self._post_training, methods=["POST"]),
            Route("/_sim/stats", self._get_stats, methods=["GET"]),
            Route("/_sim/stats/reset", self._reset_stats, methods=["POST"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


_FAULT_KEY = "jobwidget.sim.network_fault"
_SLOW_CHUNKS = 5


class SimulatedConnectionReset(ConnectionResetError):
    """Raised into an in-process client (no socket to reset): `SimTransport` turns it into httpx's error."""


def _abort_connection(send: Send) -> bool:
    """Reset the TCP connection under uvicorn's `send` (RST, not FIN); False when there is no socket.

    Uvicorn's `send` is a bound method of its request cycle, which holds the asyncio transport; with
    SO_LINGER at 0, closing sends an RST, which the client reads as "connection reset by peer".
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


class _NetworkFaults:
    """Outermost ASGI layer: applies the wire-level fault the gate chose for a request (see `_gated`).

    It sits outside Starlette so it holds the server's own `send`: a reset must kill the socket, and a
    slow body must reach the client chunk by chunk (each chunk within the client's read timeout, the
    whole body well beyond it), which no response object can do from inside the app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dropped = False

        async def faulty_send(message: Message) -> None:
            nonlocal dropped
            fault = scope.get(_FAULT_KEY)
            if dropped:
                return
            if fault is None:
                await send(message)
                return
            kind, arg = fault
            if kind == "reset":
                if message["type"] == "http.response.body" and arg == "body":
                    body = message.get("body", b"")
                    await send(
                        {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
                    )
                elif message["type"] == "http.response.start" and arg == "body":
                    await send(message)
                    return
                dropped = True
                if not _abort_connection(send):
                    raise SimulatedConnectionReset("the simulated Replicate reset the connection")
                return
            if kind == "slow" and message["type"] == "http.response.body" and message.get("body"):
                body = message["body"]
                step = max(1, -(-len(body) // _SLOW_CHUNKS))
                pieces = [body[i : i + step] for i in range(0, len(body), step)]
                for i, piece in enumerate(pieces):
                    last = i == len(pieces) - 1
                    await send(
                        {
                            "type": "http.response.body",
                            "body": piece,
                            "more_body": message.get("more_body", False) or not last,
                        }
                    )
                    if not last:
                        await anyio.sleep(float(arg) / max(1, len(pieces) - 1))
                return
            await send(message)

        await self.app(scope, receive, faulty_send)
        if dropped:
            await anyio.sleep(0)  # let the server see the connection gone before the app returns


def _not_found() -> Response:
    return problem(404, "Not found", "Not found.")


def _server_error(draw: float) -> Response:
    if draw < 0.4:
        return problem(500, "Internal Server Error", "An unexpected error occurred.")
    if draw < 0.7:
        return Response(_BAD_GATEWAY_HTML, status_code=502, media_type="text/html")
    return problem(503, "Service Unavailable", "The service is temporarily unavailable. Please try again.")


def _extra_headers(response: Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    titles = {404: "Not found", 405: "Method not allowed"}
    detail = exc.detail if isinstance(exc, HTTPException) else "An unexpected error occurred."
    return problem(status, titles.get(status, "Error"), str(detail))
