"""The simulator's time: nominal vs wall clock, and the continuous fleet's arrival schedule and ids.

Two kinds of fleet share one model (`fleet.py`):

- A *session* fleet (`SimConfig.epoch` None) is anchored at the simulator's start: a seeded history that
  finished before it, a few trainings caught mid-flight, then arrivals. Two processes started at
  different times have the same ids but different timelines; tests use it with a manual clock.
- A *continuous* fleet (`epoch` set to a fixed Unix time) is a pure function of that instant: arrival
  `k` (k = 0, 1, 2, ...) is created at a seeded instant in its own slot `[k, k + 1) x arrival_interval`
  of nominal time after the epoch, with an id and a plan derived from (seed, k) alone. A process started
  at any later wall time therefore sees the same trainings as one that has been running all along:
  earlier ones finished or still running as their timeline says, new ones arriving at the configured
  rate, ids never reused. The demo uses it so its jobs live on across kernel restarts.

Bounded history: a continuous fleet anchored long ago has millions of past arrivals, but only the newest
`fleet_size` are listed (and at most twice that are held in memory). Older ones are never listed; a GET
of an older id still answers, because the id encodes its arrival index (`arrival_index`), so the
training is rebuilt on demand. What the API changed in one process (cancels, created trainings) is not
part of the timeline and does not outlive it; nor does a runtime `time_scale` change (a new process
maps the whole span since the epoch at its own scale, so its arrival indices differ: ids of the other
scale's future are unknown to it and answer 404).
"""

from __future__ import annotations

import hashlib
import math
import time

__all__ = ["ArrivalSchedule", "TimeMap", "arrival_id", "arrival_index", "format_timestamp"]

_B32 = "abcdefghijklmnopqrstuvwxyz234567"  # Replicate's ids: 26 lowercase base32 characters (130 bits)
_B32_VALUE = {c: i for i, c in enumerate(_B32)}
_INDEX_BITS = 40  # arrival indices up to 1.1e12: a training every 0.01 nominal s for 300 years
_TAG_BITS = 130 - _INDEX_BITS


def format_timestamp(wall: float, digits: int) -> str:
    """ISO 8601 UTC with `Z` and `digits` (6-9) fractional digits, as Replicate writes them."""
    ns = round(wall * 1e9)
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{frac:09d}"[: 20 + digits] + "Z"


class TimeMap:
    """Virtual (nominal) time <-> wall clock: identity up to `t0`, then piecewise `scale` x faster.

    Each change of scale starts a new segment, so instants already past keep their wall time.
    """

    __slots__ = ("_segs", "t0", "version")

    def __init__(self, t0: float, scale: float) -> None:
        self.t0 = t0
        self._segs: list[tuple[float, float, float]] = [(t0, t0, scale)]  # (wall, virtual, scale)
        self.version = 0

    @property
    def scale(self) -> float:
        return self._segs[-1][2]

    @property
    def last_change(self) -> float:
        """The virtual instant the current scale took effect."""
        return self._segs[-1][1]

    def virtual(self, wall: float) -> float:
        if wall <= self.t0:
            return wall
        for w, v, s in reversed(self._segs):
            if wall >= w:
                return v + (wall - w) * s
        return wall  # unreachable: the first segment starts at t0

    def wall(self, virtual: float) -> float:
        if virtual <= self.t0:
            return virtual
        for w, v, s in reversed(self._segs):
            if virtual >= v:
                return w + (virtual - v) / s
        return virtual

    def set_scale(self, wall_now: float, scale: float) -> None:
        wall_now = max(wall_now, self._segs[-1][0])
        self._segs.append((wall_now, self.virtual(wall_now), scale))
        self.version += 1


def _digest(*parts: object) -> int:
    raw = ":".join(str(p) for p in ("jobwidget-sim", *parts)).encode()
    return int.from_bytes(hashlib.sha256(raw).digest(), "big")


def arrival_id(seed: int, k: int) -> str:
    """The id of arrival `k`: looks random, never repeats, and gives `k` back (`arrival_index`).

    130 bits: a 90-bit tag keyed by (seed, k), then k masked by a hash of the tag.
    """
    tag = _digest(seed, "tag", k) >> (256 - _TAG_BITS)
    mask = _digest(seed, "mask", tag) >> (256 - _INDEX_BITS)
    value = (tag << _INDEX_BITS) | (k ^ mask)
    return "".join(_B32[(value >> (5 * (25 - i))) & 31] for i in range(26))


def arrival_index(seed: int, training_id: str) -> int | None:
    """The arrival index `training_id` encodes for `seed`, or None if it is not one of its arrivals."""
    if len(training_id) != 26:
        return None
    value = 0
    for c in training_id:
        digit = _B32_VALUE.get(c)
        if digit is None:
            return None
        value = (value << 5) | digit
    tag = value >> _INDEX_BITS
    k = (value & ((1 << _INDEX_BITS) - 1)) ^ (_digest(seed, "mask", tag) >> (256 - _INDEX_BITS))
    return k if _digest(seed, "tag", k) >> (256 - _TAG_BITS) == tag else None


class ArrivalSchedule:
    """When arrival `k` of a continuous fleet is created (nominal time), and which arrivals are due.

    One arrival per slot of `interval` nominal seconds after `epoch`, at a seeded point in its slot: the
    mean rate is one per `interval`, gaps vary between 0 and 2 intervals, and `last_due` is O(1) however
    long ago the epoch was.
    """

    __slots__ = ("epoch", "interval", "seed")

    def __init__(self, seed: int, epoch: float, interval: float) -> None:
        self.seed = seed
        self.epoch = epoch
        self.interval = interval

    def created(self, k: int) -> float:
        jitter = (_digest(self.seed, "slot", k) >> 203) / (1 << 53)  # uniform in [0, 1)
        return self.epoch + (k + jitter) * self.interval

    def last_due(self, v: float) -> int:
        """The newest arrival created at or before nominal `v` (-1: none yet)."""
        if v < self.epoch:
            return -1
        k = math.floor((v - self.epoch) / self.interval)
        while k >= 0 and self.created(k) > v:
            k -= 1
        return k
