"""Inline progress from a training log's tail: stage, percent of the run, last line (pure, no I/O).

Real trainer logs are a mix of tqdm redraws (one line per redraw once Replicate captures them, or several
`\\r`-joined in one line), logger lines with timestamps and levels, config dumps, captions, sample prompts
and tracebacks. Several bars share a run: weight downloads, checkpoint shards, captioning, latent caching,
the training bar, validation image generation, evaluation loops. Only the training bar is the run's
progress, so the parser works in steps, one module each:

- `scanner`: reads the tail newest line first and turns lines into events, skipping redraws cheaply;
- `bars` and `messages` (with the data in `patterns`): *recognise* a line, with no trainer-specific
  regexes: a general tqdm bar (`desc: NN%|bar| n/total [elapsed<remaining, rate, postfix]`, description
  optional; also without glyphs, "Epoch 1:  50% 1/2 [...]", of unknown total, "Validation: |  | 0/? [",
  and several redraws glued into one line), Lightning's rich bar, plain `step n/N` / `epoch e/E` lines
  and "step N - loss x", Hugging Face dicts, run totals ("Num Epochs = 4"), *activity statements* (a
  message that starts with "Saving", "Caching", "Running training", "Warming up"... or a logger named for
  the training loop) and the end of a run said in words ("Training has completed.", "max_epochs=10
  reached"), which is 100 %;
- `context`: gives each event its role from what came before (a bar without a description is the phase
  announced last, or the training bar it interrupts...), one handler per event kind;
- `answer`: reads stage, progress and figures from the newest events.

Captures that escape control characters (rsyslog, CloudWatch, SageMaker: CR as "#015", cursor-up as
"#033[A") are decoded before lines are split, so frames are read and the last one is shown.

Only the tail is read: 16 KiB, then chunks four times larger, never more than `MAX_SCAN` characters, and
reading stops as soon as the answer cannot change any more (usually at the last line: a training redraw
settles it). Nothing splits or scans the whole text, so the cost never grows with the log's length.

Values: `stage` is one of `STAGES` or None; `progress` is a percent of the whole run in [0, 100] or None
(Lightning's tqdm bar "Epoch 3: 45%" counts epochs from 0 and is an epoch's share: without an epoch count
in the log, such as "max_epochs: 10", the run's progress is unknown);
`step`/`total_steps` are the run's (for "Epoch e/E" bars: e x batches + n of E x batches); `rate` is in
iterations per second (tqdm's "s/it" inverted); `eta_seconds` is the bar's remaining time; `loss` is the
newest training loss (never eval/val loss), None when it is NaN/inf rather than an older finite value,
and then `loss_nan` is True: a diverged run is told apart from a log without a loss.
"""

from __future__ import annotations

import re

from jobwidget.core.logparse.answer import Result, answer
from jobwidget.core.logparse.bars import last_frame
from jobwidget.core.logparse.context import Context
from jobwidget.core.logparse.events import STAGES, Event
from jobwidget.core.logparse.patterns import ANSI, CTRL
from jobwidget.core.logparse.scanner import Scanner, Stop
from jobwidget.core.results import InlineProgress

__all__ = ["MAX_SCAN", "STAGES", "parse_logs"]

MAX_SCAN = 1 << 20  # characters read back from the end, at most, whatever the log's length
_FIRST_CHUNK = 16 * 1024
_MAX_CARRY = 64 * 1024  # a partial line longer than this is taken as it is (its start is out of reach)
_LAST_LOG_MAX = 80
_STRICT = False  # tests set it to see internal errors instead of the defensive fallback


def parse_logs(text: str | None, *, job_id: str | None = None) -> InlineProgress:
    """Stage, percent of the whole run, last line and training figures from a log's tail.

    Pure and total: any string (or None) gives an `InlineProgress`, never an exception; `progress` is in
    [0, 100] or None; `last_log` is at most 80 characters. Reads at most `MAX_SCAN` characters from the
    end, so a 50 MB log costs what a 1 MB one does.
    """
    if not text:
        return InlineProgress(job_id=job_id, stage=None, last_log=None, progress=None)
    if not isinstance(text, str):  # bytes from a careless caller: decode rather than fail
        try:
            text = bytes(text).decode("utf-8", "replace")
        except Exception:
            text = str(text)
    try:
        return _parse(text, job_id)
    except Exception:  # pragma: no cover - defence in depth: a card must never break on a log line
        if _STRICT:
            raise
        return InlineProgress(job_id=job_id, stage=None, last_log=_last_log_only(text), progress=None)


