"""JSON parsing with a depth bound checked before the parser runs (pure, no I/O).

Python's parser recurses once per nesting level: a 100,000-deep body raises RecursionError from deep in
the interpreter (a 500 with a traceback, before this). Bodies are size-capped where they are read; depth
is bounded here, on a skeleton of the brackets outside strings, built and reduced with C-speed regex and
`bytes.translate`, so the check costs a few passes over the bytes, never a Python loop per character.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "JsonLimitError", "check_depth", "loads_bounded"]

MAX_DEPTH = 64  # a training object nests 4 levels; user inputs and outputs a few more

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")


class JsonLimitError(ValueError):
    """The text is not JSON jobwidget will parse (too deep, or not JSON at all); the message says which."""


def check_depth(raw: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Raise `JsonLimitError` if brackets outside strings nest deeper than `max_depth`."""
    skeleton = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    for _ in range(max_depth):
        if not skeleton:
            return
        reduced = _EMPTY_PAIR.sub(b"", skeleton)  # one pass removes the innermost level everywhere
        if len(reduced) == len(skeleton):
            return  # brackets that do not pair up: not JSON, and the parser will say where
        skeleton = reduced
    if skeleton:
        raise JsonLimitError(f"the JSON nests deeper than {max_depth} levels")


def loads_bounded(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` after `check_depth`; every failure is a `JsonLimitError` with a clear message."""
    check_depth(raw, max_depth)
    try:
        return json.loads(raw)
    except RecursionError:  # defence in depth: the check above should make this unreachable
        raise JsonLimitError(f"the JSON nests deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise JsonLimitError("the body is not UTF-8 text") from None
    except ValueError as exc:
        raise JsonLimitError(f"the body is not JSON ({exc})") from None
