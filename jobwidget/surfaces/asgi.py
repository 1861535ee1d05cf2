"""Small ASGI helpers shared by the HTTP surface's middleware and routes: JSON error answers sent before
any route runs, and header lookup on a raw scope."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.types import Scope, Send

__all__ = ["dumps", "error_body", "header", "send_json"]


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)


def error_body(status: int, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": HTTPStatus(status).phrase, "detail": detail, "status": status, **extra}


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> None:
    """A JSON answer straight from middleware (before any route runs)."""
    raw = dumps(body).encode()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower-case bytes), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None