def _evaluate(events: list[Event]) -> Result:
    context = Context()
    context.read(events)
    return answer(events)


def _parse(text: str, job_id: str | None) -> InlineProgress:
    end = len(text)
    floor = max(0, end - MAX_SCAN)
    pos = end
    carry = ""
    chunk = _FIRST_CHUNK
    scanner = Scanner()
    last_log: str | None = None
    result = Result()
    while pos > floor:
        start = max(floor, pos - chunk)
        piece = text[start:pos] + carry
        if "#0" in piece:
            piece = _decode_escapes(piece)
        if "\x1b" in piece or "\x9b" in piece:
            piece = ANSI.sub("", piece)
        if "\r" in piece:
            piece = piece.replace("\r\n", "\n").replace("\r", "\n")
        lines = piece.split("\n")
        carry = ""
        if start > floor:
            carry = lines[0]  # the chunk starts mid-line: complete it with the next (older) chunk
            lines[0] = ""
            if len(carry) > _MAX_CARRY:  # a line longer than this is taken from where we can see it
                lines[0], carry = carry, ""
        if last_log is None:
            for line in reversed(lines):
                last_log = _clean_last(last_frame(line) if line.count("%|") > 1 else line) if line else None
                if last_log is not None:
                    break
        i = len(lines) - 1
        budget_spent = False
        while i >= 0:
            fed = scanner.feed(lines, i)  # stops early at a line that settles the training figure
            result = _evaluate(scanner.events_chrono())
            if result.settled:
                break
            if fed.stop is Stop.BUDGET:
                budget_spent = True
                break
            i = fed.oldest_read - 1
        pos = start
        if result.settled or budget_spent:
            break
        chunk *= 4
    return InlineProgress(
        job_id=job_id,
        stage=result.stage,
        last_log=last_log,
        progress=result.progress,
        step=result.step,
        total_steps=result.total,
        rate=result.rate,
        eta_seconds=result.eta,
        loss=result.loss,
        loss_nan=result.loss_nan,
    )


def _clean_last(line: str) -> str | None:
    """The line as a card shows it: no control characters, stripped, at most 80 characters."""
    s = line if len(line) <= 4 * _LAST_LOG_MAX else line[: 4 * _LAST_LOG_MAX]
    s = CTRL.sub("", s.replace("\t", " ")).strip()
    if not s:
        return None
    if len(s) > _LAST_LOG_MAX:
        s = s[: _LAST_LOG_MAX - 3] + "..."
    return s


# rsyslog, CloudWatch and SageMaker captures write control characters as "#" and three octal digits. A digit
# right after is taken as the escape's only when it starts a redraw's percent ("#015100%|"), so a literal
# "photo #0151.jpg" stays as it is.
_ESCAPED = re.compile(r"#0(?:15|12|11)(?!\d)|#0(?:15|12)(?=\d{1,3}(?:\.\d{1,3})?%)|#033(?=[\[\]()A-Z])")
_UNESCAPE = {"#015": "\r", "#012": "\n", "#011": "\t", "#033": "\x1b"}


def _decode_escapes(piece: str) -> str:
    """CR written as "#015", ESC as "#033" ("#033[A" is cursor-up): decoded before frames are read."""
    return _ESCAPED.sub(lambda m: _UNESCAPE[m.group(0)], piece)


def _last_log_only(text: str) -> str | None:
    tail = ANSI.sub("", _decode_escapes(text[-_MAX_CARRY:]))
    for line in reversed(re.split(r"\r\n|\r|\n", tail)):
        cleaned = _clean_last(line)
        if cleaned:
            return cleaned
    return None
