"""The simulated Replicate's answers: JSON bodies, problem+json errors, gateway pages, list cursors."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "decode_cursor",
    "encode_cursor",
    "extra_headers",
    "http_error",
    "json_response",
    "not_found",
    "problem",
    "server_error",
]

_BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An `application/problem+json` error, Replicate's error shape."""
    body = json.dumps({"detail": detail, "status": status, "title": title}).encode()
    return Response(body, status_code=status, media_type="application/problem+json", headers=headers)


def not_found() -> Response:
    return problem(404, "Not found", "Not found.")


def server_error(draw: float) -> Response:
    """A 500, a gateway's HTML 502 or a 503, by `draw` in [0, 1)."""
    if draw < 0.4:
        return problem(500, "Internal Server Error", "An unexpected error occurred.")
    if draw < 0.7:
        return Response(_BAD_GATEWAY_HTML, status_code=502, media_type="text/html")
    return problem(503, "Service Unavailable", "The service is temporarily unavailable. Please try again.")


def extra_headers(response: Response) -> dict[str, str]:
    """`response`'s headers other than its body's length and type (to carry onto a rewritten body)."""
    return {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    titles = {404: "Not found", 405: "Method not allowed"}
    detail = exc.detail if isinstance(exc, HTTPException) else "An unexpected error occurred."
    return problem(status, titles.get(status, "Error"), str(detail))


def encode_cursor(position: int, generation: int) -> str:
    """An opaque list cursor: a position in the fleet's creation order, valid for one fleet generation."""
    raw = f"p{position}.g{generation}.jobwidget-sim".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, generation: int) -> int | None:
    """The position in `cursor`, or None if it is malformed or from another fleet generation."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        pos, gen, tag = raw.split(".")
        if tag != "jobwidget-sim" or gen != f"g{generation}" or not pos.startswith("p"):
            return None
        value = int(pos[1:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return value if value >= 0 else None
