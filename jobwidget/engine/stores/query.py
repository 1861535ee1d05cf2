"""The SQL of `JobStore.list`'s narrower filters (model, creation time, text), apart from the store's
connection and transaction code so that each stays one idea."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["narrowing"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its `%`, `_` and `\\` taken literally (ESCAPE '\\')."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def narrowing(
    model: str | Iterable[str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
    search: str | None,
) -> tuple[str, list[Any]]:
    """The SQL condition (joined with AND, or "") and parameters of `list`'s model, time and text filters.

    A model filter is served by the (model, created_at) index; a time range by the created_at one. The
    substring match cannot use an index (LIKE '%...%'), and need not: it narrows what the others found.
    """
    clauses: list[str] = []
    params: list[Any] = []
    if model is not None:
        models = [model] if isinstance(model, str) else list(model)
        if not all(isinstance(m, str) for m in models):
            raise ValueError(f"model must be 'owner/name' or a list of them, got {model!r}")
        clauses.append(f"model IN ({', '.join('?' * len(models))})" if models else "0")
        params += models
    for name, value, op in (("created_after", created_after, ">="), ("created_before", created_before, "<")):
        if value is None:
            continue
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
        clauses.append(f"created_at {op} ?")
        params.append((value - _EPOCH) // _US)
    text = (search or "").strip()
    if text:
        clauses.append(
            "(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in ("job_id", "name", "model")) + ")"
        )
        params += [_like_pattern(text)] * 3
    return " AND ".join(clauses), params
