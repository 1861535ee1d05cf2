"""Wire-level faults: a connection reset (a real TCP RST on loopback) or a body that trickles out.

The gate (`gate.py`) decides per request and marks the ASGI scope; `NetworkFaults`, the outermost ASGI
layer, acts on the mark with the server's own `send`.
"""

from __future__ import annotations

import contextlib
import socket
import struct

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["FAULT_KEY", "NetworkFaults", "SimulatedConnectionReset"]

FAULT_KEY = "jobwidget.sim.network_fault"
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


class NetworkFaults:
    """Outermost ASGI layer: applies the wire-level fault the gate chose for a request.

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
            fault = scope.get(FAULT_KEY)
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
