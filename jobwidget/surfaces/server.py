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

from jobwidget.surfaces.http_app import create_app
from jobwidget.surfaces.http_options import DEFAULT_HOST, DEFAULT_PORT, WEBHOOK_PATH, ServerOptions
from jobwidget.surfaces.http_run import (
    ServerHandle,
    bind_socket,
    check_bind,
    is_loopback,
    make_server,
    start_server,
)
from jobwidget.surfaces.sse import EventHub

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "WEBHOOK_PATH",
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
