"""Running the HTTP surface: where it may bind, its socket, the uvicorn server, and the handle that
stops it (in the notebook's engine loop or as `jobwidget serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette

from jobwidget.core.errors import ConfigError
from jobwidget.engine.runtime import Engine
from jobwidget.surfaces.http_app import create_app
from jobwidget.surfaces.http_limits import protocol_with_header_timeout
from jobwidget.surfaces.http_options import DEFAULT_HOST, DEFAULT_PORT, ServerOptions
from jobwidget.surfaces.sse import EventHub

__all__ = ["ServerHandle", "bind_socket", "check_bind", "is_loopback", "make_server", "start_server"]

log = logging.getLogger("jobwidget.server")

_BACKLOG = 2048


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
