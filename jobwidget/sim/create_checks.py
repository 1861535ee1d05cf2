"""What the simulated Replicate refuses when a training is created, answered as Replicate does.

- 404 for a trainer it does not have, a version id that cannot exist, or a destination that is not a
  model name (Replicate: "The specified training destination does not exist").
- 422 for a body or `input` of the wrong shape, a webhook that is not a URL, unknown webhook events, and
  input values outside what the trainers take (steps, learning rate, rank, batch size, epochs, dataset
  URLs, flags). The body is problem+json with a `detail` listing each complaint on its own line
  (`- input.steps: Must be greater than or equal to 3`) and `invalid_fields`, one entry per complaint.

Pure: `check_create(model, version, body)` returns None (accepted) or (status, problem body).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from jobwidget.sim.catalog import trainer_skus

__all__ = ["INPUT_RULES", "check_create"]

Problem = tuple[int, dict[str, Any]]

_VERSION_ID = re.compile(r"[0-9a-f]{64}")
_MODEL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9_])?")
_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?")
_EVENTS = ("start", "output", "logs", "completed")


def _problem(status: int, title: str, detail: str, **extra: Any) -> Problem:
    return status, {"detail": detail, "status": status, "title": title, **extra}


def _number(kind: str, lo: float | None = None, hi: float | None = None, *, above: bool = False):  # noqa: ANN202
    """A rule for a number input: its JSON type, then its bounds (`above`: strictly greater than lo)."""

    def rule(value: Any) -> tuple[str, str] | None:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        is_number = is_int or (isinstance(value, float) and math.isfinite(value))
        if (kind == "integer" and not is_int) or not is_number:
            return "invalid_type", f"Invalid type. Expected: {kind}, given: {_json_type(value)}"
        if lo is not None and above and value <= lo:
            return "greater_than", f"Must be greater than {lo:g}"
        if lo is not None and not above and value < lo:
            return "greater_than_equal", f"Must be greater than or equal to {lo:g}"
        if hi is not None and value > hi:
            return "less_than_equal", f"Must be less than or equal to {hi:g}"
        return None

    return rule


def _uri(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, str):
        return "invalid_type", f"Invalid type. Expected: string, given: {_json_type(value)}"
    if not re.match(r"(?i)(https?://[^\s/]+|data:)", value):
        return "format", "Does not match format 'uri'"
    return None


def _boolean(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, bool):
        return "invalid_type", f"Invalid type. Expected: boolean, given: {_json_type(value)}"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


_STEPS = _number("integer", 3, 20000)
# Inputs the simulated trainers take, by name (a name means the same thing for every trainer that has it).
INPUT_RULES: Mapping[str, Callable[[Any], tuple[str, str] | None]] = {
    "steps": _STEPS,
    "max_train_steps": _STEPS,
    "training_steps": _STEPS,
    "max_steps": _STEPS,
    "learning_rate": _number("number", 0, 1, above=True),
    "lora_rank": _number("integer", 1, 256),
    "network_dim": _number("integer", 1, 256),
    "network_alpha": _number("integer", 1, 256),
    "batch_size": _number("integer", 1, 128),
    "per_device_train_batch_size": _number("integer", 1, 128),
    "num_train_epochs": _number("integer", 1, 1000),
    "max_train_epochs": _number("integer", 1, 1000),
    "input_images": _uri,
    "images_zip": _uri,
    "train_data_zip": _uri,
    "autocaption": _boolean,
    "use_face_detection_instead": _boolean,
}


def _destination_exists(destination: Any) -> bool:
    if not isinstance(destination, str) or destination.count("/") != 1:
        return False
    owner, name = destination.split("/")
    return bool(_OWNER.fullmatch(owner) and _MODEL_NAME.fullmatch(name))


def check_create(model: str, version: str, body: Any) -> Problem | None:
    """None if Replicate would take this training, else the status and problem body it answers."""
    if model not in trainer_skus():  # every registered trainer style's models
        return _problem(404, "Not found", f"Model {model} not found, or you do not have access to it.")
    if not _VERSION_ID.fullmatch(version):
        return _problem(
            404,
            "Not found",
            "The specified version does not exist (or perhaps you don't have permission to use it?)",
        )
    if not isinstance(body, dict):
        return _problem(422, "Invalid input", "The request body must be a JSON object.")
    if not _destination_exists(body.get("destination")):
        return _problem(404, "Not found", "The specified training destination does not exist")
    inputs = body.get("input", {})
    if not isinstance(inputs, dict):
        return _problem(422, "Invalid input", "input: must be an object")
    webhook = body.get("webhook")
    if webhook is not None and (
        not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
    ):
        return _problem(422, "Invalid input", "webhook: must be an HTTP(S) URL")
    events = body.get("webhook_events_filter")
    if events is not None and (not isinstance(events, list) or not set(events) <= set(_EVENTS)):
        return _problem(
            422, "Invalid input", "webhook_events_filter: must be a subset of start, output, logs, completed"
        )
    fields = []
    for key, value in inputs.items():
        rule = INPUT_RULES.get(key)
        complaint = rule(value) if rule is not None else None
        if complaint is not None:
            fields.append({"type": complaint[0], "field": f"input.{key}", "description": complaint[1]})
    if fields:
        detail = "".join(f"- {f['field']}: {f['description']}\n" for f in fields)
        return _problem(422, "Input validation failed", detail, invalid_fields=fields)
    return None
