"""The tail scanner: lines, newest first, into events; consecutive redraws of one bar become one event.

Redraws of the bar already being read are recognised with two substring tests (same description, same
total) and skipped, so a long validation phase that hides the last training redraw costs little per
line. Plain text is the costly kind of line, so it has a budget: once spent, what is older cannot matter.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from jobwidget.core.logparse.bars import bar_progress, frame_n, plain_bar_event, rich_event, tqdm_event
from jobwidget.core.logparse.events import BAR, FIGURE, Event
from jobwidget.core.logparse.messages import text_event
from jobwidget.core.logparse.patterns import PCT0

TEXT_BUDGET = 64 * 1024  # plain text read back at most (bar redraws, cheap to skip, are not counted)


class Stop(Enum):
    """Why `Scanner.feed` returned."""

    DONE = "done"  # every line given was read
    SETTLING = "settling"  # a line that may settle the answer on its own was read; older lines wait
    BUDGET = "budget"  # the plain-text budget is spent: stop reading older text


class Fed(NamedTuple):
    stop: Stop
    oldest_read: int  # index of the oldest line read (with SETTLING, reading resumes just above it)


class Scanner:
    """Turns lines, newest first, into events (kept newest first) across the chunks of a tail."""

    __slots__ = ("events", "head", "oldest", "recent", "run", "tail", "text_left")

    def __init__(self) -> None:
        self.text_left = TEXT_BUDGET  # characters of plain text lines still to read (the costly ones)
        self.events: list[Event] = []  # newest first
        self.recent: list[Event] = []  # the last bars parsed, whose redraws are copied rather than parsed
        self.run: Event | None = None  # the bar whose older redraws are being skipped
        self.head = ""  # its description part ("steps:"), "" without one
        self.tail = ""  # its "/total " part
        self.oldest = ""  # its oldest redraw seen so far

    def events_chrono(self) -> list[Event]:
        """The events so far, oldest first, with where each description-less bar started filled in."""
        run = self.run
        if run is not None:
            run.oldest = self.oldest
            run.n0 = None
        for ev in self.events:  # where a bar without description started matters to its meaning
            if ev.n0 is None and ev.kind is BAR and not ev.dcls:
                ev.n0 = ev.n if ev.oldest is ev.line else frame_n(ev.oldest, first=True)
        return self.events[::-1]

    def feed(self, lines: list[str], i: int) -> Fed:
        """Read `lines[i]`, `lines[i-1]`, ... (newest first).

        Stops right after a line that settles the run's progress on its own (a described training bar,
        a "step n/N" line), so a log whose last line is a training redraw costs one line.
        """
        events = self.events
        run, head, tail, oldest = self.run, self.head, self.tail, self.oldest
        recent = self.recent
        for j in range(i, -1, -1):
            line = lines[j]
            if not line:
                continue
            if run is not None:
                if head:
                    if line.startswith(head) and tail in line:
                        oldest = line  # an older redraw of the same bar
                        continue
                elif tail in line and line[0] in PCT0 and ("%|" in line or (run.plain and " [" in line)):
                    oldest = line
                    continue
                run.oldest = oldest
                run = None
            if line.isspace():
                continue
            ev = None
            fresh = False
            if "%|" in line:
                if line.endswith("]"):
                    for known in recent:
                        if (
                            line.startswith(known.head)
                            and known.tail in line
                            and (known.head or line[0] in PCT0)
                        ):
                            # a redraw of a bar parsed lately (bars taking turns: an image loop and its
                            # sampler): same description and total, only the count differs
                            ev = known.copy_as_redraw(line, frame_n(line))
                            break
                if ev is None:
                    ev = tqdm_event(line)
                    fresh = ev is not None
                    if ev is not None:
                        recent.insert(0, ev)
                        del recent[4:]
            elif " [" in line and "/" in line and ("% " in line or "| " in line):
                ev = plain_bar_event(line)
                fresh = ev is not None
            if ev is not None:
                if fresh:
                    after = text_after_bar(ev.line)
                    if after is not None:  # "...it/s]03/03/2025 - INFO - Saving ...": newer than the bar
                        events.append(after)
                events.append(ev)
                if fresh and ev.line is not line and not ev.desc:
                    before = glued_message(line)
                    if before is not None:  # " - quantizing 57 blocks  0%|...": older than the bar
                        events.append(before)
                run, oldest, head, tail = ev, line, ev.head, ev.tail
                ev.oldest = oldest
                if ev.dcls == "train" and bar_progress(ev) is not None and not _almost_done(ev):
                    self._save(run, head, tail, oldest)
                    return Fed(Stop.SETTLING, j)
                continue
            ev = rich_event(line) if "•" in line and "/" in line else None
            if ev is not None:
                ev.oldest = ev.line
            else:
                self.text_left -= len(line)
                if self.text_left < 0:  # pages of captions, prompts or prose: what is older cannot matter
                    self._save(run, head, tail, oldest)
                    return Fed(Stop.BUDGET, j)
                ev = text_event(line)
                if ev is None:
                    continue
            events.append(ev)
            if (ev.kind is FIGURE and ev.total is not None) or (
                ev.kind is BAR and ev.dcls == "train" and bar_progress(ev) is not None
            ):
                self._save(run, head, tail, oldest)
                return Fed(Stop.SETTLING, j)
        self._save(run, head, tail, oldest)
        return Fed(Stop.DONE, 0)

    def _save(self, run: Event | None, head: str, tail: str, oldest: str) -> None:
        self.run, self.head, self.tail, self.oldest = run, head, tail, oldest


def text_after_bar(line: str) -> Event | None:
    """A log line printed right after a redraw, with no line break in between."""
    if line.endswith("]"):
        return None
    close = line.rfind("]")
    if close < 0 or close + 4 >= len(line) or "%|" in line[close:]:
        return None
    rest = line[close + 1 :].strip()
    return text_event(rest) if len(rest) > 3 else None


def glued_message(line: str) -> Event | None:
    """A log line that a capture glued to the first of the redraws that follow it."""
    p = line.find("%|")
    k = p
    while k > 0 and line[k - 1] in "0123456789. ":
        k -= 1
    text = line[:k].strip() if k > 0 else ""
    return text_event(text) if len(text) > 3 else None


def _almost_done(ev: Event) -> bool:
    """A redraw one step short of its total ("999/1000", tqdm shows 100%): a run said over in words
    just before it is finished, so it cannot settle the answer on its own."""
    n, total = ev.n, ev.total
    return n is not None and total is not None and total * 0.99 <= n < total
