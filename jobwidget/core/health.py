"""Run health, pure: a job's loss history at a bounded size, projections from it, and the flag rules.

- **History.** Each progress read is a `Sample` (time, step, total, loss, rate). A job keeps every sample
  until `HISTORY_POINTS`, then neighbours are merged pairwise and later reads are folded in at the same
  stride (all but the newest few), so a run of any length costs a few hundred points and the whole run
  stays drawn at an even resolution. A merged point keeps the later time and step; its loss is the mean,
  or NaN if any read in it was NaN: a NaN is marked, never averaged away. Reads that repeat the last
  step (a stall) keep the first and latest only.
- **Projections** are computed from the history in `core.projection`.
- **Flags** are rules as data (`FLAG_RULES`): each says from one `HealthInput` whether its condition
  holds (a reason), does not (None) or cannot be judged from this update (`KEEP`). `evaluate` applies
  them to the flags already raised: a flag keeps the time it was first raised; a sticky one (NaN) never
  clears; the others clear when their condition does.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from jobwidget.core.keys import HealthFlag

__all__ = [
    "FLAG_NAMES",
    "FLAG_RULES",
    "HISTORY_POINTS",
    "KEEP",
    "SPARK_POINTS",
    "FlagRule",
    "HealthInput",
    "Sample",
    "Thresholds",
    "add_sample",
    "evaluate",
    "sparkline",
]

HISTORY_POINTS = 300  # samples kept per job, whatever the run's length
SPARK_POINTS = 40  # points a card's sparkline carries (a few hundred bytes)
_KEEP_RAW = 16  # the newest samples are never merged: the rules and projections read them


@dataclass(frozen=True, slots=True)
class Sample:
    """One progress read: `t` in epoch seconds; `loss` may be NaN (kept: the run diverged)."""

    t: float
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    rate: float | None = None
    n: int = 1  # reads this point stands for (merged neighbours: their mean loss, the later time)

    @property
    def nan(self) -> bool:
        return self.loss is not None and not math.isfinite(self.loss)


def _merge(a: Sample, b: Sample) -> Sample:
    if a.nan or b.nan:
        loss: float | None = math.nan
    elif a.loss is not None and b.loss is not None:
        loss = (a.loss * a.n + b.loss * b.n) / (a.n + b.n)
    else:
        loss = b.loss if b.loss is not None else a.loss
    total = b.total if b.total is not None else a.total
    return Sample(b.t, b.step, total, loss, b.rate if b.rate is not None else a.rate, a.n + b.n)


def _same_read(a: Sample, b: Sample) -> bool:
    """Two reads that tell nothing apart (the same step, both NaN or the same loss)."""
    return a.step == b.step and a.total == b.total and ((a.nan and b.nan) or a.loss == b.loss)


def add_sample(history: Sequence[Sample], sample: Sample, limit: int = HISTORY_POINTS) -> list[Sample]:
    """`history` with `sample` appended, at most `limit` points (see the module doc).

    The newest reads stay as they are; older ones form a body in which every point stands for the same
    number of reads (`Sample.n`, the stride): a read leaving the raw tail is folded into the body's
    newest point until that one holds a stride's worth, and a full body merges neighbours pairwise
    (the stride doubles). So the body is always evenly spread and the whole run stays drawn.
    A sample older than the newest is dropped (a late answer): the history stays in time order.
    """
    out = list(history)
    if out and sample.t < out[-1].t:
        return out
    if len(out) >= 2 and _same_read(out[-1], sample) and _same_read(out[-2], sample):
        out[-1] = sample  # a repeated read: keep when it was first seen and the latest, not every one
        return out
    out.append(sample)
    keep = min(_KEEP_RAW, max(0, limit // 4))
    if len(out) <= keep + 1:
        return out
    body, tail = out[: len(out) - keep], out[len(out) - keep :]
    stride = max(s.n for s in body)
    if len(body) >= 2 and body[-2].n + body[-1].n <= stride:
        body[-2:] = [_merge(body[-2], body[-1])]
    if len(body) + len(tail) > limit:
        merged = [_merge(body[i], body[i + 1]) for i in range(0, len(body) - 1, 2)]
        if len(body) % 2:
            merged.append(body[-1])
        body = merged
    return body + tail


def sparkline(history: Sequence[Sample], points: int = SPARK_POINTS) -> list[list[Any]]:
    """`[[step, loss], ...]` for a card, at most `points`, evenly picked; a NaN loss is `None` (drawn as
    a marked point), reads without a loss are left out, repeated reads of one step count once. The
    newest read is always included."""
    with_loss: list[Sample] = []
    for s in history:
        if s.loss is None or s.step is None:
            continue
        if with_loss and with_loss[-1].step == s.step:
            with_loss[-1] = s  # a re-read of the same step draws nothing new: the card stays as it was
        else:
            with_loss.append(s)
    if len(with_loss) > points:
        n = len(with_loss)
        picks = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
        with_loss = [with_loss[i] for i in picks]
    return [[s.step, None if s.nan else _sig(s.loss)] for s in with_loss]


def _sig(value: float | None, digits: int = 4) -> float | None:
    if value is None or value == 0:
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


# ------------------------------------------------------------------------------------------ flags


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a flag is raised. Defaults are conservative: a false alarm teaches people to ignore them."""

    stall_minutes: float = 15.0  # running, and no new step for this long
    slow_start_minutes: float = 10.0  # queued or starting for this long (cold boots)
    diverging_factor: float = 3.0  # the recent median loss is this many times its best median...
    diverging_window: int = 12  # ...over this many reads (at least twice as many reads needed)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Thresholds:
        """From a config mapping; ValueError names a bad or unknown key."""
        known = {"stall_minutes", "slow_start_minutes", "diverging_factor", "diverging_window"}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{key} must be a number, got {value!r}")
            if key == "diverging_window":
                if value != int(value) or not 3 <= value <= 100:
                    raise ValueError(f"{key} must be a whole number from 3 to 100, got {value!r}")
                value = int(value)
            elif key == "diverging_factor" and value <= 1:
                raise ValueError(f"{key} must be above 1, got {value!r}")
            elif value <= 0:
                raise ValueError(f"{key} must be above 0, got {value!r}")
            values[key] = value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class HealthInput:
    """What the rules see about one job at one update."""

    status: str  # the unified status value
    now: float  # epoch seconds
    created_at: float | None
    history: Sequence[Sample]
    fresh: bool  # this update carries a new progress read (the history's last sample)
    thresholds: Thresholds


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # a rule's answer when this update cannot tell: the flag stays as it was
_WAITING = ("pending", "uploading", "queued")
Check = Callable[[HealthInput], "str | _Keep | None"]


