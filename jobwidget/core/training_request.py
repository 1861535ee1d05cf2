"""A request to start a training: checked before anything is sent, and derived from a job to retry it.

Pure: the provider client sends what `TrainingRequest.body()` says to `TrainingRequest.path()`, and the
same object recognises the training it made in a list page (`matches`) when the answer to the POST was
lost. Every check here is one Replicate would make too; doing it first means a typo costs no request
and the message names the argument, not an HTTP status.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from jobwidget.core.errors import InvalidRequest
from jobwidget.core.keys import DESTINATION, INPUTS_OMITTED
from jobwidget.core.models import Job

__all__ = [
    "DEFAULT_WEBHOOK_EVENTS",
    "WEBHOOK_EVENTS",
    "TrainingRequest",
    "destination_of",
    "retry_request",
]

# Replicate's events for a webhook; "logs" fires every half second with the whole log, so by default a
# receiver hears of the start and the end, and the poller reads progress while a panel is watching.
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
DEFAULT_WEBHOOK_EVENTS = ("start", "completed")

# An owner or model name: what Replicate allows, and nothing that could reshape a URL path ("..", "/").
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_OWNER_NAME = re.compile(f"({_NAME})/({_NAME})")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_MAX_URL = 2048


def _json_value(value: Any, where: str, depth: int = 0) -> Any:
    """`value` as JSON will carry it, or InvalidRequest naming the input key that cannot be sent."""
    if depth > 32:
        raise InvalidRequest(f"{where} is nested too deeply to send")
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(f"{where} is {value!r}, which JSON cannot carry; send a finite number")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidRequest(f"{where} has a key {key!r} that is not a string")
            out[key] = _json_value(item, f"{where}.{key}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    kind = type(value).__name__
    raise InvalidRequest(
        f"{where} is a {kind}, which cannot be sent as JSON; pass a string, number, bool, list or dict "
        "(a file goes as a URL, e.g. a zip uploaded to the web or replicate.delivery)"
    )


def _split_ref(model: str | None, version: str | None) -> tuple[str, str]:
    """(model, version) from the forms people write: model="o/n" + version="id", or "o/n:id" in either."""
    if model and ":" in model and not version:
        model, version = model.split(":", 1)
    elif version and ":" in version and not model:
        model, version = version.split(":", 1)
    elif version and ":" in version and model:
        ref_model, version = version.split(":", 1)
        if ref_model != model:
            raise InvalidRequest(f"version names model {ref_model!r} but model is {model!r}")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest(
            "model is required: the trainer as 'owner/name', e.g. 'ostris/flux-dev-lora-trainer'"
        )
    if not isinstance(version, str) or not version.strip():
        raise InvalidRequest(f"version is required: the id of the {model} version to train with")
    return model.strip(), version.strip()


def _owner_name(value: Any, what: str, example: str) -> str:
    if not isinstance(value, str) or not _OWNER_NAME.fullmatch(value.strip()):
        shown = repr(value)[:80]
        raise InvalidRequest(f"{what} must be 'owner/name' (e.g. {example!r}), got {shown}")
    return value.strip()


def _webhook(url: Any) -> str | None:
    if url is None:
        return None
    if not isinstance(url, str) or len(url) > _MAX_URL or any(c.isspace() for c in url):
        raise InvalidRequest("webhook must be an http(s) URL without spaces")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidRequest("webhook is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"webhook must be an http(s) URL with a host (scheme {parts.scheme!r})")
    return url


def _events(events: Iterable[str] | None) -> tuple[str, ...] | None:
    if events is None:
        return None
    if isinstance(events, str):
        events = [events]
    chosen = tuple(dict.fromkeys(events))
    unknown = [e for e in chosen if e not in WEBHOOK_EVENTS]
    if unknown or not chosen:
        raise InvalidRequest(
            f"webhook_events_filter must be some of {', '.join(WEBHOOK_EVENTS)}; got {list(chosen)!r}"
        )
    return chosen


@dataclass(frozen=True, slots=True)
class TrainingRequest:
    """Everything `POST /v1/models/{owner}/{name}/versions/{version}/trainings` needs, checked.

    Build it with `TrainingRequest.make(...)`, which raises `InvalidRequest` for anything Replicate would
    refuse on sight. `retry_of` is not sent: jobwidget records it on the job it creates.
    """

    model: str
    version: str
    destination: str
    input: Mapping[str, Any]
    webhook: str | None = None
    webhook_events_filter: tuple[str, ...] | None = None
    retry_of: str | None = field(default=None, compare=False)

    @classmethod
    def make(
        cls,
        *,
        model: str | None,
        version: str | None,
        destination: str | None,
        input: Mapping[str, Any] | None = None,
        webhook: str | None = None,
        webhook_events_filter: Iterable[str] | None = None,
        retry_of: str | None = None,
    ) -> TrainingRequest:
        model, version = _split_ref(model, version)
        model = _owner_name(model, "model", "ostris/flux-dev-lora-trainer")
        if not _VERSION.fullmatch(version):
            raise InvalidRequest(
                f"version must be a version id (letters, digits, - and _), got {version[:80]!r}"
            )
        if destination is None:
            raise InvalidRequest(
                "destination is required: the model that receives the trained version, as 'owner/name' "
                "(create it first on Replicate)"
            )
        destination = _owner_name(destination, "destination", "your-name/my-lora")
        if input is None:
            input = {}
        if not isinstance(input, Mapping):
            raise InvalidRequest(f"input must be a dict of the trainer's inputs, got {type(input).__name__}")
        inputs = _json_value(input, "input")
        webhook = _webhook(webhook)
        events = _events(webhook_events_filter) if webhook else None
        if webhook and events is None:
            events = DEFAULT_WEBHOOK_EVENTS
        return cls(model, version, destination, inputs, webhook, events, retry_of)

    def path(self) -> str:
        """The API path under `/v1/` (each segment quoted, though `make` admits none that needs it)."""
        owner, name = self.model.split("/", 1)
        parts = (quote(owner, safe=""), quote(name, safe=""), quote(self.version, safe=""))
        return "models/{}/{}/versions/{}/trainings".format(*parts)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"destination": self.destination, "input": dict(self.input)}
        if self.webhook:
            out["webhook"] = self.webhook
            out["webhook_events_filter"] = list(self.webhook_events_filter or DEFAULT_WEBHOOK_EVENTS)
        return out

    def matches(self, job: Job) -> bool:
        """Whether `job` (as a list page shows it) is a training this request made: same trainer, version
        and inputs. The caller looks only at trainings created after the request was sent."""
        if job.model != self.model or job.version != self.version or job.inputs is None:
            return False
        return _canonical(job.inputs) == _canonical(self.input)


def _canonical(value: Any) -> str | None:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None


def destination_of(job: Job) -> str | None:
    """Where `job` sent its trained version: recorded when jobwidget started it or the provider said so,
    else read from the version it produced (`owner/model:id`). None when nothing says (Replicate does not
    report a training's destination, so a job started elsewhere that never finished has none)."""
    recorded = job.metadata.get(DESTINATION)
    if isinstance(recorded, str) and _OWNER_NAME.fullmatch(recorded):
        return recorded
    trained = job.trained_version
    if trained:
        model = trained.split(":", 1)[0]
        if _OWNER_NAME.fullmatch(model):
            return model
    return None


def retry_request(
    job: Job,
    changes: Mapping[str, Any],
    *,
    destination: str | None = None,
    webhook: str | None = None,
    webhook_events_filter: Iterable[str] | None = None,
) -> TrainingRequest:
    """A new training like `job` (same trainer, version, destination, inputs) with `changes` to its inputs,
    linked to it by `retry_of`."""
    if not job.model or not job.version:
        missing = "model" if not job.model else "version"
        raise InvalidRequest(
            f"job {job.job_id} has no {missing} on record, so it cannot be retried; start a new training "
            "with jobs.create(model=..., version=..., destination=..., input=...)"
        )
    if job.inputs is None:
        raise InvalidRequest(
            f"the inputs of job {job.job_id} are not known, so it cannot be retried "
            f"({job.metadata.get(INPUTS_OMITTED) or 'the provider did not report them'}); "
            "start a new training with jobs.create(...)"
        )
    target = destination or destination_of(job)
    if target is None:
        raise InvalidRequest(
            f"the destination of job {job.job_id} is not known (Replicate does not report it for a training "
            "started elsewhere); pass destination='owner/model' to retry it"
        )
    return TrainingRequest.make(
        model=job.model,
        version=job.version,
        destination=target,
        input={**job.inputs, **changes},
        webhook=webhook,
        webhook_events_filter=webhook_events_filter,
        retry_of=job.job_id,
    )
