"""Query parameters read strictly: a bad value is a 400 that names what is allowed."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request

from jobwidget.core.models import JobStatus

__all__ = ["bad_request", "bool_param", "int_param", "status_param"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def bad_request(detail: str) -> HTTPException:
    return HTTPException(400, detail)


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 12:
        raise bad_request(f"{name} must be a whole number between {lo} and {hi}, got {raw!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def bool_param(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise bad_request(f"{name} must be true or false, got {raw!r}")


def status_param(request: Request) -> list[JobStatus] | None:
    raw = request.query_params.getlist("status")
    if not raw:
        return None
    names = [part.strip().lower() for value in raw for part in value.split(",") if part.strip()]
    if not names:
        return None
    known = {s.value: s for s in JobStatus}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise bad_request(
            f"unknown status {unknown[0]!r}; use one or more of {', '.join(known)} (comma-separated)"
        )
    return [known[n] for n in dict.fromkeys(names)]
