"""Standard Webhooks verification (the scheme Replicate signs its webhooks with): pure, no I/O.

A delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature` (space-separated
`v1,<base64>` entries, several while a secret rotates). The signed content is `"{id}.{timestamp}.{body}"`
over the raw body bytes, HMAC-SHA256 keyed with the base64-decoded part of the `whsec_` secret.

Why the checks are split: `check_headers` needs no body, so a receiver can turn away a delivery with
missing or stale headers before reading a possibly large body; `verify` does everything.
The clock is an argument (`now`), never read here, so tests pin it to a test vector's timestamp.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jobwidget.core.errors import ConfigError, WebhookVerificationError

__all__ = [
    "DEFAULT_TOLERANCE",
    "SECRET_PREFIX",
    "WebhookHeaders",
    "check_headers",
    "check_mac",
    "decode_secret",
    "sign",
    "signing_mac",
    "verify",
    "verify_signature",
]

DEFAULT_TOLERANCE = 300.0  # seconds either side of `now` (Standard Webhooks and Replicate: 5 minutes)
SECRET_PREFIX = "whsec_"
_MAX_ID_CHARS = 256  # ids are stored for deduplication; a longer one is not a real delivery
_MAX_SIGNATURES = 16  # a rotating secret needs 2 or 3; more is an attempt to make us hash a lot
_MAX_TIMESTAMP_DIGITS = 12
_ID_OK = re.compile(r"[\x21-\x7e]+")  # visible ASCII: it is echoed in logs and kept in the store

HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class WebhookHeaders:
    """The three Standard Webhooks headers of one delivery, checked for shape and freshness."""

    msg_id: str
    timestamp: int
    signatures: tuple[str, ...]  # the base64 parts of the `v1,` entries


def decode_secret(secret: str | bytes) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (the prefix is optional; raw bytes are used as they are).

    A bad secret is the receiver's configuration error, not the sender's: it raises `ConfigError`.
    """
    if isinstance(secret, bytes):
        if not secret:
            raise ConfigError("the webhook secret is empty")
        return secret
    text = secret.strip()
    if text.startswith(SECRET_PREFIX):
        text = text[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "the webhook secret must be 'whsec_' followed by base64 (check the setting)"
        ) from None
    if not key:
        raise ConfigError("the webhook secret is empty")
    return key


def _lower(headers: HeadersLike) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {str(k).lower(): str(v) for k, v in items}


def check_headers(
    headers: HeadersLike, *, now: float, tolerance: float = DEFAULT_TOLERANCE
) -> WebhookHeaders:
    """Parse and check the headers (names case-insensitive): present, well formed, timestamp fresh."""
    h = _lower(headers)
    missing = [
        n for n in ("webhook-id", "webhook-timestamp", "webhook-signature") if not h.get(n, "").strip()
    ]
    if missing:
        raise WebhookVerificationError(f"missing webhook header(s): {', '.join(missing)}")
    msg_id = h["webhook-id"].strip()
    if len(msg_id) > _MAX_ID_CHARS or not _ID_OK.fullmatch(msg_id):
        raise WebhookVerificationError(
            f"webhook-id must be at most {_MAX_ID_CHARS} visible ASCII characters without spaces"
        )
    raw_ts = h["webhook-timestamp"].strip()
    if not raw_ts.isascii() or not raw_ts.isdigit() or len(raw_ts) > _MAX_TIMESTAMP_DIGITS:
        raise WebhookVerificationError("webhook-timestamp must be whole Unix seconds")
    timestamp = int(raw_ts)
    if timestamp < now - tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {now - timestamp:.0f} s old (tolerance {tolerance:g} s): stale or replayed"
        )
    if timestamp > now + tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {timestamp - now:.0f} s in the future (tolerance {tolerance:g} s)"
        )
    entries = h["webhook-signature"].split()
    if len(entries) > _MAX_SIGNATURES:
        raise WebhookVerificationError(
            f"too many webhook signatures ({len(entries)}; at most {_MAX_SIGNATURES})"
        )
    signatures = tuple(e[3:] for e in entries if e.startswith("v1,") and len(e) > 3)
    if not signatures:
        raise WebhookVerificationError("webhook-signature holds no 'v1,<base64>' entry")
    return WebhookHeaders(msg_id=msg_id, timestamp=timestamp, signatures=signatures)


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The `v1,<base64>` signature of a delivery: what a sender puts in `webhook-signature`."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    mac = hmac.new(decode_secret(secret), f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signing_mac(key: bytes, parsed: WebhookHeaders) -> hmac.HMAC:
    """An HMAC over `"{id}.{timestamp}."`, ready to take the body in pieces as they arrive, so a receiver
    never needs the whole body in memory before it knows whether the signature holds."""
    return hmac.new(key, f"{parsed.msg_id}.{parsed.timestamp}.".encode(), hashlib.sha256)


def check_mac(parsed: WebhookHeaders, mac: hmac.HMAC) -> None:
    """Compare the body's HMAC with every `v1` entry of the signature header (constant time each)."""
    expected = base64.b64encode(mac.digest())
    matched = False
    for candidate in parsed.signatures:
        # Compare every entry (no early exit) so timing does not say which position matched.
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    if not matched:
        raise WebhookVerificationError(
            "webhook-signature does not match the body (forged, altered or wrong secret)"
        )


def verify_signature(secret: str | bytes, parsed: WebhookHeaders, body: bytes | str) -> None:
    """Check the body against headers already passed through `check_headers` (no second parse)."""
    mac = signing_mac(decode_secret(secret), parsed)
    mac.update(body.encode("utf-8") if isinstance(body, str) else body)
    check_mac(parsed, mac)


def verify(
    secret: str | bytes,
    headers: HeadersLike,
    body: bytes | str,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> WebhookHeaders:
    """Check one delivery; raise `WebhookVerificationError` saying why it is refused.

    Every `v1` entry is compared in constant time (`hmac.compare_digest`) with the expected signature.
    Returns the parsed headers (the id to deduplicate on) so callers need not parse them again.
    """
    parsed = check_headers(headers, now=now, tolerance=tolerance)
    verify_signature(secret, parsed, body)
    return parsed
