"""What `jobs.list(...)` is given, made into what the store filters by: times as aware datetimes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["narrowing"]


def _when(value: datetime | str | None, name: str) -> datetime | None:
    """A filter bound as an aware datetime: ISO text is parsed, and a date or time without a zone is UTC
    (the zone the store keeps); a naive datetime object is refused, since it could mean any zone."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be an ISO date or datetime, got {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise TypeError(f"{name} must be a datetime or an ISO string, got {type(value).__name__}")


def narrowing(
    model: str | Iterable[str] | None,
    created_after: datetime | str | None,
    created_before: datetime | str | None,
    search: str | None,
) -> dict[str, Any]:
    return {
        "model": model,
        "created_after": _when(created_after, "created_after"),
        "created_before": _when(created_before, "created_before"),
        "search": search,
    }
