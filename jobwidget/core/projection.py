"""Projections, pure: when a running training will finish and what it will have cost then.

A run's time left is three parts, each measured where it can be:

- **Stepping**: the steps left at the pure step rate, measured over the recent half of the training
  span (at least 10 min, or all of it) with the validation and save pauses seen in that window taken
  out: long enough to be steady instead of following each tqdm frame.
- **Pauses to come**: trainers validate and save every N steps (or every epoch), and the log parser
  tells those phases apart (stage "Validation" / "Saving checkpoint"). Each read in such a phase adds the
  time since the previous read to that pause (`Pace`, which also gives back what a late log hid: see
  `note_read`). What is still to come is expected at the mean pause length over the cadence, the mean
  steps between pauses, taken as at least what this run has shown without pausing again (`_cadence`).
  Before the run's first pause: the cadence and length its trainer's earlier runs had, until the run
  has gone past the step where they paused first (then it does not pause like them).
- **Tail**: what follows the last step (the final save, packaging, upload, shutdown), which no step
  rate can see. The median of the trainer's earlier runs (`RunProfile.tail_s`); none without them.

Earlier runs (`Prior.of`) are the trainer's recent *succeeded* runs the engine watched, each reduced to
a `RunProfile` when it ended (the engine picks them: engine/health.py). Without any the projection is the
run's own evidence alone. No projection without enough evidence (see `project`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from jobwidget.core.health import Sample
from jobwidget.core.logparse.events import SAVE, VAL

__all__ = [
    "PAUSE_STAGES",
    "Pace",
    "Prior",
    "Projection",
    "RunProfile",
    "learn",
    "note_read",
    "project",
]

PAUSE_STAGES = frozenset({VAL, SAVE})  # phases that stop the step counter mid-run
_MIN_SAMPLES = 4  # projections: distinct training reads in the window...
_MIN_SPAN_S = 20.0  # ...spanning at least this long...
_MIN_PROGRESS = 0.02  # ...and this share of the run's steps
_WINDOW_FLOOR_S = 600.0  # the rate window is the recent half of the training span, at least this long
_PAUSES_KEPT = 24  # pauses a job keeps one by one (older neighbours are merged): the window needs them
_MAX_READ_GAP_S = 300.0  # a pause read this long after the one before says nothing about its length
_MIN_STEPPING = 0.1  # below this share of the window spent stepping, pauses are not taken out


# ------------------------------------------------------------------------------------- pauses


@dataclass(frozen=True, slots=True)
class Pace:
    """A running job's pauses so far (validation passes, checkpoint saves), from its progress reads.

    `recent` holds the newest pauses as (step, from, to, seconds): the rate window takes out those it
    overlaps. Past `_PAUSES_KEPT` the two oldest are merged (their seconds summed over their joint span).
    `stepping_s` and `stepped` are the time between reads spent training and the steps made in it.
    """

    read_at: float | None = None  # the previous read: a pause read counts the time since
    read_step: int | None = None  # the step it showed
    paused_s: float = 0.0
    pauses: int = 0
    pause_step: int = 0  # the step of the newest pause
    recent: tuple[tuple[int, float, float, float], ...] = ()
    stepping_s: float = 0.0
    stepped: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "read_at": self.read_at,
            "read_step": self.read_step,
            "paused_s": round(self.paused_s, 3),
            "pauses": self.pauses,
            "pause_step": self.pause_step,
            "recent": [[s, round(a, 3), round(b, 3), round(x, 3)] for s, a, b, x in self.recent],
            "stepping_s": round(self.stepping_s, 3),
            "stepped": self.stepped,
        }

    @classmethod
    def from_json(cls, data: object) -> Pace:
        """From `to_json`'s dict; anything malformed reads as no pauses seen (never an error)."""
        if not isinstance(data, Mapping):
            return cls()
        try:
            read_at, read_step = data.get("read_at"), data.get("read_step")
            recent = tuple((int(s), float(a), float(b), float(x)) for s, a, b, x in data.get("recent") or ())
            pace = cls(
                read_at=None if read_at is None else float(read_at),
                read_step=None if read_step is None else int(read_step),
                paused_s=float(data.get("paused_s") or 0.0),
                pauses=int(data.get("pauses") or 0),
                pause_step=int(data.get("pause_step") or 0),
                recent=recent,
                stepping_s=float(data.get("stepping_s") or 0.0),
                stepped=int(data.get("stepped") or 0),
            )
        except (TypeError, ValueError):
            return cls()
        numbers = (pace.paused_s, pace.stepping_s, *(x for r in recent for x in r[1:]))
        if not all(math.isfinite(x) and x >= 0 for x in numbers) or pace.pauses < 0 or pace.stepped < 0:
            return cls()
        return pace

    def within(self, since: float) -> float:
        """Seconds of pause after `since` (a merged or straddling pause counts pro rata)."""
        total = 0.0
        for _, a, b, seconds in self.recent:
            if b <= since:
                continue
            total += seconds if a >= since or b <= a else seconds * (b - since) / (b - a)
        return total


