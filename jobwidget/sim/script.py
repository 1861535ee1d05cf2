"""Realistic, deterministic training logs for the simulated Replicate (pure: no I/O, no clock).

A training's log is a *script*: every line it will ever print, each stamped with the nominal second
(since the run started) at which it appears. The log a GET returns at elapsed time `t` is the prefix of
the script up to `t`, so it only ever grows, and serving it is a bisect plus a string slice: cheap enough
for thousands of GETs. Scripts are built once per training from a `LogPlan` (seeded), in its trainer's
own format (each style's renderer, `trainers/`), the way Replicate captures them: one line per tqdm
redraw, indentation stripped, blank lines dropped, and sometimes several `\\r`-joined redraws in one
line (newer runtimes).

The timestamps inside the lines (tqdm elapsed/remaining, logger prefixes) come from a `wall_at`
callable that maps nominal seconds to wall-clock epoch seconds, so a compressed run's bars show the
real elapsed time. The training bar's remaining time is when the run will really complete (validation
passes, saves and the final save included), so a log's ETA agrees with the status flip it predicts.
When the pace changes mid-run (the simulator's `time_scale` knob), the script is rebuilt for the new
pace and spliced onto what was already printed (`Script.spliced`), so a log still only ever grows.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobwidget.sim.failures import traceback_lines
from jobwidget.sim.plan import LogPlan
from jobwidget.sim.trainers import LineSink, LogContext, WallAt, style_or_default

if TYPE_CHECKING:
    from jobwidget.sim.timeline import TimeMap
    from jobwidget.sim.training import Training

__all__ = ["Script", "ScriptCache", "build_script"]


@dataclass(frozen=True, slots=True)
class Script:
    """All of a training's log lines with the nominal second each appears; `text_at(t)` is the log."""

    times: list[float]
    text: str
    ends: list[int]  # offset just past line i (its trailing newline included)

    def text_at(self, t: float) -> str | None:
        """The accumulated log at nominal second `t`; None before the first line (as Replicate)."""
        k = bisect_right(self.times, t)
        return self.text[: self.ends[k - 1]] if k else None

    @property
    def lines(self) -> int:
        return len(self.times)

    def spliced(self, newer: Script, t: float) -> Script:
        """This script's lines up to `t`, then `newer`'s: a log re-timed mid-run keeps what it printed.

        Both must come from the same plan (the same lines at the same nominal seconds).
        """
        k = bisect_right(self.times, t)
        if k == 0 or len(newer.times) != len(self.times):
            return newer
        cut_old, cut_new = self.ends[k - 1], newer.ends[k - 1]
        shift = cut_old - cut_new
        return Script(
            newer.times,
            self.text[:cut_old] + newer.text[cut_new:],
            self.ends[:k] + [e + shift for e in newer.ends[k:]],
        )


def _identity(t: float) -> float:
    return t


def build_script(plan: LogPlan, wall_at: WallAt | None = None) -> Script:
    """The whole log of `plan` (up to its failure and traceback, if it fails), line by line.

    `wall_at(t)` gives the wall-clock epoch seconds of nominal second `t` of the run; it only affects
    the timestamps printed inside lines. Deterministic for a given plan and `wall_at`.
    """
    wall = wall_at or _identity
    out = LineSink(plan.cr_chunk)
    ctx = LogContext(plan=plan, out=out, rng=random.Random(plan.seed), wall_at=wall)
    style_or_default(plan.style).render(ctx)
    out.flush()
    times, lines = out.times, out.lines
    fail_t = plan.fail_time()
    if fail_t is not None:
        k = bisect_right(times, fail_t)
        times, lines = times[:k], lines[:k]
        tb = traceback_lines(plan)
        times.extend([fail_t] * len(tb))
        lines.extend(tb)
    # The container prints nothing for its first second or two (so a just-started run has logs: null),
    # and nothing after the run's end: the log is complete once the run is.
    lead = min(2.0, plan.download_s * 0.05)
    end = plan.duration if fail_t is None else fail_t
    times = [min(max(t, lead), end) for t in times]
    ends: list[int] = []
    pos = 0
    for s in lines:
        pos += len(s) + 1
        ends.append(pos)
    text = "\n".join(lines) + "\n" if lines else ""
    return Script(times=times, text=text, ends=ends)


Finish = Callable[["Script", "Training"], "Script"]


class ScriptCache:
    """Trainings' scripts, built on first use and kept in a small LRU (polled running jobs and recently
    read ones), per pace: a run re-timed mid-way keeps what it printed at the old pace."""

    def __init__(self, size: int, finish: Finish | None = None) -> None:
        self.size = size
        self._finish = finish  # what becomes of a built script (a run-health fault rewrites it)
        self._scripts: OrderedDict[tuple[str, int], Script] = OrderedDict()

    def get(self, tr: Training, tm: TimeMap) -> Script:
        """`tr`'s whole log script on the time map `tm`."""
        past = tr.end_v <= tm.t0  # lies entirely before the start: timestamps are nominal
        key = (tr.id, -1 if past else tm.version)
        script = self._scripts.get(key)
        if script is not None:
            self._scripts.move_to_end(key)
            return script
        started = tr.started_v
        script = build_script(tr.plan, lambda t: tm.wall(started + t))
        if self._finish is not None:
            script = self._finish(script, tr)
        older = None if past else self._scripts.get((tr.id, tm.version - 1))
        if older is not None:  # re-timed mid-run: what it printed at the old pace stays as printed
            script = older.spliced(script, tm.last_change - started)
        self._scripts[key] = script
        if len(self._scripts) > self.size:
            self._scripts.popitem(last=False)
        return script
