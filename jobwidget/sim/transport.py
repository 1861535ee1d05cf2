"""Serve the simulator in-process: an httpx transport over the ASGI app, with real timeouts."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import anyio
import httpx

from jobwidget.sim.netfaults import SimulatedConnectionReset

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from jobwidget.sim.app import SimulatedReplicate

__all__ = ["SIM_BASE_URL", "SimTransport"]

# A base URL for in-process clients: the `.invalid` TLD never resolves, so a client mistakenly built
# with a network transport fails fast instead of reaching anything.
SIM_BASE_URL = "http://replicate-sim.invalid"


class SimTransport(httpx.AsyncBaseTransport):
    """`httpx.ASGITransport` over the simulator that also enforces the request's read timeout.

    ASGITransport awaits the app to completion whatever the client's timeout, so a simulated hang would
    block the client forever; here the app call is cancelled after `timeout["read"]` seconds and
    `httpx.ReadTimeout` raised, as a network transport would.
    """

    def __init__(
        self, sim: SimulatedReplicate | ASGIApp, *, client: tuple[str, int] = ("127.0.0.1", 50000)
    ) -> None:
        app = cast("ASGIApp", getattr(sim, "app", sim))
        self._inner = httpx.ASGITransport(app=app, client=client)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = (request.extensions.get("timeout") or {}).get("read")
        response: httpx.Response | None = None
        try:
            if timeout is None:
                return await self._inner.handle_async_request(request)
            with anyio.move_on_after(timeout):
                response = await self._inner.handle_async_request(request)
        except SimulatedConnectionReset:
            reset = True
        else:
            reset = False
        if reset:  # raised outside the except block, as a network transport's error would be
            raise httpx.ReadError("[Errno 104] Connection reset by peer (simulated)", request=request)
        if response is None:
            raise httpx.ReadTimeout(
                f"the simulated Replicate did not answer within {timeout:g}s", request=request
            )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
