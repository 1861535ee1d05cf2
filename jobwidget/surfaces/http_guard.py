"""Who may use the HTTP API: the API token, or (without one) the Host check and a same-origin check.

- With an API token every route but the (signed) webhook wants `Authorization: Bearer <token>`. A browser
  never adds that header to a cross-site request, so a token also rules out cross-site forgery.
- Without a token the server answers only requests addressed to this machine (`Host`: DNS-rebinding
  protection), and a request that changes something (any method but GET/HEAD/OPTIONS) must come from a
  page of this server: a browser says so in `Sec-Fetch-Site` (same-origin, or none when typed by the
  user) or, older ones, in `Origin`. A cross-site form posting to `/api/cloud/jobs/sync?all=true` is
  refused. Clients that send neither header (curl, scripts) are not browsers and cannot be forged that way.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from jobwidget.surfaces.asgi import error_body, header, send_json

__all__ = ["Guard", "host_name"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def host_name(host_header: str) -> str:
    """The host part of a Host header (`[::1]:8001` -> `::1`, `localhost:8001` -> `localhost`)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _authority(host: str, scheme: str) -> str:
    """`host[:port]` with the scheme's default port made explicit, for comparing origins."""
    host = host.strip().lower()
    has_port = host.rsplit("]", 1)[-1].count(":") == 1 if host.startswith("[") else host.count(":") == 1
    return host if has_port else f"{host}:{_DEFAULT_PORTS.get(scheme, '80')}"


class Guard:
    """The access rules above; `exempt` paths (the webhook) authenticate by other means."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: frozenset[str],
        allowed_origins: frozenset[str] = frozenset(),
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.exempt = exempt
        self.refused_cross_site = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.token is not None:
            given = header(scope, b"authorization") or ""
            scheme, _, credentials = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), self.token
            ):
                detail = (
                    "this server wants 'Authorization: Bearer <api token>' (the token it was started with)"
                )
                await send_json(send, 401, error_body(401, detail), {"WWW-Authenticate": "Bearer"})
                return
        else:
            host = header(scope, b"host")
            if host is not None and host_name(host) not in self.allowed_hosts:
                detail = (
                    "this server answers only requests addressed to this machine (Host: localhost or "
                    "127.0.0.1); start it with an API token to serve other names"
                )
                await send_json(send, 403, error_body(403, detail))
                return
            if scope["method"] not in SAFE_METHODS and not self._same_origin(scope):
                self.refused_cross_site += 1
                detail = (
                    f"{scope['method']} {scope['path']} from another site is refused: requests that change "
                    "something must come from this server's own pages, carry the API token, or name "
                    "their origin in the server's allowed origins"
                )
                await send_json(send, 403, error_body(403, detail))
                return
        await self.app(scope, receive, send)

    def _same_origin(self, scope: Scope) -> bool:
        origin = header(scope, b"origin")
        if origin is not None and origin.rstrip("/").lower() in self.allowed_origins:
            return True
        site = header(scope, b"sec-fetch-site")
        if site is not None:
            return site.strip().lower() in _SAME_ORIGIN_SITES
        if origin is None:
            return True  # not a browser: nothing a web page can forge
        parts = urlsplit(origin.strip())
        host = header(scope, b"host")
        if not parts.scheme or not parts.netloc or host is None:
            return False  # "null" (sandboxed frames, file: pages) or unparsable: not this server's page
        return _authority(parts.netloc, parts.scheme) == _authority(host, scope.get("scheme", "http"))
