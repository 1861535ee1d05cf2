"""Masking of provider-token shapes in text that came from a training (pure, no I/O).

A training script that prints its environment puts `r8_...` into the log, and a failing one can put it
into the error. Those strings are stored, shown on cards and sent over HTTP, so anything shaped like a
Replicate token is masked before a job is built from them. The exact configured tokens are masked again
at the surfaces (server responses, provider errors); this catches tokens jobwidget was never told about.
"""

from __future__ import annotations

import re

__all__ = ["TOKEN_MASK", "redact_tokens"]

TOKEN_MASK = "[redacted]"  # what the panel shows for a secret, too
# `r8_` then at least 8 token characters, not glued to a preceding word (`mr8_x` is not a token).
# `_` and `-` count as token characters, so a token containing them is masked whole, not up to them.
_TOKEN_SHAPE = re.compile(r"(?<![A-Za-z0-9])r8_[A-Za-z0-9_\-]{8,}")


def redact_tokens(text: str) -> str:
    """`text` with every Replicate-token shape masked; the same object when there is none."""
    if "r8_" not in text:  # the common case costs one substring search
        return text
    return _TOKEN_SHAPE.sub(TOKEN_MASK, text)
