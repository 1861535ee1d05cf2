"""Python type hints -> what a value is in JSON, and its OpenAPI 3.0 schema.

The HTTP API's schemas are generated from the dataclasses that shape its JSON (the job's field table in
`core/fields.py`, the results in `core/results.py`), so the document cannot drift from the answers. A
type with no JSON kind here is refused with a `TypeError` naming it, where the schema is built.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Union, get_args, get_origin, get_type_hints, is_typeddict

__all__ = ["Kind", "dataclass_schema", "kind_of", "schema_of", "unwrap_optional"]


class Kind(enum.StrEnum):
    """What a value is in JSON (and so in a store column and a DataFrame column)."""

    TEXT = "text"
    ENUM = "enum"  # one of an enum's string values
    TIME = "time"  # an ISO 8601 date-time in UTC
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    OBJECT = "object"  # a JSON object (a mapping, a TypedDict)


_BASE_SCHEMA: dict[Kind, dict[str, Any]] = {
    Kind.TEXT: {"type": "string"},
    Kind.ENUM: {"type": "string"},
    Kind.TIME: {"type": "string", "format": "date-time"},
    Kind.NUMBER: {"type": "number"},
    Kind.INTEGER: {"type": "integer"},
    Kind.BOOLEAN: {"type": "boolean"},
    Kind.OBJECT: {"type": "object"},
}


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(`hint` without None, whether None is allowed); `X | None` and `Optional[X]` alike."""
    if get_origin(hint) in (Union, types.UnionType):
        args = get_args(hint)
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{hint!r}: a union of several types has no single JSON kind")
        return rest[0], len(rest) != len(args)
    return hint, False


def kind_of(hint: Any) -> Kind:
    """The JSON kind of a type hint (None allowed or not)."""
    base, _ = unwrap_optional(hint)
    origin = get_origin(base) or base
    if is_typeddict(base) or origin in (dict, Mapping):
        return Kind.OBJECT
    if base is str:
        return Kind.TEXT
    if base is bool:  # before int: bool is an int
        return Kind.BOOLEAN
    if base is int:
        return Kind.INTEGER
    if base is float:
        return Kind.NUMBER
    if base is datetime:
        return Kind.TIME
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return Kind.ENUM
    raise TypeError(f"{hint!r} has no JSON kind: add one to jobwidget/core/schema.py")


def schema_of(hint: Any, description: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 schema of a type hint: `nullable` for `X | None`, an enum's values, a TypedDict's
    properties, a `dict[str, X]`'s value schema."""
    base, nullable = unwrap_optional(hint)
    kind = kind_of(base)
    schema = dict(_BASE_SCHEMA[kind])
    if description:
        schema["description"] = description
    if kind is Kind.ENUM:
        schema["enum"] = [member.value for member in base]
    elif is_typeddict(base):
        schema["properties"] = {name: schema_of(h) for name, h in get_type_hints(base).items()}
        required = sorted(base.__required_keys__)
        if required:
            schema["required"] = required
    elif kind is Kind.OBJECT:
        args = get_args(base)
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = schema_of(args[1])
    if nullable:
        schema["nullable"] = True
    return schema


def dataclass_schema(
    cls: type, names: Iterable[str] | None = None, descriptions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The object schema of a dataclass's JSON (`names`: the fields its JSON has, default all); every
    property is required: the JSON always has the key, null when there is no value."""
    hints = get_type_hints(cls)
    fields = list(names) if names is not None else [f.name for f in dataclasses.fields(cls)]
    said = descriptions or {}
    return {
        "type": "object",
        "required": fields,
        "properties": {name: schema_of(hints[name], said.get(name)) for name in fields},
    }
