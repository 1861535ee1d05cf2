"""The end of a training log as a person reads it, and what to send a viewer that already has part of it.

Replicate returns a training's whole log with every GET (tens of MB on long runs); a viewer wants the last
couple of hundred lines, each as a terminal would show it (a tqdm bar rewrites its line with carriage
returns; colour codes are noise). Following a running job then means sending only the lines added since
the last read, with enough to tell when that is not possible (the viewer fell behind, the log was
rewritten) and a whole tail must be sent instead. Pure: text in, tuples and dicts out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TAIL_LINES", "LogTail", "log_tail", "log_update"]

TAIL_LINES = 200
_WIDTH = 1000  # characters kept of one line: a log line longer than this is a dump, not something to read
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class LogTail:
    """The last complete lines of a log (oldest first), how many complete lines it has in all, and the
    line still being written (no newline yet), if any."""

    lines: tuple[str, ...]
    total: int
    partial: str | None = None


def _shown(line: str) -> str:
    """One line as a terminal leaves it: the last carriage-return rewrite, no colour codes, one width."""
    if "\r" in line:
        pieces = [p for p in line.split("\r") if p.strip()]
        line = pieces[-1] if pieces else ""
    if "\x1b" in line:
        line = _ANSI.sub("", line)
    line = _CONTROL.sub(" ", line).rstrip()
    return line if len(line) <= _WIDTH else line[: _WIDTH - 1] + "…"


def log_tail(text: str | None, n: int = TAIL_LINES, *, total: int | None = None) -> LogTail:
    """The last `n` lines of `text` (None or "": no log yet). Cost is in the tail, not the log's length,
    apart from one count of its newlines.

    `total`: `text` is the end of a longer log that has this many newlines (it must hold at least `n` + 1
    of them, so that its first, perhaps partial, line is not shown)."""
    if not text:
        return LogTail((), 0, None)
    total = text.count("\n") if total is None else total
    body, _, rest = text.rpartition("\n")
    pieces = body.rsplit("\n", n)[-n:] if total and n > 0 else []
    partial = _shown(rest) if rest else ""
    return LogTail(tuple(_shown(p) for p in pieces), total, partial or None)


def log_update(sent_total: int | None, sent_last: str | None, tail: LogTail) -> dict[str, Any]:
    """What a viewer holding the first `sent_total` lines (the last of them `sent_last`) needs next.

    `{"from": sent_total, "append": [...]}` when `tail` continues what it has (it checks that the line
    it ended on is still there, at the same place), else `{"reset": True, "lines": [...]}`, the whole
    tail. Both carry `total` (complete lines so far) and `partial` (the line being written, or None).
    """
    out: dict[str, Any] = {"total": tail.total, "partial": tail.partial}
    lines: Sequence[str] = tail.lines
    if sent_total is not None and sent_total >= 0:
        new = tail.total - sent_total
        if sent_total == 0 and 0 <= new <= len(lines):
            return {**out, "from": 0, "append": list(lines[len(lines) - new :])}
        if 0 <= new < len(lines) and lines[len(lines) - new - 1] == sent_last:
            return {**out, "from": sent_total, "append": list(lines[len(lines) - new :])}
    return {**out, "reset": True, "lines": list(lines)}
