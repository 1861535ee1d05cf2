"""Large provider answers off the engine loop: received in chunks, decoded in a worker thread, and a
training's `logs` string cut to the tail that is read.

The loop must never hold the GIL long, and neither may a worker thread: `json.loads`, `bytes.join` and
`str.join` are C calls that keep the GIL for as long as they run (joining a 50 MB body alone stopped the
loop 35-55 ms, most of it faulting in fresh memory). So a large answer's chunks are never joined into one
body: a training's `logs` string is decoded from them slice by slice (about a megabyte each, the GIL
handed back in between), only its tail is kept (`LongLog`), and the rest of the object is decoded on its
own. Anything unexpected falls back to one plain `json.loads` of the whole body, so the result is always
what `json.loads` gives (with a long log's head left out).
"""

from __future__ import annotations

import asyncio
import json
import json.decoder
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from jobwidget.core.logparse import MAX_SCAN

__all__ = ["THREAD_BYTES", "Answer", "LongLog", "loads_training", "receive"]

# A body larger than this is received in chunks and decoded in a worker thread: a 50 MB log in a GET takes
# ~100 ms to decode, which would stall the engine loop (and the panel, SSE and webhooks it serves) that long.
THREAD_BYTES = 256 * 1024
_SLICE = 1 << 20
_YIELD_BYTES = 1 << 20  # while receiving, the loop is handed back at least this often
_KEY = re.compile(rb'"logs"\s*:\s*"')
_HEAD_BYTES = 1 << 20  # the `logs` key is looked for this far; past it the body is decoded the plain way
# The C decoder of one JSON string (`json.loads` ends in it); typeshed does not declare it.
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.__dict__["scanstring"]


@dataclass(frozen=True, slots=True)
class LongLog:
    """A log too long to keep whole: its last part, and the whole log's length and newline count.

    `tail` holds at least the last `keep_chars` characters and `keep_lines` lines of the log asked for
    (`loads_training`); it starts at a slice boundary, so its first line may be partial."""

    tail: str
    chars: int
    newlines: int


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer as received: status and headers (and the body, unless it was decoded from its
    chunks), its size, and a large 2xx body's decoded value (or why it could not be decoded)."""

    response: httpx.Response
    size: int
    decoded: tuple[Any] | Exception | None = None


async def receive(response: httpx.Response, *, log_lines: int | None = None) -> Answer:
    """Read a streamed response's body without holding the loop.

    A body known to be small is read as httpx does (the caller decodes it). A large one is gathered in
    chunks, handing the loop back every megabyte; a large 2xx body is then decoded in a worker thread and
    not kept (`log_lines`: the answer is a training, its `logs` cut to a tail holding at least that many
    lines and what the log parser reads, see `loads_training`); a large error body is joined there.
    """
    try:
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) <= THREAD_BYTES:
            await response.aread()
            return Answer(response, len(response.content))
        chunks: list[bytes] = []
        size = since_yield = 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            since_yield += len(chunk)
            if since_yield >= _YIELD_BYTES:  # chunks already buffered arrive without a suspension
                since_yield = 0
                await asyncio.sleep(0)
    finally:
        await response.aclose()
    if size <= THREAD_BYTES:
        return Answer(_with_body(response, b"".join(chunks)), size)
    if not 200 <= response.status_code < 300:
        return Answer(_with_body(response, await asyncio.to_thread(b"".join, chunks)), size)
    if log_lines is None:
        decode = lambda: json.loads(b"".join(chunks))  # noqa: E731
    else:
        decode = lambda: loads_training(chunks, keep_chars=MAX_SCAN, keep_lines=log_lines)  # noqa: E731
    try:
        decoded: tuple[Any] | Exception = (await asyncio.to_thread(decode),)
    except (ValueError, RecursionError) as exc:  # classified by the caller as for a small body
        decoded = exc
    return Answer(_with_body(response, b""), size, decoded)


def _with_body(response: httpx.Response, data: bytes) -> httpx.Response:
    """A new response carrying `data` as it is (gzip already undone)."""
    dropped = {"content-encoding", "content-length", "transfer-encoding"}
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in dropped]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=data,
        request=response.request,
        extensions=response.extensions,
    )


# ------------------------------------------------------------------------------------ decoding


