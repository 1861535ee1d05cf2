"""What one request may cost the server: body size, time to send headers and body, and work after the
client has gone.

Once `jobwidget serve` binds beyond loopback, anyone can open connections. Without these bounds 1,500
half-sent requests stayed open for good, and a sync asked for by a client that then left ran on.
- Headers: a connection that has not completed a request's headers `header_timeout` seconds after it
  opened (or after its previous answer) is closed. uvicorn has no such timeout; its protocol class is
  extended here (`protocol_with_header_timeout`), whichever implementation it picked.
- Bodies: refused at once from Content-Length when over the limit, or as soon as a streamed body passes
  it; the whole body must arrive within `body_timeout` seconds (408 otherwise). Both answers close the
  connection, so the unread rest of the body is not read into memory.
- Provider work: an API request whose client disconnects is cancelled (`CancelOnDisconnect`), and with
  it any shared provider call nobody else waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobwidget.surfaces.asgi import error_body, header, send_json

__all__ = ["BodyLimit", "CancelOnDisconnect", "HeaderTimeoutStats", "protocol_with_header_timeout"]

CLOSE = {"Connection": "close"}  # the unread rest of the request must not be read into memory


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes", headers=CLOSE)


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s", headers=CLOSE)


class BodyLimit:
    """Body size (per path) and the time allowed to send the body, enforced while it streams in."""

    def __init__(self, app: ASGIApp, *, default: int, per_path: dict[str, int], timeout: float) -> None:
        self.app = app
        self.default = default
        self.per_path = per_path
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.default)
        length = header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            await send_json(send, 413, error_body(413, f"request body larger than {limit} bytes"), CLOSE)
            return
        received = 0
        done = False
        deadline = time.monotonic() + self.timeout

        async def limited() -> Message:
            nonlocal received, done
            if done:  # after the body: waiting for a disconnect is not bounded here
                return await receive()
            remaining = deadline - time.monotonic()
            message: Message | None = None
            if remaining > 0:
                with anyio.move_on_after(remaining):
                    message = await receive()
            if message is None:
                raise BodyTimeout(self.timeout)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        await self.app(scope, limited, send)


class CancelOnDisconnect:
    """Cancel the request's handler when its client disconnects (paths starting with `prefix`).

    The body is read first (bounded by `BodyLimit`), then handed to the app, while a watcher waits for
    the disconnect the server reports. Work the handler shares with other callers stops only when the
    last of them is gone (`jobwidget.engine.shared`).
    """

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix
        self.cancelled = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        more = True
        while more:  # bounded: BodyLimit caps the body's bytes and the time it may take
            try:
                message = await receive()
            except HTTPException as exc:  # too large or too slow: answered here, outside the routes
                detail = exc.detail if isinstance(exc.detail, str) else "request refused"
                await send_json(send, exc.status_code, error_body(exc.status_code, detail), exc.headers)
                return
            if message["type"] == "http.disconnect":
                return  # gone before the handler started
            messages.append(message)
            more = bool(message.get("more_body", False))
        responded = False
        gone = asyncio.Event()

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        task = asyncio.current_task()
        assert task is not None

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not responded:
                gone.set()
                task.cancel()

        async def tracked(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                responded = True
            await send(message)

        watcher = asyncio.get_running_loop().create_task(watch(), name="jobwidget-disconnect-watch")
        try:
            await self.app(scope, replay, tracked)
        except asyncio.CancelledError:
            if not gone.is_set():
                raise
            task.uncancel()  # ours: the client left, there is nobody to answer
            self.cancelled += 1
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


class HeaderTimeoutStats:
    """Connections closed for not completing a request's headers in time (for tests and /api/health)."""

    def __init__(self) -> None:
        self.closed = 0


def protocol_with_header_timeout(header_timeout: float, stats: HeaderTimeoutStats) -> type[Any]:
    """uvicorn's HTTP protocol class (the one `http="auto"` picks) closing connections whose request
    headers are not complete `header_timeout` seconds after the connection opened or last answered."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    if not math.isfinite(header_timeout) or header_timeout <= 0:
        raise ValueError(f"header_timeout must be a positive number of seconds, got {header_timeout!r}")

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout, self._header_timed_out)

        def _header_timed_out(self) -> None:
            self._header_timer = None
            cycle = self.cycle
            if self.transport.is_closing() or (cycle is not None and not cycle.response_complete):
                return  # a request is being answered: its body has its own deadline
            stats.closed += 1
            self.transport.close()

    return HeaderTimeoutProtocol
