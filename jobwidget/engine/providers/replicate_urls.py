"""Which base URLs the Replicate client accepts, and how they compare: the token only ever goes where
the user pointed it (https, or plain http on loopback), and a page's `next` link must stay there."""

from __future__ import annotations

import httpx

from jobwidget.core.errors import ConfigError

__all__ = ["DEFAULT_BASE_URL", "LOOPBACK", "check_concurrency", "normalize_base_url", "origin", "parse_url"]

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
DEFAULT_BASE_URL = "https://api.replicate.com"


def check_concurrency(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_concurrency must be a whole number of at least 1, got {value!r}")


def normalize_base_url(raw: str, source: str = "base_url (argument)") -> str:
    """'https://api.replicate.com/v1/' -> 'https://api.replicate.com' (the origin plus any path prefix).

    Errors name `source` and never echo the URL: a pasted one may hold credentials."""
    value = raw.strip().rstrip("/")
    if value.endswith("/v1"):
        value = value[: -len("/v1")].rstrip("/")
    url = parse_url(value)
    if url is None:
        raise ConfigError(f"{source} is not a valid URL")
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"{source} must be an http(s) URL with a host, such as {DEFAULT_BASE_URL} (scheme {url.scheme!r})"
        )
    if url.userinfo:
        raise ConfigError(
            f"{source} must not hold credentials; pass the token as token= or REPLICATE_API_TOKEN"
        )
    if url.query or url.fragment:
        raise ConfigError(f"{source} must not have a query or fragment")
    return value


def parse_url(value: str) -> httpx.URL | None:
    """httpx's own parse (the one that sends), or None; errors are not chained into ours (they echo the
    URL, which might hold credentials someone pasted into it)."""
    try:
        return httpx.URL(value)
    except (httpx.InvalidURL, ValueError, TypeError):
        return None


def origin(url: httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) with the default port filled in, as httpx will connect."""
    scheme = url.scheme.lower()
    return scheme, url.host.lower(), url.port or (443 if scheme == "https" else 80)
