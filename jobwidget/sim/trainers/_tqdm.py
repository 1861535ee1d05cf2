"""tqdm's progress line, rendered the way Replicate captures it (non-tty, 10-character bar, stripped).

Written out rather than calling tqdm: a script prints hundreds of redraws at chosen instants with a
chosen remaining time, and tqdm would read the real clock.
"""

from __future__ import annotations

__all__ = ["tqdm_line"]

_BLOCKS = " ▏▎▍▌▋▊▉█"
# The 10-character bar for each eighth of a cell: tqdm's rendering, precomputed (81 states).
_BARS = tuple(
    "█" * (k // 8) + (_BLOCKS[k % 8] + " " * (10 - k // 8 - 1) if k < 80 else "") for k in range(81)
)
_INTERVALS: dict[int, str] = {}


def _interval(seconds: float) -> str:
    """tqdm's format_interval: MM:SS, or H:MM:SS past an hour (memoized: bars repeat them a lot)."""
    whole = int(seconds) if seconds > 0 else 0
    text = _INTERVALS.get(whole)
    if text is None:
        mins, s = divmod(whole, 60)
        h, m = divmod(mins, 60)
        text = f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
        if len(_INTERVALS) < 200_000:
            _INTERVALS[whole] = text
    return text


def _sizeof(num: float) -> str:
    """tqdm's format_sizeof (SI, divisor 1000)."""
    for unit in ("", "k", "M", "G", "T"):
        if abs(num) < 999.5:
            if abs(num) < 99.95:
                if abs(num) < 9.995:
                    return f"{num:1.2f}{unit}"
                return f"{num:2.1f}{unit}"
            return f"{num:3.0f}{unit}"
        num /= 1000
    return f"{num:3.1f}P"


def tqdm_line(
    desc: str,
    n: int,
    total: int,
    elapsed: float,
    *,
    postfix: str = "",
    unit: str = "it",
    unit_scale: bool = False,
    remaining: float | None = None,
) -> str:
    """One tqdm redraw as Replicate captures it (non-tty: 10-character bar, line stripped).

    `remaining` (seconds) replaces tqdm's own estimate, `(total - n) / rate`, when the caller knows better.
    """
    frac = n / total if total else 0.0
    bar = _BARS[min(80, int(frac * 80))]
    if n <= 0 or elapsed <= 0:
        times = f"{_interval(elapsed)}<?, ?{unit}/s"
    else:
        rate = n / elapsed
        if unit_scale:
            rate_s = f"{_sizeof(rate)}{unit}/s"
        elif rate >= 1:
            rate_s = f"{rate:5.2f}{unit}/s"
        else:
            rate_s = f"{1 / rate:5.2f}s/{unit}"
        left = (total - n) / rate if remaining is None else remaining
        times = f"{_interval(elapsed)}<{_interval(left)}, {rate_s}"
    counts = f"{_sizeof(n)}/{_sizeof(total)}" if unit_scale else f"{n}/{total}"
    pct = f"{frac * 100:3.0f}%"
    if postfix:
        times = f"{times}, {postfix}"
    if desc:
        return f"{desc}: {pct}|{bar}| {counts} [{times}]"
    return f"{pct}|{bar}| {counts} [{times}]".lstrip()