def note_read(pace: Pace, t: float, step: int | None, total: int | None, stage: str | None) -> Pace:
    """`pace` after a progress read at `t`.

    Between the first and the last step, a read in a pause phase adds the time since the previous read
    to the pause at that step; any other read adds it to the time spent training. A log shows the end
    of a pause late (training bars are redrawn every few steps, and often printed in batches), so the
    first read after one may show more steps than the time since the previous read allows at the run's
    pace so far: the difference goes back from that pause to training.
    """
    prev, prev_step = pace.read_at, pace.read_step
    if prev is not None and t <= prev:
        return pace  # a late or repeated answer
    pace = replace(pace, read_at=t, read_step=step)
    if prev is None or t - prev > _MAX_READ_GAP_S or step is None or total is None or not prev_step:
        return pace  # nothing to compare with, or no training yet
    gap = t - prev
    recent = list(pace.recent)
    if stage in PAUSE_STAGES and 0 < step < total:
        pauses = pace.pauses
        if recent and recent[-1][0] == step and recent[-1][2] == prev:
            s, a, _, seconds = recent[-1]
            recent[-1] = (s, a, t, seconds + gap)  # the same pause, read again
        else:
            recent.append((step, prev, t, gap))
            pauses += 1
        if len(recent) > _PAUSES_KEPT:
            (_, a, _, x), (s, _, b, y) = recent[0], recent[1]
            recent[:2] = [(s, a, b, x + y)]
        return replace(
            pace, paused_s=pace.paused_s + gap, pauses=pauses, pause_step=step, recent=tuple(recent)
        )
    if prev_step >= total or step < prev_step:
        return pace  # past the last step (saving, uploading), or a log read out of order
    moved = step - prev_step
    paused_s = pace.paused_s
    if moved and recent and recent[-1][2] == prev and pace.stepped:
        excess = min(moved * pace.stepping_s / pace.stepped - gap, recent[-1][3])
        if excess > 0:  # the pause ended before the log said so
            s, a, b, seconds = recent[-1]
            recent[-1] = (s, a, b, seconds - excess)
            paused_s -= excess
            gap += excess
    return replace(
        pace,
        paused_s=paused_s,
        recent=tuple(recent),
        stepping_s=pace.stepping_s + gap,
        stepped=pace.stepped + min(moved, total - prev_step),
    )


# ----------------------------------------------------------------------------- earlier runs


@dataclass(frozen=True, slots=True)
class RunProfile:
    """What one succeeded run of a trainer tells about the next: its tail after the last step, and its
    pauses (mean length and mean steps apart; `pause_s` 0 and `pause_every` None: it never paused;
    `pause_s` None: its pauses were not watched)."""

    tail_s: float | None = None
    pause_s: float | None = None
    pause_every: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "tail_s": _round(self.tail_s),
            "pause_s": _round(self.pause_s),
            "pause_every": _round(self.pause_every),
        }

    @classmethod
    def from_json(cls, data: object) -> RunProfile | None:
        if not isinstance(data, Mapping):
            return None
        values = [data.get(k) for k in ("tail_s", "pause_s", "pause_every")]
        if not all(v is None or (_finite(v) and v >= 0) for v in values):
            return None
        tail, pause, every = (None if v is None else float(v) for v in values)
        return cls(tail, pause, every if every else None)


def learn(history: Sequence[Sample], pace: Pace | None, completed_at: float) -> RunProfile:
    """The profile of a run that succeeded at `completed_at`, from its history and its pauses."""
    tail: float | None = None
    reads = _reads(history)
    last_step_at = _last_step_at(reads, completed_at)
    if last_step_at is not None:
        tail = max(0.0, completed_at - last_step_at)
    if pace is None:
        return RunProfile(tail)
    if not pace.pauses:
        return RunProfile(tail, 0.0, None)
    return RunProfile(tail, pace.paused_s / pace.pauses, pace.pause_step / pace.pauses)


@dataclass(frozen=True, slots=True)
class Prior:
    """What a trainer's earlier runs say to expect: the median tail, and pauses at the median cadence of
    the runs that paused, of their median length times the share of watched runs that paused (some
    configurations of a trainer validate, others do not: the expected pause, not a guess of which)."""

    runs: int = 0
    tail_s: float | None = None
    pause_s: float | None = None
    pause_every: float | None = None

    @classmethod
    def of(cls, profiles: Iterable[RunProfile]) -> Prior:
        runs = list(profiles)
        tails = [p.tail_s for p in runs if p.tail_s is not None]
        watched = [p for p in runs if p.pause_s is not None]
        paused = [p for p in watched if p.pause_every]
        pause_s = every = None
        if paused:
            length = statistics.median(p.pause_s for p in paused if p.pause_s is not None)
            pause_s = length * len(paused) / len(watched)
            every = statistics.median(p.pause_every for p in paused if p.pause_every)
        return cls(len(runs), statistics.median(tails) if tails else None, pause_s, every)


