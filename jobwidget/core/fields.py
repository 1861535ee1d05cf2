"""A job's fields in one table: what each is, and where it shows.

`Job` (core/models.py) is the one source: its dataclass fields are what the stores keep, its read-time
properties what is derived from them, and their annotations are the types. `JOB_FIELDS` adds, per field,
what the model cannot say: a description, whether the job's JSON carries it (`Job.to_dict`, the HTTP API
and its OpenAPI schema), whether `to_dataframe()` has it as a column, and the attribute a value derived at
read time comes from. From these follow the JSON (`Job.to_dict`), the OpenAPI schema (`job_schema`), the
frame's columns and dtypes (core/frame.py, core/columns.py) and the stores' column layout
(engine/stores/sqlite_rows.py). `check_model` runs when models.py is imported: a field added to `Job`
without its row here, or a row without its field, fails at once.

The order is the one users see: the frame's columns are its frame fields in this order (the order
docs/compatibility.md promises), the JSON's keys its API fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, get_type_hints

from jobwidget.core.schema import Kind, kind_of, schema_of

__all__ = [
    "API_FIELDS",
    "API_READS",
    "FRAME_FIELDS",
    "JOB_FIELDS",
    "JobField",
    "check_model",
    "field_kinds",
    "field_types",
    "job_schema",
    "stored_columns",
]


@dataclass(frozen=True, slots=True)
class JobField:
    """One field of a job and where it shows."""

    name: str
    description: str
    stored: bool = True  # a dataclass field of `Job` and a store column; False: a property derived when read
    api: bool = True  # a key of the job's JSON (`Job.to_dict`, the HTTP API)
    frame: bool = False  # a column of `to_dataframe()`
    read: str | None = None  # the attribute the JSON reads instead (a value derived at read time)


JOB_FIELDS: tuple[JobField, ...] = (
    JobField("job_id", "the provider's id of the job", frame=True),
    JobField("provider", "the provider that runs it (replicate)", frame=True),
    JobField("status", "jobwidget's status, the same for every provider", frame=True),
    JobField("stage", "what the run is doing, read from its log (loading, training, saving...)", frame=True),
    JobField("progress", "percent done, read from its log", frame=True),
    JobField("name", "a name for people: the destination model or the trained version", frame=True),
    JobField("model", "the trainer (owner/name)", frame=True),
    JobField("version", "the trainer's version id"),
    JobField("hardware", "the hardware it runs on", frame=True),
    JobField("created_at", "when it was created (UTC)", frame=True),
    JobField("started_at", "when it started running (UTC)", frame=True),
    JobField("completed_at", "when it finished (UTC)", frame=True),
    JobField("queue_seconds", "seconds from created to started", stored=False, api=False, frame=True),
    JobField("duration_seconds", "seconds from started to completed", stored=False, api=False, frame=True),
    JobField(
        "cost_usd",
        "USD: billed once finished; a running job's cost so far when read",
        frame=True,
        read="cost_now",
    ),
    JobField("error_message", "why it failed, in the provider's words", frame=True),
    JobField("last_log", "the last line of its log", frame=True),
    JobField(
        "projected_finish_at", "when it will end at its recent step rate (UTC)", stored=False, frame=True
    ),
    JobField("projected_cost_usd", "what it will have cost when it ends (USD)", stored=False, frame=True),
    JobField(
        "flags",
        "raised health flags (nan_loss, stalled, diverging, slow_start): why and when each was raised; "
        "a frame holds their names, comma-separated",
        stored=False,
        frame=True,
    ),
    JobField("output", "what the training produced (version, weights)"),
    JobField("web_url", "the job's page at the provider"),
    JobField("updated_at", "when the store last changed it (UTC)"),
    JobField("metadata", "provider details without a field of their own (core/keys.py)"),
    JobField("inputs", "what the training was started with"),
    JobField("retry_of", "the job this one retries or clones"),
    JobField("trained_version", "the version it trained (owner/model:id)", stored=False),
    JobField("provider_status", "the provider's own word for the status", stored=False),
    JobField("guard_reason", "why a guard cancelled it (or, in a dry run, would have)", stored=False),
)

API_FIELDS: tuple[JobField, ...] = tuple(f for f in JOB_FIELDS if f.api)
FRAME_FIELDS: tuple[JobField, ...] = tuple(f for f in JOB_FIELDS if f.frame)
# (JSON key, attribute it is read from), in the JSON's order: what `Job.to_dict` walks.
API_READS: tuple[tuple[str, str], ...] = tuple((f.name, f.read or f.name) for f in API_FIELDS)


def _is_property(model: type, name: str) -> bool:
    return isinstance(getattr(model, name, None), property)


def field_types(model: type) -> dict[str, Any]:
    """Each field's type hint: the annotation of a stored field, the return annotation of a derived one."""
    hints = get_type_hints(model)
    out: dict[str, Any] = {}
    for f in JOB_FIELDS:
        if f.stored:
            out[f.name] = hints[f.name]
        else:
            out[f.name] = get_type_hints(getattr(model, f.name).fget)["return"]
    return out


def field_kinds(model: type) -> dict[str, Kind]:
    """Each field's JSON kind (text, time, number, object...), from its type."""
    return {name: kind_of(hint) for name, hint in field_types(model).items()}


def stored_columns(model: type) -> tuple[str, ...]:
    """The stored fields in the model's own order (the stores' row layout)."""
    return tuple(f.name for f in dataclasses.fields(model))


def check_model(model: type) -> None:
    """Raise TypeError unless `JOB_FIELDS` describes `model` exactly: a row per dataclass field (stored)
    and per derived property, each type with a JSON kind, each `read` attribute there."""
    names = [f.name for f in JOB_FIELDS]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise TypeError(f"core/fields.py lists a field twice: {twice}")
    stored = set(stored_columns(model))
    listed = {f.name for f in JOB_FIELDS if f.stored}
    if stored != listed:
        raise TypeError(
            f"{model.__name__}'s dataclass fields and the stored rows of core/fields.py differ: "
            f"{sorted(stored ^ listed)} (add the row, or the field, to the other)"
        )
    for f in JOB_FIELDS:
        if not f.stored and not _is_property(model, f.name):
            raise TypeError(f"core/fields.py: derived field {f.name!r} is not a property of {model.__name__}")
        if f.read is not None and not _is_property(model, f.read):
            raise TypeError(f"core/fields.py: {f.name!r} is read from {f.read!r}, not a property of Job")
    field_kinds(model)  # every type has a JSON kind (else a TypeError naming it)


def job_schema(model: type) -> dict[str, Any]:
    """The OpenAPI 3.0 schema of a job's JSON (`Job.to_dict`): every API field, with its type and
    description; every key is always present (null when there is no value)."""
    types = field_types(model)
    properties = {f.name: schema_of(types[f.name], f.description) for f in API_FIELDS}
    required = [f.name for f in API_FIELDS]
    return {"type": "object", "required": required, "properties": properties}