def loads_training(
    chunks: Sequence[bytes],
    *,
    keep_chars: int | None = None,
    keep_lines: int = 0,
    slice_bytes: int = _SLICE,
) -> Any:
    """`json.loads` of the body in `chunks`, its top-level `logs` string decoded slice by slice.

    `keep_chars`: keep only the log's tail, at least that many characters and `keep_lines` lines (more
    when the slices fall so); a log that was cut comes as a `LongLog`. None: the whole log, a `str`.
    """
    slice_bytes = max(32, slice_bytes)  # longer than any escape (a surrogate pair is 12 bytes)
    pieces = _pieces(chunks, slice_bytes)
    found = _find_key(pieces)
    if found is None:
        return _plain(chunks)
    prefix, first = found
    log = _LogSlices(keep_chars, keep_lines)
    pending = [first] if first else []
    pending_bytes = len(first)
    suffix: list[bytes] | None = None
    while suffix is None:
        piece = next(pieces, None)
        if piece is not None:
            pending.append(piece)
            pending_bytes += len(piece)
            if pending_bytes < slice_bytes:
                continue
        raw = b"".join(pending)
        cut = len(raw) if piece is None else _safe_cut(raw, len(raw) - 16)
        if cut < 0:
            return _plain(chunks)
        try:
            closing = _decode_slice(raw[:cut], log)
        except ValueError:  # a bad escape, bad UTF-8, a control character: json.loads says which
            return _plain(chunks)
        if closing is not None:  # the string ended in this slice: the rest is the object's remainder
            suffix = [raw[closing:], *pieces]
        elif piece is None:
            return _plain(chunks)  # no closing quote: json.loads says what is wrong
        else:
            pending = [raw[cut:]]
            pending_bytes = len(raw) - cut
    rest = json.loads(prefix + b"".join(suffix))  # the object with `"logs": ""`
    if not isinstance(rest, dict) or rest.get("logs") != "":
        return _plain(chunks)  # the key found was not the object's own: the plain way
    rest["logs"] = log.value()
    return rest


def _plain(chunks: Sequence[bytes]) -> Any:
    return json.loads(b"".join(chunks))


def _pieces(chunks: Sequence[bytes], size: int) -> Iterator[bytes]:
    """The body's bytes in order, in pieces of at most `size`."""
    for chunk in chunks:
        for at in range(0, len(chunk), size):
            yield chunk[at : at + size] if len(chunk) > size else chunk


def _find_key(pieces: Iterator[bytes]) -> tuple[bytes, bytes] | None:
    """(the body up to and with the `logs` string's opening quote, what follows it in the same piece),
    or None if the key is not within the first `_HEAD_BYTES`."""
    head = b""
    for piece in pieces:
        start = max(0, len(head) - 64)  # a key split across two pieces
        head += piece
        match = _KEY.search(head, start)
        if match is not None:
            return head[: match.end()], head[match.end() :]
        if len(head) > _HEAD_BYTES:
            return None
    return None


def _decode_slice(raw: bytes, log: _LogSlices) -> int | None:
    """Decode `raw`, the next stretch of the `logs` string's content, into `log`; if the string's closing
    quote is in it, decode up to there and return the quote's byte offset in `raw`."""
    text = (raw + b'"').decode("utf-8", "surrogatepass")  # as json.loads reads bytes
    value, end = _scanstring(text, 0, True)  # stops at the first quote not escaped: ours, or the string's
    log.add(value)
    if end == len(text):
        return None
    return len(text[: end - 1].encode("utf-8", "surrogatepass"))


class _LogSlices:
    """The decoded slices of a log, the oldest dropped once the rest hold what is to be kept."""

    def __init__(self, keep_chars: int | None, keep_lines: int) -> None:
        self._keep_chars = keep_chars
        self._keep_lines = keep_lines
        self._parts: deque[tuple[str, int]] = deque()
        self._kept_chars = self._kept_lines = 0
        self.chars = self.newlines = 0

    def add(self, text: str) -> None:
        lines = text.count("\n")
        self.chars += len(text)
        self.newlines += lines
        if self._keep_chars is None:
            self._parts.append((text, lines))
            return
        self._parts.append((text, lines))
        self._kept_chars += len(text)
        self._kept_lines += lines
        while len(self._parts) > 1:
            first, first_lines = self._parts[0]
            if self._kept_chars - len(first) < self._keep_chars:
                break
            if self._kept_lines - first_lines <= self._keep_lines:  # one newline more: whole lines
                break
            self._parts.popleft()
            self._kept_chars -= len(first)
            self._kept_lines -= first_lines

    def value(self) -> str | LongLog:
        tail = "".join(text for text, _ in self._parts)
        return tail if len(tail) == self.chars else LongLog(tail, self.chars, self.newlines)


def _safe_cut(raw: bytes, cut: int) -> int:
    """A cut at or before `cut` that splits no escape, no UTF-8 character and no surrogate pair."""
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
