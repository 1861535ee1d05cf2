"""Helpers for tests that drive the simulated Replicate over real HTTP on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from jobwidget.engine.providers.replicate import ReplicateProvider, RetryPolicy
from jobwidget.sim import RunningSim, SimConfig, SimulatedReplicate, start_in_thread

T0 = 1_790_000_000.0  # a fixed wall-clock instant: the fleet is then the same on every run


class ManualClock:
    """A clock tests move by hand; thread-safe because the server runs in another thread."""

    def __init__(self, t: float = T0) -> None:
        self._t = t
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += seconds


@contextmanager
def loopback_sim(
    config: SimConfig | None = None, *, clock: ManualClock | None = None
) -> Iterator[RunningSim]:
    sim = SimulatedReplicate(config or SimConfig(seed=1), clock=clock or ManualClock())
    with start_in_thread(sim=sim) as running:
        yield running


def provider_for(running: RunningSim, *, retries: int | None = None, **kw: object) -> ReplicateProvider:
    if retries is not None:
        kw["retry_policy"] = RetryPolicy(max_retries=retries, base_delay=0.01, max_delay=0.05, budget=0.2)
    return ReplicateProvider(token="r8_test_token", base_url=running.base_url, **kw)  # type: ignore[arg-type]


def route_count(running: RunningSim, route: str) -> int:
    return int(running.sim.stats_snapshot()["by_route"].get(route, 0))


LIST = "GET /v1/trainings"
GET = "GET /v1/trainings/{id}"
