"""The `parse_logs` tables' plumbing: a case, how a card shows a line, fixture cuts, tqdm redraws and the
log-line shapes of the trainers (built from their format strings; every value in them is invented).

Shared by the fixture table (test_logparse.py) and the trainer-family tables (test_logparse_phases.py,
test_logparse_captures.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobwidget.core.logparse import parse_logs
from jobwidget.core.results import InlineProgress

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
PRE, WARMUP, TRAIN, VAL, SAVE = "Preprocessing", "Warmup", "Training", "Validation", "Saving checkpoint"
LAST = object()  # expected last_log: the line the cut ends on, as a card shows it

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Case:
    id: str
    text: str | None
    stage: str | None
    progress: float | None
    last_log: object = LAST
    src: str = ""  # where the shape comes from: the trainer's source / format string, or a public thread


def fixture(name: str) -> str:
    """A fixture log exactly as stored (CR and CRLF kept)."""
    with open(FIXTURES / name, encoding="utf-8", newline="") as f:
        return f.read()


def upto(name: str, needle: str, nth: int = 1) -> str:
    """The log as it stood right after the redraw/line holding the nth `needle`."""
    text = fixture(name)
    at = -1
    for _ in range(nth):
        at = text.index(needle, at + 1)
    end = re.compile(r"[\r\n\x1b]").search(text, at + len(needle))
    return text[: end.start() if end else len(text)]


def card(line: str) -> str:
    """What the card shows for a raw line: no ANSI, stripped, 80 characters at most."""
    s = _ANSI.sub("", line).strip()
    return s if len(s) <= 80 else s[:77] + "..."


def last_segment(text: str) -> str:
    return [s for s in re.split(r"\r\n|\r|\n", _ANSI.sub("", text)) if s.strip()][-1]


def check(case: Case) -> None:
    """The card `parse_logs` gives for the case's log is the one the case states."""
    got = parse_logs(case.text, job_id="job-1")
    assert isinstance(got, InlineProgress)
    assert got.job_id == "job-1"
    assert got.stage == case.stage
    if case.progress is None:
        assert got.progress is None
    else:
        assert got.progress is not None
        assert got.progress == pytest.approx(case.progress, abs=0.01)
    expected_last = card(last_segment(case.text or "")) if case.last_log is LAST else case.last_log
    assert got.last_log == expected_last


# -------------------------------------------------------------------------------------- tqdm redraws
_GLYPHS = " ▏▎▍▌▋▊▉█"  # tqdm's Bar.UTF charset


def _interval(seconds: float) -> str:
    """`tqdm.format_interval`: "MM:SS", or "H:MM:SS" from an hour."""
    mins, s = divmod(int(seconds), 60)
    h, m = divmod(mins, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def tq(
    n: int,
    total: int,
    elapsed: float,
    rate: float | None,
    desc: str = "",
    postfix: str = "",
    *,
    glyphs: bool = True,
    unit: str = "it",
) -> str:
    """One redraw as `tqdm.format_meter` renders it with the default layout.

    `l_bar = "{desc}: {percentage:3.0f}%|"`, a 10-cell bar of `Bar.UTF`, `r_bar = "| {n_fmt}/{total_fmt}
    [{elapsed}<{remaining}, {rate_fmt}{postfix}]"` where the rate is "s/it" once an iteration takes more
    than a second; with `glyphs=False` the `ncols=0` form `l_bar[:-1] + r_bar[1:]` (no bar at all).
    """
    frac = n / total
    l_bar = (f"{desc}: " if desc else "") + f"{100 * frac:3.0f}%|"
    full, part = divmod(int(frac * 10 * 8), 8)
    bar = _GLYPHS[-1] * full + (_GLYPHS[part] + " " * (10 - full - 1) if full < 10 else "")
    if rate:
        inv = 1 / rate
        rate_fmt = f"{inv:5.2f}s/{unit}" if inv > 1 else f"{rate:5.2f}{unit}/s"
        remaining = _interval((total - n) / rate)
    else:
        rate_fmt, remaining = f"?{unit}/s", "?"
    post = f", {postfix}" if postfix else ""
    r_bar = f"| {n}/{total} [{_interval(elapsed)}<{remaining}, {rate_fmt}{post}]"
    return l_bar[:-1] + r_bar[1:] if not glyphs else l_bar + bar + r_bar


# ------------------------------------------------------------------------------- log-line builders


def lines(*parts: str) -> str:
    """A Replicate-style capture: one line per print or redraw."""
    return "\n".join(parts) + "\n"


def glued(*frames: str) -> str:
    """Redraws of one bar in a capture that dropped the carriage returns between them."""
    return "".join(frames)


def hf(line_no: int, message: str, file: str = "trainer.py") -> str:
    """transformers' explicit logging format: `[%(levelname)s|%(filename)s:%(lineno)s] %(asctime)s >>`."""
    return f"[INFO|{file}:{line_no}] 2024-06-01 12:00:00,308 >> {message}"


def st_debug(message: str, logger: str = "training-loop") -> str:
    """SimpleTuner's debug.log: `[RANK 0] %(asctime)s [%(levelname)s] (%(name)s) %(message)s`."""
    return f"[RANK 0] 2024-06-01 12:00:00,123 [DEBUG] ({logger}) {message}"


def kohya(message: str, where: str) -> str:
    """kohya's rich logger layout: time, level, message, then file:line at the right margin."""
    return f"2024-10-05 14:02:28 INFO     {message:<60} {where}"


# ai-toolkit's block quantization loop, `tqdm(all_blocks)` over 57 blocks, redraw by redraw
QUANT = [tq(n, 57, n / 2.93, 2.93 if n else None) for n in (0, 1, 14, 29, 43, 57)]
SHARDS = "Loading checkpoint shards: 100%|██████████| 2/2 [00:03<00:00,  1.55s/it]"
HF_HEADER = [
    hf(2414, "***** Running training *****"),
    hf(2415, "  Num examples = 1,200"),
    hf(2416, "  Num Epochs = 3"),
    hf(2417, "  Instantaneous batch size per device = 2"),
    hf(2421, "  Gradient Accumulation steps = 4"),
    hf(2422, "  Total optimization steps = 450"),
    hf(2423, "  Number of trainable parameters = 4,194,304"),
]
HF_DICT = "{{'loss': {loss}, 'grad_norm': 0.6512, 'learning_rate': 3.1e-05, 'epoch': {epoch}}}"
ST_BAR = "Epoch {e}/25, Steps"
LT_EPOCH = "Epoch {e}"
