"""The gate every `/v1` request passes: counting, latency, auth, rate limit and the seeded faults.

In this order: count it, add latency, check the token (401), apply the rate limit (429 with
`ratelimit-*` and `Retry-After`), maybe hang (timeouts), maybe fail (500/502/503), answer, maybe corrupt a
200 body. The random faults draw from one seeded RNG, a fixed number of draws per request, so a given
request sequence meets the same faults every run. Network faults (connection resets, slow bodies) draw
two numbers per request from a second seeded RNG, so they leave the first sequence as it was; they act on
the wire (`netfaults.NetworkFaults`). Transient 404s (`not_found_rate`) draw from a third, only when on.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from jobwidget.sim.config import SimConfig
from jobwidget.sim.netfaults import FAULT_KEY
from jobwidget.sim.responses import extra_headers, problem, server_error

__all__ = ["Gate", "Handler", "SimStats"]

Handler = Callable[[Request], Awaitable[Response]]


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


class Gate:
    """Counts and faults for the `/v1` routes (`wrap` each handler); reads the knobs from `config()`."""

    def __init__(self, config: Callable[[], SimConfig], clock: Callable[[], float]) -> None:
        self._config = config
        self.clock = clock
        self._lock = threading.Lock()
        self.stats = SimStats(since=clock())
        self._window = _Window()
        self.reseed(config().seed)

    def reseed(self, seed: int) -> None:
        """Start the fault sequences over for `seed` (a rebuilt fleet meets the same faults again)."""
        with self._lock:
            self._faults = random.Random(f"jobwidget-sim:{seed}:faults")
            self._net = random.Random(f"jobwidget-sim:{seed}:network")
            self._misses = random.Random(f"jobwidget-sim:{seed}:not-found")

    def reset_window(self) -> None:
        with self._lock:
            self._window = _Window()

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = SimStats(since=self.clock())

    def stats_dict(self) -> dict[str, Any]:
        with self._lock:
            return self.stats.to_dict()

    def missed(self) -> bool:
        """A random transient 404 (`not_found_rate`), drawn from its own RNG only when the knob is on."""
        rate = self._config().not_found_rate
        if not rate:
            return False
        with self._lock:
            return self._misses.random() < rate

    def _count(self, route: str) -> tuple[float, float, float, float, float]:
        with self._lock:
            self.stats.total += 1
            self.stats.by_route[route] = self.stats.by_route.get(route, 0) + 1
            r = self._faults.random
            return r(), r(), r(), r(), r()

    def _network_fault(self, scope: Scope) -> None:
        """Maybe mark this request's answer for a reset or a slow body (`NetworkFaults` acts on it)."""
        cfg = self._config()
        with self._lock:
            d_reset, d_slow = self._net.random(), self._net.random()
            if d_reset < cfg.reset_rate:
                self.stats.resets += 1
                # half before any byte of the answer, half after the headers and part of the body
                where = "start" if d_reset < cfg.reset_rate / 2 else "body"
                scope[FAULT_KEY] = ("reset", where)
            elif d_slow < cfg.slow_body_rate:
                self.stats.slow_bodies += 1
                scope[FAULT_KEY] = ("slow", cfg.slow_body_seconds)

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
        expected = self._config().token
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
        return Response(bad, status_code=200, media_type="application/json", headers=extra_headers(response))

    def wrap(self, route: str, handler: Handler) -> Handler:
        """`handler` behind the gate, counted under `route`."""

        async def endpoint(request: Request) -> Response:
            d_latency, d_hang, d_error, d_kind, d_body = self._count(route)
            cfg = self._config()
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
                    response = server_error(d_kind)
                else:
                    response = await handler(request)
                    if response.status_code == 200 and d_body < cfg.malformed_rate:
                        response = self._malformed(response, d_body / max(cfg.malformed_rate, 1e-12))
            for key, value in limit_headers.items():
                response.headers.setdefault(key, value)
            self._network_fault(request.scope)
            return self._finish(response)

        return endpoint
