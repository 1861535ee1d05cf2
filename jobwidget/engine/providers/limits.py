"""How often a provider may be asked, and how long to wait before asking again.

`RateLimiter` spaces requests to a requests-per-minute budget and holds every caller during a pause the
server asked for (Retry-After and rate-limit reset headers, bounded by `MAX_SERVER_WAIT`); `RetryPolicy`
and `policy_delay` decide the backoff between attempts (full jitter, a server hint as the floor).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC

import httpx

from jobwidget.core.errors import ConfigError
from jobwidget.engine.providers.base import MAX_SERVER_WAIT

__all__ = ["Clock", "RateLimiter", "RetryPolicy", "Sleep", "policy_delay", "server_wait"]

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


# ---------------------------------------------------------------------------------------------- limiter


class RateLimiter:
    """Schedules request send times so that no 60-second window holds more than `max_per_minute`.

    A GCRA (virtual-time token bucket): `burst` requests may go at once, then one every
    60 / (max_per_minute - burst) seconds. Any window of W seconds then holds at most burst + rate x W
    requests, i.e. at most `max_per_minute` in any minute, burst included. Each caller reserves its slot
    synchronously (no lock, no loop: asyncio runs the reservation atomically) and sleeps until it. A slot
    whose caller is cancelled while waiting is not refunded: the limiter errs on the polite side.
    """

    def __init__(
        self,
        max_per_minute: float,
        *,
        burst: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not max_per_minute > 0:
            raise ConfigError(
                f"max_rpm must be a positive number of requests per minute, got {max_per_minute!r}"
            )
        self.max_per_minute = float(max_per_minute)
        if burst is None:
            burst = int(self.max_per_minute // 30)  # 3000/min -> 100 at once
        burst = max(1, min(int(burst), math.floor(self.max_per_minute) - 1))
        self.burst = burst
        # Reserve the burst out of the minute's budget so burst + a minute's refill <= max_per_minute.
        refill_per_minute = (
            self.max_per_minute - burst if self.max_per_minute > burst else self.max_per_minute
        )
        self.interval = 60.0 / refill_per_minute
        self._tolerance = (burst - 1) * self.interval
        self._clock = clock
        self._sleep = sleep
        self._tat: float | None = None  # theoretical arrival time of the next request
        self._paused_until = -math.inf

    def reserve(self) -> float:
        """Take the next slot; returns how long to wait before sending (0: now)."""
        now = self._clock()
        tat = now if self._tat is None else max(self._tat, now)
        send_at = max(now, tat - self._tolerance, self._paused_until)
        self._tat = max(tat, send_at) + self.interval
        return send_at - now

    async def acquire(self) -> float:
        """Wait for a slot; returns the time waited (for stats and tests)."""
        delay = self.reserve()
        if delay > 0:
            await self._sleep(delay)
        return delay

    def pause(self, seconds: float) -> None:
        """Hold every new request for `seconds` (the server said so with a 429)."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def paused_for(self) -> float:
        """Seconds left of the server's requested pause (0 when none)."""
        return max(0.0, self._paused_until - self._clock())


# ---------------------------------------------------------------------------------------------- retries


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one call tries. Bounded by attempts *and* by total waiting, so a call never hangs."""

    max_retries: int = 4  # retries after the first attempt
    base_delay: float = 0.5  # backoff: full jitter in [0, min(max_delay, base x 2^n)]
    max_delay: float = 30.0  # longest single wait, computed or asked for by the server
    budget: float = 60.0  # total seconds one call may spend waiting between attempts

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_delay < 0 or self.max_delay < 0 or self.budget < 0:
            raise ConfigError("retry settings must be non-negative")


def _seconds(raw: str) -> float | None:
    """A header's number of seconds, any length (`1e400` or 400 digits is "very long", not unusable)."""
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        return None
    return None if math.isnan(value) else value


def server_wait(headers: httpx.Headers, wall_now: float) -> float | None:
    """Seconds the server asks us to wait: the largest of `Retry-After` (seconds or HTTP date),
    `ratelimit-reset` and `x-ratelimit-reset` (seconds; a Unix time if that large), clamped to
    [0, MAX_SERVER_WAIT]. None when no header is usable."""
    waits: list[float] = []
    raw = headers.get("retry-after")
    if raw:
        raw = raw.strip()[:256]  # an HTTP date is short; digits beyond this are "very long" already
        value = _seconds(raw)
        if value is None:
            try:
                when = email.utils.parsedate_to_datetime(raw)
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                value = when.timestamp() - wall_now
            except (TypeError, ValueError, IndexError, OverflowError):
                pass
        if value is not None:
            waits.append(value)
    for name in ("ratelimit-reset", "x-ratelimit-reset"):
        raw = headers.get(name)
        reset = _seconds(raw.strip()[:256]) if raw else None
        if reset is not None:
            waits.append(reset - wall_now if 1e9 < reset < 1e11 else reset)
    return min(MAX_SERVER_WAIT, max(0.0, *waits)) if waits else None


def policy_delay(
    policy: RetryPolicy, attempt: int, server_wait: float | None, rng: random.Random
) -> float | None:
    """The wait before retry number `attempt + 1`, or None when the server asks for more than max_delay.

    Full jitter (uniform in [0, min(max_delay, base x 2^attempt)]) spreads many clients' retries; a server
    hint is a floor, plus a little jitter so clients released by one reset do not stampede together.
    """
    if server_wait is not None:
        if server_wait > policy.max_delay:
            return None
        return server_wait + rng.uniform(0, min(policy.base_delay, policy.max_delay - server_wait))
    return rng.uniform(0, min(policy.max_delay, policy.base_delay * 2**attempt))
