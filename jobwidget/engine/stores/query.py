"""The SQL of `JobStore.list`'s narrower filters (model, creation time, text), apart from the store's
connection and transaction code so that each stays one idea."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Cursor", "keyset_parts", "narrowing"]

# Where a page of `list` ended: the last job's (created_at, job_id). The next page is the jobs after it in
# list order (newest first, undated last, ties by job_id descending), so paging neither skips nor repeats a
# job when new ones arrive at the top meanwhile, as OFFSET paging would.
Cursor = tuple[datetime | None, str]

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


def keyset_parts(cursor: Cursor | None, offset: int = 0) -> list[tuple[str, list[Any]]]:
    """The SQL conditions (and parameters) for the jobs after `cursor` in list order, as parts a store
    queries one after another (each with the same order and the rest of a limit) until the limit is met.

    Two parts for a dated cursor: the dated jobs after it, then the undated ones. One `OR created_at IS
    NULL` condition would do the same in one query, but then neither SQLite nor PostgreSQL can seek the
    (created_at DESC, job_id DESC) index to the cursor: it scans every newer entry first (7 ms at depth
    95,000 of 100,000 measured, against 0.2 ms for the seek). No cursor: one part with no condition.
    """
    if cursor is None:
        return [("", [])]
    if offset:
        raise ValueError("list takes an offset or a `before` cursor, not both")
    if not (isinstance(cursor, tuple) and len(cursor) == 2 and isinstance(cursor[1], str)):
        raise ValueError(f"before must be a (created_at, job_id) pair, got {cursor!r}")
    created, job_id = cursor
    if created is None:
        return [("created_at IS NULL AND job_id < ?", [job_id])]
    if not isinstance(created, datetime) or created.tzinfo is None:
        raise ValueError(f"before's created_at must be a timezone-aware datetime or None, got {created!r}")
    us = (created - _EPOCH) // _US
    return [
        ("created_at <= ? AND (created_at < ? OR job_id < ?)", [us, us, job_id]),
        ("created_at IS NULL", []),
    ]
