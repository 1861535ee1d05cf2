"""Large provider answers off the engine loop: read, joined and decoded in worker threads.

A training body whose `logs` string is huge is decoded without holding the GIL for the whole of it.

`json.loads` is C code that keeps the GIL while it runs: decoding a 50 MB log in a worker thread still
stops the engine loop for about as long. Here the `logs` value is located with fast byte searches and
decoded in slices of about a megabyte (the GIL is handed back between slices), and the rest of the
object is decoded on its own. Anything unexpected falls back to one plain `json.loads`, so the result is
always exactly what `json.loads` gives.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx

__all__ = ["THREAD_BYTES", "decode_large", "loads_training", "read_off_loop"]

_KEY = re.compile(rb'"logs"\s*:\s*"')
_SLICE = 1 << 20


def loads_training(body: bytes, *, slice_bytes: int = _SLICE) -> Any:
    """`json.loads(body)`, with a large top-level `logs` string decoded slice by slice."""
    span = _logs_span(body)
    if span is None:
        return json.loads(body)
    start, end = span
    rest = json.loads(body[:start] + body[end:])  # the object with `"logs": ""`
    if not isinstance(rest, dict) or rest.get("logs") != "":
        return json.loads(body)  # the key found was not the object's own: the plain way
    slice_bytes = max(32, slice_bytes)  # longer than any escape (a surrogate pair is 12 bytes)
    parts: list[str] = []
    at = start  # slices are cut from `body` itself: no 50 MB copy of the string holding the GIL
    while at < end:
        cut = _safe_cut(body, min(end, at + slice_bytes), end)
        if cut <= at:
            return json.loads(body)
        parts.append(json.loads(b'"' + body[at:cut] + b'"'))
        at = cut
    rest["logs"] = "".join(parts)
    return rest


def _logs_span(body: bytes) -> tuple[int, int] | None:
    """(start, end) of the raw `logs` string's content (between its quotes), or None."""
    match = _KEY.search(body, 0, 4096) or _KEY.search(body)
    if match is None:
        return None
    start = pos = match.end()
    while True:
        quote = body.find(b'"', pos)
        if quote < 0:
            return None
        slashes = 0
        while body[quote - 1 - slashes] == 0x5C:  # backslashes right before it
            slashes += 1
        if slashes % 2 == 0:
            return start, quote
        pos = quote + 1


def _safe_cut(raw: bytes, cut: int, end: int) -> int:
    """A cut at or before `cut` (the string ends at `end`) that splits no escape, no UTF-8 character and
    no surrogate pair."""
    if cut >= end:
        return end
    floor = max(0, cut - 16)
    while cut > floor:
        if raw[cut] & 0xC0 != 0x80 and not _in_escape(raw, cut) and not _after_high_surrogate(raw, cut):
            return cut
        cut -= 1
    return -1


def _in_escape(raw: bytes, cut: int) -> bool:
    """Whether `cut` falls inside a backslash escape (`\\n`, `\\uXXXX`)."""
    for back in range(1, 7):
        i = cut - back
        if i < 0:
            return False
        if raw[i] == 0x5C:
            slashes = 1
            while i - slashes >= 0 and raw[i - slashes] == 0x5C:
                slashes += 1
            if slashes % 2 == 0:
                continue  # an escaped backslash: ends there
            width = 6 if i + 1 < len(raw) and raw[i + 1] == 0x75 else 2  # \\uXXXX or \\x
            return cut < i + width
    return False


def _after_high_surrogate(raw: bytes, cut: int) -> bool:
    """Whether a `\\uD800`-`\\uDBFF` escape ends right at `cut` (its low half must stay with it)."""
    head = raw[cut - 6 : cut]
    return len(head) == 6 and head[:2] == b"\\u" and head[2:4].lower() in (b"d8", b"d9", b"da", b"db")


# A successful body larger than this is decoded in a worker thread: a 50 MB log in a GET takes ~100 ms
# to decode, which would stall the engine loop (and the panel, SSE and webhooks it serves) that long.
THREAD_BYTES = 256 * 1024


async def decode_large(response: httpx.Response, *, sliced: bool = False) -> tuple[Any] | Exception | None:
    """A large 2xx body decoded off the loop: (value,), or the decoding error; None for small bodies
    (decoded in place: a thread hop costs more than they do). `sliced`: a training, whose `logs` string
    is decoded in slices so that the thread hands the GIL back to the loop in between (`json_big`)."""
    if not 200 <= response.status_code < 300 or len(response.content) <= THREAD_BYTES:
        return None
    decode = (lambda: loads_training(response.content)) if sliced else response.json
    try:
        return (await asyncio.to_thread(decode),)
    except (ValueError, RecursionError) as exc:  # classified by `_outcome` as for a small body
        return exc


async def read_off_loop(response: httpx.Response) -> httpx.Response:
    """The response with its body read; a large body's chunks are joined in a worker thread.

    httpx joins a body's chunks on the loop: for a 50 MB log that one copy stalls the engine loop (and
    the panel, SSE and webhooks it serves) for ~30 ms. A body known to be small is read as httpx does.
    """
    try:
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) <= THREAD_BYTES:
            await response.aread()
            return response
        chunks = [chunk async for chunk in response.aiter_bytes()]
    finally:
        await response.aclose()
    size = sum(map(len, chunks))
    data = await asyncio.to_thread(b"".join, chunks) if size > THREAD_BYTES else b"".join(chunks)
    # The body is decoded already (gzip undone): a new response that carries it as it is.
    dropped = {"content-encoding", "content-length", "transfer-encoding"}
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in dropped]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=data,
        request=response.request,
        extensions=response.extensions,
    )