# -------------------------------------------------------------------------------- projection


@dataclass(frozen=True, slots=True)
class Projection:
    """When a running job will finish (epoch seconds) and what it will have cost then (USD, or None)."""

    finish_at: float
    cost_usd: float | None
    rate: float  # steps per second while stepping (pauses taken out)
    pauses_s: float = 0.0  # pauses still expected, included in `finish_at`
    tail_s: float = 0.0  # the learned time after the last step, included in `finish_at`


def project(
    history: Sequence[Sample],
    *,
    started_at: float | None,
    price_per_s: float | None = None,
    cost_so_far: tuple[float, float] | None = None,
    pace: Pace | None = None,
    prior: Prior | None = None,
) -> Projection | None:
    """Finish time and final cost: steps left at the pure rate, pauses to come, the learned tail.

    None without enough evidence: fewer than 4 reads with a known step and total, less than 20 s or
    2 % of the run between them, or no progress. Cost is `price_per_s` x (finish - `started_at`); without
    a price, `cost_so_far` (usd, at epoch seconds) is scaled to the projected duration.
    """
    reads = _reads(history)
    if len(reads) < _MIN_SAMPLES:
        return None
    last = reads[-1]
    total = last.total
    assert total is not None and last.step is not None
    span = last.t - reads[0].t
    since = last.t - max(span / 2, _WINDOW_FLOOR_S)
    window = [s for s in reads if s.t >= since and s.total == total]
    first = window[0]
    assert first.step is not None
    steps = last.step - first.step
    elapsed = last.t - first.t
    if (
        len({s.step for s in window}) < _MIN_SAMPLES
        or elapsed < _MIN_SPAN_S
        or steps <= 0
        or steps < _MIN_PROGRESS * total
    ):
        return None
    pace = pace or Pace()
    prior = prior or Prior()
    stepping = elapsed - pace.within(first.t)
    left = max(0, total - last.step)
    if stepping >= _MIN_STEPPING * elapsed:
        rate = steps / stepping
        pauses = left * _pause_per_step(pace, prior, last.step)
    else:  # the pauses read fill the window: its wall rate, pauses and all, is all there is to go on
        rate, pauses = steps / elapsed, 0.0
    tail = prior.tail_s or 0.0
    if left:
        finish = last.t + left / rate + pauses + tail
    else:  # past the last step: saving, uploading
        done_at = _last_step_at(reads, None)
        finish = max(last.t, (done_at if done_at is not None else last.t) + tail)
    cost: float | None = None
    if started_at is not None and finish > started_at:
        if price_per_s is not None:
            cost = round(price_per_s * (finish - started_at), 6)
        elif cost_so_far is not None and cost_so_far[1] > started_at:
            usd, at = cost_so_far
            cost = round(usd * (finish - started_at) / (at - started_at), 6)
    return Projection(finish_at=finish, cost_usd=cost, rate=rate, pauses_s=pauses, tail_s=tail)


def _pause_per_step(pace: Pace, prior: Prior, step: int) -> float:
    """Seconds of pause to expect per step still to run (see the module doc)."""
    if pace.pauses:
        return (pace.paused_s / pace.pauses) / _cadence(pace.pause_step, pace.pauses, step)
    if prior.pause_s and prior.pause_every and step <= prior.pause_every:
        return prior.pause_s / prior.pause_every
    return 0.0


def _cadence(pause_step: int, pauses: int, step: int) -> float:
    """Mean steps between pauses: `pauses` pauses by `pause_step` (the first N steps in, the next 2N...),
    and none since up to `step`, so N is at least step / (pauses + 1)."""
    return max(pause_step / pauses, step / (pauses + 1), 1.0)


# ----------------------------------------------------------------------------------- helpers


def _reads(history: Sequence[Sample]) -> list[Sample]:
    return [s for s in history if s.step is not None and s.total and s.step > 0]


def _last_step_at(reads: Sequence[Sample], completed_at: float | None) -> float | None:
    """When the log first showed the last step: midway between the read before it and the first read
    that did (no later than the run's end). Without such a read, the last reads' rate carried on to it.
    """
    if not reads:
        return None
    total = reads[-1].total
    assert total is not None
    end = math.inf if completed_at is None else completed_at
    for i, s in enumerate(reads):
        if s.step is not None and s.step >= total and s.total == total:
            hi = min(s.t, end)
            lo = min(reads[i - 1].t, hi) if i else hi
            return (lo + hi) / 2
    if completed_at is None or len(reads) < 2:
        return None
    a, b = reads[max(0, len(reads) - _MIN_SAMPLES)], reads[-1]
    assert a.step is not None and b.step is not None
    if b.step <= a.step or b.t <= a.t:
        return None
    return min(completed_at, b.t + (total - b.step) * (b.t - a.t) / (b.step - a.step))


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
