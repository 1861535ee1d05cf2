"""The HTTP surface's knobs (`ServerOptions`) and the redactor that masks every credential in play."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from jobwidget.core.errors import ConfigError
from jobwidget.core.webhooks import DEFAULT_TOLERANCE

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "LOOPBACK_NAMES",
    "WEBHOOK_PATH",
    "Redactor",
    "ServerOptions",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
WEBHOOK_PATH = "/api/webhooks/replicate"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_MiB = 1024 * 1024
_MIN_SECRET_CHARS = 8  # shorter strings would mask ordinary words, and are no real secret anyway


@dataclass(frozen=True)
class ServerOptions:
    """Knobs of the HTTP surface. The defaults are the reference system's (5 streams per address) or
    conservative."""

    api_token: str | None = field(default=None, repr=False)
    max_body: int = 1 * _MiB  # every route but the webhook
    # A Replicate webhook carries the training's whole log, which reaches megabytes on long runs.
    webhook_max_body: int = 32 * _MiB
    # Body bytes of all webhook deliveries not verified yet, together: bounds memory under a flood.
    webhook_inflight: int = 64 * _MiB
    webhook_tolerance: float = DEFAULT_TOLERANCE
    secret_retry: float = 2.0  # first wait before fetching the webhook secret again after a failure
    sse_per_client: int = 5
    sse_max_clients: int = 100  # event streams in total
    sse_buffer: int = 8 * _MiB  # bytes of recent events kept for every stream to read and to resume from
    sse_stall: float = 5.0  # a stream whose socket took nothing this long when the log passes it is dropped
    heartbeat: float = 15.0  # seconds between SSE comment lines, so proxies keep idle streams open
    header_timeout: float = 10.0  # seconds to send a request's headers
    body_timeout: float = 60.0  # seconds to send a request's body
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted without a token, besides loopback's
    allowed_origins: tuple[str, ...] = ()  # origins (https://host:port) whose pages may POST without a token
    max_list: int = 5000  # largest `limit` of GET /api/cloud/jobs

    def __post_init__(self) -> None:
        if self.api_token is not None and (
            not self.api_token.strip() or len(self.api_token) < _MIN_SECRET_CHARS
        ):
            raise ConfigError(f"the API token must be at least {_MIN_SECRET_CHARS} characters")
        for name in (
            "max_body",
            "webhook_max_body",
            "webhook_inflight",
            "sse_per_client",
            "sse_max_clients",
            "sse_buffer",
            "max_list",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"server option {name} must be a positive integer, got {value!r}")
        for name in ("webhook_tolerance", "heartbeat", "header_timeout", "body_timeout", "secret_retry"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
                raise ConfigError(f"server option {name} must be a positive number of seconds, got {value!r}")
        if (
            isinstance(self.sse_stall, bool)
            or not isinstance(self.sse_stall, int | float)
            or self.sse_stall < 0
        ):
            raise ConfigError(f"server option sse_stall must be a number of seconds, got {self.sse_stall!r}")


# ------------------------------------------------------------------------------------------- redaction


class Redactor:
    """Masks known secret values (provider token, API token, webhook secret) in outgoing text.

    Defence in depth: nothing is meant to carry them, but a training's logs or an error message could.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= _MIN_SECRET_CHARS and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)  # a secret containing another is masked whole

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


# ----------------------------------------------------------------------------------------------- API
