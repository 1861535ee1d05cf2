"""Telling a database URL from a file path, and showing one without its password (no driver needed)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["error_text", "is_postgres_url", "redact_url"]


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.strip().lower().startswith(("postgresql://", "postgres://"))


def redact_url(url: object) -> str:
    """`url` without its password, for logs, errors, reprs and `location`; a path comes back as it is."""
    text = str(url)
    if not is_postgres_url(text):
        return text
    parts = urlsplit(text.strip())
    if parts.password is None:
        return text
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def error_text(exc: BaseException, url: str) -> str:
    """The error's message (first line) with the URL's password taken out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return re.sub(r"password=\S+", "password=***", text)