def _fmt_min(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def _at_step(s: Sample) -> str:
    if s.step is None:
        return ""
    return f" at step {s.step}" + (f"/{s.total}" if s.total else "")


def _nan_loss(h: HealthInput) -> str | _Keep | None:
    if not h.fresh or not h.history:
        return KEEP
    last = h.history[-1]
    return f"loss NaN{_at_step(last)}" if last.nan else KEEP


def _stalled(h: HealthInput) -> str | _Keep | None:
    if h.status != "running":
        return None
    if not h.fresh:
        return KEEP  # only a new read can say whether the step moved
    last = h.history[-1]
    if last.step is None or (last.total is not None and last.step >= last.total):
        return None  # no step yet (still loading), or past the last step (saving, uploading)
    first_seen = last.t
    for s in reversed(h.history):
        if s.step != last.step:
            break
        first_seen = s.t
    still = h.now - first_seen
    if still >= h.thresholds.stall_minutes * 60:
        return f"no new step for {_fmt_min(still)}{_at_step(last)}"
    return None


def _diverging(h: HealthInput) -> str | _Keep | None:
    if not h.fresh:
        return KEEP
    losses = [s.loss for s in h.history if s.loss is not None and not s.nan]
    w = h.thresholds.diverging_window
    if len(losses) < 2 * w:
        return None
    medians = [statistics.median(losses[i : i + w]) for i in range(0, len(losses) - w + 1)]
    best, recent = min(medians[: len(medians) - w] or medians[:1]), medians[-1]
    if best > 0 and recent >= h.thresholds.diverging_factor * best:
        return f"loss rose to {recent / best:.1f}x its best ({best:.3g} -> {recent:.3g})"
    return None


def _slow_start(h: HealthInput) -> str | _Keep | None:
    if h.status not in _WAITING or h.created_at is None:
        return None
    waited = h.now - h.created_at
    if waited >= h.thresholds.slow_start_minutes * 60:
        return f"waiting to start for {_fmt_min(waited)}"
    return None


@dataclass(frozen=True, slots=True)
class FlagRule:
    name: str
    check: Check
    sticky: bool = False  # once raised, never cleared (a NaN loss: the weights are gone)


FLAG_RULES: tuple[FlagRule, ...] = (
    FlagRule("nan_loss", _nan_loss, sticky=True),
    FlagRule("stalled", _stalled),
    FlagRule("diverging", _diverging),
    FlagRule("slow_start", _slow_start),
)
FLAG_NAMES: tuple[str, ...] = tuple(rule.name for rule in FLAG_RULES)


def evaluate(
    h: HealthInput, previous: Mapping[str, Mapping[str, Any]], rules: Iterable[FlagRule] = FLAG_RULES
) -> tuple[dict[str, HealthFlag], list[str]]:
    """(the job's flags now: name -> {"reason", "raised_at"}, names newly raised by this update)."""
    flags: dict[str, HealthFlag] = {}
    raised: list[str] = []
    for rule in rules:
        before = previous.get(rule.name)
        if before is not None and rule.sticky:
            flags[rule.name] = cast(HealthFlag, dict(before))
            continue
        verdict = rule.check(h)
        if verdict is KEEP:
            if before is not None:
                flags[rule.name] = cast(HealthFlag, dict(before))
        elif verdict is not None and before is not None and before.get("raised_at") is not None:
            # Still raised: the record stays as it was when raised (a reason such as "waiting for 12 min"
            # would otherwise be rewritten, and re-sent to every panel, on every poll while it holds).
            flags[rule.name] = cast(HealthFlag, dict(before))
        elif verdict is not None:
            flags[rule.name] = HealthFlag(reason=str(verdict), raised_at=h.now)
            if before is None:
                raised.append(rule.name)
    return flags, raised
