"""Replicate's trainings API as one Starlette app, over the simulated fleet, with fault knobs.

Every `/v1` request goes through the gate (`gate.py`: counting, latency, auth, rate limit and seeded
faults); wire-level faults act outside Starlette (`netfaults.py`). `/_sim/*` is the harness's control
surface (config, stats, transient 404s, trainings started elsewhere): no auth, no faults, not counted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from jobwidget.sim.catalog import ACCOUNT
from jobwidget.sim.config import SimConfig
from jobwidget.sim.create_checks import check_create
from jobwidget.sim.fleet import Fleet
from jobwidget.sim.gate import Gate, SimStats
from jobwidget.sim.hardware import HARDWARE
from jobwidget.sim.netfaults import NetworkFaults, SimulatedConnectionReset
from jobwidget.sim.responses import (
    decode_cursor,
    encode_cursor,
    http_error,
    json_response,
    not_found,
    problem,
)

__all__ = ["SimStats", "SimulatedConnectionReset", "SimulatedReplicate"]


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
        self.gate = Gate(lambda: self.fleet.config, clock)
        self.app: ASGIApp = NetworkFaults(self._build_app())

    @property
    def config(self) -> SimConfig:
        return self.fleet.config

    @property
    def stats(self) -> SimStats:
        """The request counters since the last reset."""
        return self.gate.stats

    def configure(self, **changes: Any) -> SimConfig:
        """Change knobs at runtime; fleet-shaping ones (seed, fleet_size, ...) rebuild the fleet."""
        with self._lock:
            new = self.config.replace(**changes)
            rebuilt = self.fleet.reconfigure(new)
            if rebuilt or "seed" in changes:
                self.gate.reseed(new.seed)
            if "rate_limit" in changes:
                self.gate.reset_window()
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
        self.gate.reset_stats()

    def stats_snapshot(self) -> dict[str, Any]:
        """Request counters plus cheap fleet figures (what `GET /_sim/stats` returns)."""
        data = self.gate.stats_dict()
        data["fleet"] = self.fleet.counts()
        return data

    # ------------------------------------------------------------------------------ handlers

    def _base(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def _list(self, request: Request) -> Response:
        cursor = request.query_params.get("cursor")
        position: int | None = None
        if cursor:
            position = decode_cursor(cursor, self.fleet.generation)
            if position is None:
                return problem(400, "Invalid cursor", "The cursor is invalid or has expired.")
        base = self._base(request)
        page = self.fleet.list_page(position, base)
        generation = self.fleet.generation

        def link(pos: int | None) -> str | None:
            return None if pos is None else f"{base}/v1/trainings?cursor={encode_cursor(pos, generation)}"

        return json_response(
            {
                "next": link(page.next_position),
                "previous": link(page.previous_position),
                "results": page.results,
            }
        )

    async def _get(self, request: Request) -> Response:
        if self.gate.missed():
            return not_found()
        data = self.fleet.get(request.path_params["training_id"], self._base(request))
        return not_found() if data is None else json_response(data)

    async def _cancel(self, request: Request) -> Response:
        if self.gate.missed():
            return not_found()
        data = self.fleet.cancel(request.path_params["training_id"], self._base(request))
        return not_found() if data is None else json_response(data)

    async def _create(self, request: Request) -> Response:
        params = request.path_params
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return problem(400, "Invalid request body", "The request body is not valid JSON.")
        refused = check_create(f"{params['owner']}/{params['name']}", params["version"], body)
        if refused is not None:
            status, payload = refused
            return Response(
                json.dumps(payload).encode(), status_code=status, media_type="application/problem+json"
            )
        destination, inputs = body["destination"], body.get("input", {})
        webhook, events = body.get("webhook"), body.get("webhook_events_filter")
        data = self.fleet.create(
            model=f"{params['owner']}/{params['name']}",
            version=params["version"],
            input=inputs,
            destination=destination,
            webhook=webhook,
            webhook_events_filter=events,
            base_url=self._base(request),
        )
        return json_response(data, status=201)

    async def _account(self, request: Request) -> Response:
        return json_response(
            {"type": "user", "username": ACCOUNT, "name": "jobwidget demo (simulated)", "github_url": None}
        )

    async def _hardware(self, request: Request) -> Response:
        return json_response(HARDWARE)

    async def _secret(self, request: Request) -> Response:
        return json_response({"key": self.fleet.webhook_secret})

    async def _unknown(self, request: Request) -> Response:
        return not_found()

    # ------------------------------------------------------------------------------- control

    async def _get_config(self, request: Request) -> Response:
        return json_response(self.config.to_dict())

    async def _post_config(self, request: Request) -> Response:
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of settings")
            generation = self.fleet.generation
            config = self.configure(**changes)
        except ValueError as exc:
            return problem(400, "Invalid simulator config", str(exc))
        return json_response({"config": config.to_dict(), "rebuilt": self.fleet.generation != generation})

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
        return json_response({"id": body["id"], "times": times})

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
        return json_response(self.fleet.get(tid, self._base(request)) or {"id": tid}, status=201)

    async def _get_stats(self, request: Request) -> Response:
        return json_response(self.stats_snapshot())

    async def _reset_stats(self, request: Request) -> Response:
        self.reset_stats()
        return json_response(self.stats_snapshot())

    def _build_app(self) -> Starlette:
        g = self.gate.wrap
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
        return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
