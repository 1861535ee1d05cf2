"""The job model and its state rules: pure data, no I/O.

Everything that decides what a job *is* lives here, so the store, the sync engine, the webhook receiver
and the tests all apply one rule (a finished job never goes back to running) from one place.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from jobwidget.core.fields import API_READS, check_model, field_kinds

# The metadata keys once defined here (INLINE, SETTLED, ...) are re-exported for existing imports.
from jobwidget.core.keys import (
    COST_ESTIMATE,
    GUARD,
    GUARD_REASON,
    HEALTH,
    HEALTH_COST,
    HEALTH_FINISH_AT,
    HEALTH_FLAGS,
    INLINE,
    PRICE_PER_S,
    PROVIDER_STATUS,
    SETTLED,
    HealthFlag,
)
from jobwidget.core.redact import redact_tokens
from jobwidget.core.schema import Kind

__all__ = [
    "ACTIVE_STATUSES",
    "GUARD",
    "HEALTH",
    "INLINE",
    "PRICE_PER_S",
    "PROVIDER_STATUS",
    "SETTLED",
    "TERMINAL_STATUSES",
    "Job",
    "JobStatus",
    "can_transition",
    "clean_text",
    "next_status",
]


class JobStatus(enum.StrEnum):
    """Provider-neutral job status (the reference system's unified statuses)."""

    PENDING = "pending"
    UPLOADING = "uploading"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


ACTIVE_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.PENDING, JobStatus.UPLOADING, JobStatus.QUEUED, JobStatus.RUNNING}
)
TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
)

# Active statuses move forward only: a stale poll that still says "queued" must not undo "running".
_ACTIVE_RANK = {JobStatus.PENDING: 0, JobStatus.UPLOADING: 1, JobStatus.QUEUED: 2, JobStatus.RUNNING: 3}


def can_transition(current: JobStatus, incoming: JobStatus) -> bool:
    """Whether a job in `current` may take `incoming`.

    Terminal is final (a late webhook or stale poll cannot reopen or re-finish a job); active statuses
    only move forward; any active status may finish. Same-status is allowed (it carries new fields).
    """
    if current is incoming:
        return True
    if current.is_terminal:
        return False
    if incoming.is_terminal:
        return True
    return _ACTIVE_RANK[incoming] > _ACTIVE_RANK[current]


def next_status(current: JobStatus | None, incoming: JobStatus) -> JobStatus:
    """The status a job ends up with when `incoming` arrives (None: the job is new)."""
    if current is None or can_transition(current, incoming):
        return incoming
    return current


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: jobwidget keeps timezone-aware UTC datetimes only")
    return value.astimezone(UTC)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_TRAINING_TEXT = ("error_message", "last_log")


def clean_text(value: str) -> str:
    """`value` with lone surrogates replaced by U+FFFD, so that it can be encoded as UTF-8.

    JSON may carry them (`"\\ud800"` decodes to a str Python holds but SQLite, the kernel's comm and any
    HTTP response refuse to encode): one such character in a provider's error text must not fail every
    sync, card and response that touches the job. ASCII text (nearly all) returns at once.
    """
    if value.isascii() or not _LONE_SURROGATE.search(value):
        return value
    return _LONE_SURROGATE.sub("\ufffd", value)


def _clean(value: Any) -> Any:
    """`clean_text` through nested mappings and lists (a job's output and metadata); the same object
    back when nothing needed cleaning, so the common case allocates nothing (and is found by a quick
    look, `_dirty`, rather than by rebuilding every level)."""
    return _clean_walk(value) if _dirty(value) else value


_SCALARS = (int, float, bool, type(None))


def _dirty(value: Any) -> bool:
    """Whether `value` holds, anywhere, a string `clean_text` would change (what `_clean_walk` walks)."""
    kind = type(value)
    if kind is str:
        return not value.isascii() and _LONE_SURROGATE.search(value) is not None
    if kind is dict:
        for k, v in value.items():
            if (type(k) is not str or not k.isascii()) and _dirty(k):
                return True
            vkind = type(v)
            if vkind is str:
                if not v.isascii() and _LONE_SURROGATE.search(v) is not None:
                    return True
            elif vkind not in _SCALARS and _dirty(v):
                return True
        return False
    if isinstance(value, list | tuple):
        return any(type(v) not in _SCALARS and _dirty(v) for v in value)
    if isinstance(value, str):
        return _dirty(str(value))
    if isinstance(value, Mapping):
        return any(_dirty(k) or _dirty(v) for k, v in value.items())
    return False


