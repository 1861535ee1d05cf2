"""The simulator's knobs: one dataclass, settable at construction and at runtime (`POST /_sim/config`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FLEET_FIELDS", "SimConfig"]

# Changing one of these rebuilds the fleet (a new seeded history, anchored at the current clock or `epoch`).
FLEET_FIELDS = frozenset(
    {
        "seed",
        "epoch",
        "fleet_size",
        "active",
        "arrival_interval",
        "max_arrivals",
        "history_spacing",
        "fail_fraction",
        "cancel_fraction",
        "abort_fraction",
        "health_fault_rate",
    }
)

MAX_FLEET = 100_000


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Knobs of the simulated Replicate. Rates are fractions of requests in [0, 1]; times are seconds."""

    # The fleet (deterministic for a given seed and clock).
    seed: int = 0
    # None: a session fleet, anchored at the simulator's start (history before it, arrivals after it).
    # A Unix time: a continuous fleet, a pure function of this fixed instant (see `timeline.py`): any
    # process at any later time sees the same trainings, arriving every `arrival_interval` since then.
    epoch: float | None = None
    fleet_size: int = 150  # session: trainings at start (history + active); continuous: newest listed
    active: int = 5  # session only: of those, how many are starting/processing at start
    time_scale: float = 60.0  # nominal seconds per wall second for anything that runs during the session
    arrival_interval: float = 900.0  # mean nominal seconds between new trainings appearing (0: none)
    max_arrivals: int = 2000  # session only: cap on trainings appearing during one session
    history_spacing: float = 2400.0  # session only: mean nominal seconds between past trainings
    fail_fraction: float = 0.1
    cancel_fraction: float = 0.05
    abort_fraction: float = 0.0  # `starting -> aborted`: given up before it ever ran (no started_at)
    # Of the trainings that succeed, the share with a run-health fault (health_faults.py): a NaN loss, a
    # stall, a long cold boot or a diverging loss.
    health_fault_rate: float = 0.0
    # The HTTP surface.
    latency: float = 0.0  # seconds added to every request
    latency_jitter: float = 0.0  # +/- uniform jitter on `latency`
    rate_limit: int | None = None  # requests per minute (fixed window); None or 0: unlimited
    error_rate: float = 0.0  # fraction answered 500/502/503
    timeout_rate: float = 0.0  # fraction that hang `hang_seconds` before answering
    hang_seconds: float = 30.0
    malformed_rate: float = 0.0  # fraction of 200s whose body is truncated or invalid JSON
    reset_rate: float = 0.0  # fraction whose connection is reset (TCP RST), before or during the body
    slow_body_rate: float = 0.0  # fraction whose body trickles out over `slow_body_seconds`
    slow_body_seconds: float = 5.0
    not_found_rate: float = 0.0  # fraction of GETs/cancels of a training answered 404 (a transient miss)
    token: str | None = None  # None: any bearer token is accepted; else only this one

    def __post_init__(self) -> None:
        problems: list[str] = []

        def number(name: str, lo: float, hi: float = math.inf) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
                problems.append(f"{name} must be a number in [{lo}, {hi}], got {value!r}")

        for name in ("seed", "fleet_size", "active", "max_arrivals"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be a non-negative integer, got {value!r}")
        if isinstance(self.fleet_size, int) and self.fleet_size > MAX_FLEET:
            problems.append(f"fleet_size must be at most {MAX_FLEET}, got {self.fleet_size}")
        if isinstance(self.time_scale, int | float) and not isinstance(self.time_scale, bool):
            if not 0 < self.time_scale <= 1e6:
                problems.append(f"time_scale must be in (0, 1e6], got {self.time_scale!r}")
        else:
            problems.append(f"time_scale must be a number, got {self.time_scale!r}")
        for name in (
            "arrival_interval",
            "history_spacing",
            "latency",
            "latency_jitter",
            "hang_seconds",
            "slow_body_seconds",
        ):
            number(name, 0.0)
        for name in (
            "fail_fraction",
            "cancel_fraction",
            "abort_fraction",
            "health_fault_rate",
            "error_rate",
            "timeout_rate",
            "malformed_rate",
            "reset_rate",
            "slow_body_rate",
            "not_found_rate",
        ):
            number(name, 0.0, 1.0)
        if not problems and self.fail_fraction + self.cancel_fraction + self.abort_fraction > 1:
            problems.append("fail_fraction + cancel_fraction + abort_fraction must not exceed 1")
        if self.epoch is not None:
            epoch = self.epoch
            if isinstance(epoch, bool) or not isinstance(epoch, int | float) or not 0 <= epoch < 1e11:
                problems.append(f"epoch must be None or a Unix time in seconds, got {epoch!r}")
            elif not self.arrival_interval:
                problems.append(
                    "a continuous fleet (epoch set) needs arrival_interval > 0: its trainings are arrivals"
                )
        if self.rate_limit is not None and (
            isinstance(self.rate_limit, bool) or not isinstance(self.rate_limit, int) or self.rate_limit < 0
        ):
            problems.append(
                f"rate_limit must be a non-negative integer (requests/min) or None, got {self.rate_limit!r}"
            )
        if self.token is not None and (not isinstance(self.token, str) or not self.token):
            problems.append("token must be a non-empty string or None")
        if problems:
            raise ValueError("invalid simulator config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> SimConfig:
        """A copy with `changes` applied (validated); unknown names raise ValueError."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown simulator setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: SimConfig | None = None) -> SimConfig:
        """`base` (or the defaults) overlaid with `data`, e.g. a JSON body or CLI options."""
        return (base or cls()).replace(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
