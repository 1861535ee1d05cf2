"""What can go wrong with one request to a provider, and the error each kind becomes: rules as data.

As httpx maps transport errors to its own exceptions through one table, the client classifies a failed
request into a `FailureKind` (an HTTP status through `STATUS_KINDS`, a transport error by its class) and
`RULES` says, per kind, whether retrying may help and which exception with which message the caller
gets. Adding a kind is one row here; `ReplicateHTTP` holds no if-chain over kinds or statuses.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from jobwidget.core.errors import (
    AuthError,
    MalformedResponse,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)

__all__ = ["RETRY_STATUSES", "RULES", "STATUS_KINDS", "Failure", "FailureKind", "Rule", "kind_of_status"]


class FailureKind(enum.StrEnum):
    """Why one request did not give a usable answer."""

    THROTTLED = "throttled"  # HTTP 429: every call waits, the limit is per account
    SERVER = "server"  # HTTP 500, 502, 503, 504
    TIMEOUT = "timeout"  # no answer in time
    NETWORK = "network"  # connection refused, reset or garbled on the way
    MALFORMED = "malformed"  # a 2xx answer whose body is not JSON
    UNSENDABLE = "unsendable"  # the request could not be sent at all (our side): no retry helps
    AUTH = "auth"  # HTTP 401, 403: the token
    MISSING = "missing"  # HTTP 404 on a collection (on one job it is `JobNotFound`)
    REDIRECT = "redirect"  # HTTP 3xx: never followed (it could carry the token elsewhere)
    REFUSED = "refused"  # any other answer


@dataclass(frozen=True, slots=True)
class Rule:
    """What one kind of failure becomes.

    `message` is a `str.format` template over: label, route, base_url, status, detail, tries ("after N
    attempts"), hint (a throttled call's asked-for wait) and why (what to do about a rejected token). An
    HTTP answer's `detail` is `said` filled with the server's own words, or with `unsaid` when it gave
    none (None: the status's reason phrase; "": no detail at all)."""

    error: type[ProviderError]
    message: str
    retry: bool = False
    said: str = "{words}"
    unsaid: str | None = None


RULES: dict[FailureKind, Rule] = {
    FailureKind.THROTTLED: Rule(
        RateLimited,
        "{label} is still rate limiting {route} (HTTP 429) {tries}{hint}",
        retry=True,
        said="HTTP {status} {words}",
        unsaid="rate limited",
    ),
    FailureKind.SERVER: Rule(
        ProviderUnavailable,
        "{label} is unavailable: {route} answered {detail} {tries}",
        retry=True,
        said="HTTP {status} {words}",
    ),
    FailureKind.TIMEOUT: Rule(
        ProviderUnavailable, "{label} did not answer {route} in time ({detail}) {tries}", retry=True
    ),
    FailureKind.NETWORK: Rule(
        ProviderUnavailable,
        "could not reach {label} at {base_url} for {route} ({detail}) {tries}",
        retry=True,
    ),
    FailureKind.MALFORMED: Rule(
        MalformedResponse, "{label} answered {route} with a {detail} {tries}", retry=True
    ),
    FailureKind.UNSENDABLE: Rule(ProviderError, "{label}: {route} could not be sent ({detail})"),
    FailureKind.AUTH: Rule(
        AuthError,
        "the Replicate token was rejected (HTTP {status}{detail}); {why}",
        said=": {words}",
        unsaid="",
    ),
    FailureKind.MISSING: Rule(
        ProviderError,
        "{label} answered {route} with HTTP 404 ({detail}); is the base URL {base_url} right?",
        unsaid="not found",
    ),
    FailureKind.REDIRECT: Rule(ProviderError, "{label} answered {route} with a redirect (HTTP {status})"),
    FailureKind.REFUSED: Rule(ProviderError, "{label} answered {route} with HTTP {status}: {detail}"),
}

# HTTP statuses with a kind of their own; any other 3xx is a redirect and anything else refused.
STATUS_KINDS: dict[int, FailureKind] = {
    401: FailureKind.AUTH,
    403: FailureKind.AUTH,
    404: FailureKind.MISSING,
    429: FailureKind.THROTTLED,
    500: FailureKind.SERVER,
    502: FailureKind.SERVER,
    503: FailureKind.SERVER,
    504: FailureKind.SERVER,
}
RETRY_STATUSES = frozenset(status for status, kind in STATUS_KINDS.items() if RULES[kind].retry)


def kind_of_status(status: int) -> FailureKind:
    """The kind of failure a non-2xx HTTP status is."""
    kind = STATUS_KINDS.get(status)
    if kind is not None:
        return kind
    return FailureKind.REDIRECT if 300 <= status < 400 else FailureKind.REFUSED


@dataclass(slots=True)
class Failure:
    """One failed attempt: its kind, a short detail (logged, and quoted in the final message), the HTTP
    status and the wait the server asked for, if any."""

    kind: FailureKind
    detail: str
    status: int | None = None
    server_wait: float | None = None
    # False when the request cannot have reached the server (no connection): only then is a request
    # that must not run twice (creating a training) safe to send again.
    sent: bool = True

    @classmethod
    def from_answer(
        cls, kind: FailureKind, status: int, words: str | None, reason: str, server_wait: float | None = None
    ) -> Failure:
        """The failure an HTTP answer is, its detail built from the server's words as `RULES` says."""
        rule = RULES[kind]
        said = words or (reason if rule.unsaid is None else rule.unsaid)
        detail = rule.said.format(status=status, words=said).strip() if said else ""
        return cls(kind, detail, status, server_wait)

    @property
    def retry(self) -> bool:
        return RULES[self.kind].retry

    def error(
        self, *, label: str, route: str, base_url: str, attempts: int, why: str, redact: Callable[[str], str]
    ) -> ProviderError:
        """The exception this failure raises, its message passed through `redact` (a server may echo the
        token back in its words)."""
        rule = RULES[self.kind]
        fields = {
            "label": label,
            "route": route,
            "base_url": base_url,
            "status": self.status,
            "detail": self.detail,
            "tries": f"after {attempts} attempt{'s' if attempts != 1 else ''}",
            "hint": f"; it asks to wait {self.server_wait:.0f} s" if self.server_wait is not None else "",
            "why": why,
        }
        message = redact(rule.message.format(**fields))
        if issubclass(rule.error, RateLimited):
            return rule.error(message, retry_after=self.server_wait)
        return rule.error(message, status=self.status)