def _clean_walk(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        items = [(_clean_walk(k), _clean_walk(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list | tuple):
        cleaned = [_clean_walk(v) for v in value]
        return value if all(a is b for a, b in zip(cleaned, value, strict=True)) else cleaned
    return value


# -- each field's check: the value a job keeps, or ValueError ------------------------------------------


def _check_id(value: Any) -> Any:
    if not value:
        raise ValueError("job_id must be a non-empty string")
    return _check_text(value)


def _check_text(value: Any) -> Any:
    return clean_text(value) if isinstance(value, str) and not value.isascii() else value


def _check_training_text(value: Any) -> Any:
    """What a training printed may hold a token: never stored as it is."""
    return redact_tokens(_check_text(value)) if isinstance(value, str) else value


def _check_mapping(value: Any) -> Any:
    return None if value is None else _clean(value)


def _check_metadata(value: Any) -> Any:
    return _clean(value) if value else value


def _check_float(value: Any) -> Any:
    return None if value is None else float(value)


def _fmt_dt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


class _Deferred:
    """The one slot a `Job` has beside its fields: a stored row not decoded yet (`core.stored`)."""

    __slots__ = ("_pending",)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job(_Deferred):
    """One fine-tuning job, provider-neutral and immutable (the reference system's unified job).

    `metadata` holds provider details that have no column (raw status, unknown-status reports, the
    reason a job stopped being polled). Use `dataclasses.replace` (or `Job.evolve`) to change fields.
    """

    job_id: str
    provider: str
    status: JobStatus
    name: str | None = None
    model: str | None = None
    version: str | None = None
    hardware: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    cost_usd: float | None = None
    error_message: str | None = None
    output: Mapping[str, Any] | None = None
    web_url: str | None = None
    stage: str | None = None
    progress: float | None = None
    last_log: str | None = None
    updated_at: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # What the training was started with (Replicate's `input`): kept to compare runs and to retry them.
    inputs: Mapping[str, Any] | None = None
    retry_of: str | None = None  # the job this one retries or clones (set when started by jobwidget)

    def __post_init__(self) -> None:
        for name, check, put in _CHECKS:
            put(self, check(getattr(self, name)))

    def __getattr__(self, name: str) -> Any:
        """Reached only when a slot is empty: a job read from a store (`core.stored.RowLayout`) decodes
        a field the first time it is read, so a page of rows costs about what fetching it does."""
        try:
            pending = _GET_PENDING(self, Job)  # (*row, filler, mask): see core.stored
        except AttributeError:
            getter = _SLOT_GETTERS.get(name)  # another thread may have just decoded every field
            if getter is None:
                raise AttributeError(f"'Job' object has no attribute {name!r}") from None
            return getter(self, Job)
        if name not in _SLOT_GETTERS:
            raise AttributeError(f"'Job' object has no attribute {name!r}")
        FILLERS[pending[-2]](self, pending, name)
        return _SLOT_GETTERS[name](self, Job)

    def evolve(self, **changes: Any) -> Job:
        """This job with `changes` (as `dataclasses.replace`), checking and cleaning only the fields that
        change: re-walking every mapping of a job on each small change cost more than the change."""
        unknown = changes.keys() - _FIELD_NAMES
        if unknown:
            raise TypeError(f"Job has no field {sorted(unknown)[0]!r}")
        job = _new_job(Job)
        for name, put in _SLOT_SETTERS:
            put(job, changes[name] if name in changes else getattr(self, name))
        # Only the changed fields are checked (each field's rule depends on that field alone), in the
        # order a new job checks them, so that the first error is the one it would raise.
        for name in changes if len(changes) < 2 else sorted(changes, key=_FIELD_ORDER.__getitem__):
            rule = _RULES.get(name)
            if rule is not None:
                check, put = rule
                put(job, check(changes[name]))
        return job

    @property
    def is_active(self) -> bool:
        return self.status.is_active

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def cost_is_estimate(self) -> bool:
        """Running jobs show cost so far (elapsed x price); only a finished job's cost is billed."""
        return bool(self.metadata.get(COST_ESTIMATE)) and not self.is_terminal

    @property
    def price_per_s(self) -> float | None:
        price = self.metadata.get(PRICE_PER_S)
        return float(price) if isinstance(price, int | float) and not isinstance(price, bool) else None

    def cost_at(self, now: datetime | None = None) -> float | None:
        """Cost at `now` (default: the clock): a running job's so far is elapsed x its stored price per
        second, derived here rather than stored, so the row does not move with the clock; otherwise the
        stored (billed) cost."""
        price = self.price_per_s
        if self.status is not JobStatus.RUNNING or price is None or self.started_at is None:
            return self.cost_usd
        now = _utc(now) or datetime.now(UTC)
        return round(max(0.0, (now - self.started_at).total_seconds()) * price, 6)

    @property
    def cost_now(self) -> float | None:
        """`cost_at` the clock, to the micro-dollar: the cost the job's JSON carries."""
        cost = self.cost_at()
        return round(cost, 6) if cost is not None else None

    def priced(self, now: datetime | None = None) -> Job:
        """This job with `cost_usd` as it reads at `now` (see `cost_at`): what surfaces hand to users."""
        cost = self.cost_at(now)
        return self if cost == self.cost_usd else self.evolve(cost_usd=cost)

    @property
    def queue_seconds(self) -> float | None:
        if self.created_at and self.started_at:
            return max(0.0, (self.started_at - self.created_at).total_seconds())
        return None

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.completed_at:
            return max(0.0, (self.completed_at - self.started_at).total_seconds())
        return None

    @property
    def trained_version(self) -> str | None:
        """What the training produced (`owner/model:version`), once it has: its own field, never the name."""
        version = self.output.get("version") if self.output else None
        return version if isinstance(version, str) and version else None

    @property
    def provider_status(self) -> str | None:
        """The provider's own word for the status (`aborted`, `starting`...), kept beside the unified one."""
        raw = self.metadata.get(PROVIDER_STATUS)
        return raw if isinstance(raw, str) else None

    # -- run health (derived from metadata the engine's health monitor writes) ----------------------

    def _health(self) -> Mapping[str, Any]:
        health = self.metadata.get(HEALTH)
        return health if isinstance(health, Mapping) else {}

    @property
    def flags(self) -> dict[str, HealthFlag]:
        """Health flags now raised: name (nan_loss, stalled, diverging, slow_start) -> reason, raised_at
        (epoch seconds)."""
        flags = self._health().get(HEALTH_FLAGS)
        if not isinstance(flags, Mapping):
            return {}
        return {str(k): cast(HealthFlag, dict(v)) for k, v in flags.items() if isinstance(v, Mapping)}

    @property
    def projected_finish_at(self) -> datetime | None:
        """When the run will end (steps left at its recent rate, pauses and the tail its trainer's earlier
        runs had: `core.projection`); None when finished or without enough evidence."""
        at = self._health().get(HEALTH_FINISH_AT)
        if self.is_terminal or isinstance(at, bool) or not isinstance(at, int | float):
            return None
        return datetime.fromtimestamp(at, UTC)

    @property
    def projected_cost_usd(self) -> float | None:
        """What the run will have cost when it ends as projected (same conditions)."""
        cost = self._health().get(HEALTH_COST)
        if self.is_terminal or isinstance(cost, bool) or not isinstance(cost, int | float):
            return None
        return float(cost)

    @property
    def guard_reason(self) -> str | None:
        """Why a guard cancelled (or, in a dry run, would have cancelled) this job."""
        guard = self.metadata.get(GUARD)
        reason = guard.get(GUARD_REASON) if isinstance(guard, Mapping) else None
        return reason if isinstance(reason, str) else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (ISO datetimes), the shape of the HTTP API (docs/compatibility.md): the API
        fields of `core.fields.JOB_FIELDS`, each read as that table says."""
        return {name: _json_value(getattr(self, attr)) for name, attr in API_READS}

    def __repr__(self) -> str:
        bits = [f"{self.job_id!r}", f"{self.status.value}"]
        if self.name:
            bits.append(repr(self.name))
        if self.progress is not None and self.is_active:
            bits.append(f"{self.progress:.1f}%")
        if self.stage and self.is_active:
            bits.append(self.stage)
        if self.cost_usd is not None:
            bits.append(f"${self.cost_usd:.4f}{' (est.)' if self.cost_is_estimate else ''}")
        return f"Job({', '.join(bits)})"

    def _repr_html_(self) -> str:
        from html import escape

        rows = [
            ("status", self.status.value),
            ("name", self.name),
            ("model", self.model),
            ("hardware", self.hardware),
            ("created", _fmt_dt(self.created_at)),
            ("started", _fmt_dt(self.started_at)),
            ("completed", _fmt_dt(self.completed_at)),
            ("cost", None if self.cost_usd is None else f"${self.cost_usd:.4f}"),
            ("stage", self.stage),
            ("progress", None if self.progress is None else f"{self.progress:.1f}%"),
            ("last log", self.last_log),
            ("error", self.error_message),
            ("retry of", self.retry_of),
            ("trained version", self.trained_version),
            ("inputs", None if not self.inputs else ", ".join(f"{k}={v!r}" for k, v in self.inputs.items())),
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{escape(str(v))}</td></tr>"
            for k, v in rows
            if v is not None
        )
        return f"<table><caption>Job {escape(self.job_id)} ({escape(self.provider)})</caption>{body}</table>"


_PLAIN = frozenset({str, float, int, bool, type(None)})


def _json_value(value: Any) -> Any:
    """A field's value as JSON holds it: ISO 8601 UTC times ("...Z"), enum values, plain dicts."""
    if type(value) in _PLAIN:  # most values: no isinstance walk
        return value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    return value


check_model(Job)  # core/fields.py describes every field of Job, and only those
_KINDS = field_kinds(Job)
# What each field's check is, by its type: texts are cleaned of lone surrogates, times kept UTC.
_TEXT_FIELDS = tuple(f.name for f in dataclasses.fields(Job) if _KINDS[f.name] is Kind.TEXT)
_TIME_FIELDS = tuple(f.name for f in dataclasses.fields(Job) if _KINDS[f.name] is Kind.TIME)

# The slots' own setters and getters (a frozen dataclass refuses `setattr`; a getter never reaches
# `__getattr__`).
_SLOT_SETTERS = tuple((f.name, Job.__dict__[f.name].__set__) for f in dataclasses.fields(Job))
_CHECK_OF: dict[str, Any] = {
    "job_id": _check_id,
    "status": JobStatus,
    **{name: _check_text for name in _TEXT_FIELDS if name not in _TRAINING_TEXT and name != "job_id"},
    **{name: _check_training_text for name in _TRAINING_TEXT},
    "output": _check_mapping,
    "inputs": _check_mapping,
    "metadata": _check_metadata,
    **{name: _utc for name in _TIME_FIELDS},
    "cost_usd": _check_float,
    "progress": _check_float,
}
# In this order (a job with two bad fields names the first): id, status, texts, mappings, times, numbers.
_RULES = {name: (check, Job.__dict__[name].__set__) for name, check in _CHECK_OF.items()}
_CHECKS = tuple((name, *rule) for name, rule in _RULES.items())
_FIELD_ORDER = {
    name: i for i, name in enumerate([*_RULES, *(n for n, _ in _SLOT_SETTERS if n not in _RULES)])
}
_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Job))
_new_job = object.__new__
_SLOT_GETTERS = {f.name: Job.__dict__[f.name].__get__ for f in dataclasses.fields(Job)}
_GET_PENDING = _Deferred.__dict__["_pending"].__get__
# What decodes a job's pending row, by the index its pending tuple names (`core.stored.RowLayout`
# registers itself). An index, not the function: a tuple of plain values only is one the garbage
# collector stops tracking, so a job read from a store is one tracked object, not three.
FILLERS: list[Callable[[Job, tuple[Any, ...], str], None]] = []
