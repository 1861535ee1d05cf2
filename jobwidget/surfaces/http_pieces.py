"""A large JSON answer built and sent in pieces, so that neither building nor sending it holds the loop.

Joining and encoding a 5,000-row answer (megabytes) in one piece held the GIL for tens of milliseconds
even from a worker thread, and handing it to the server in one message made the loop copy it whole. Here
the rows are joined into pieces of about `PIECE_BYTES` (built in a thread, one row at a time), and the
response sends them one message each, handing the loop back in between. The bytes are the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["PIECE_BYTES", "PiecesResponse", "json_list_pieces"]

PIECE_BYTES = 256 * 1024


def json_list_pieces(key: str, items: Iterable[str], rest: str, *, piece: int = PIECE_BYTES) -> list[bytes]:
    """`{"<key>":[item,item,...],<rest>` (`rest`: a JSON object's members and its closing brace) as
    UTF-8 pieces of about `piece` bytes; each item is one JSON value's text."""
    out: list[bytes] = []
    buffer: list[str] = [f'{{"{key}":[']
    size = 0
    for i, item in enumerate(items):
        if i:
            buffer.append(",")
        buffer.append(item)
        size += len(item)
        if size >= piece:
            out.append("".join(buffer).encode())
            buffer, size = [], 0
    buffer.append(f"],{rest}")
    out.append("".join(buffer).encode())
    return out


class PiecesResponse(Response):
    """A response whose body is `pieces`, sent one message each (with the whole length announced)."""

    def __init__(self, pieces: list[bytes], *, media_type: str = "application/json") -> None:
        self.pieces = pieces
        length = sum(len(p) for p in pieces)
        super().__init__(None, media_type=media_type, headers={"content-length": str(length)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        for i, piece in enumerate(self.pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": i < len(self.pieces) - 1})
            await asyncio.sleep(0)  # the loop serves others between pieces
