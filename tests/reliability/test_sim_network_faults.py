"""The simulator's network-fault knobs added for issue 8: connection resets and slow bodies.

They act on the wire (over loopback a real TCP reset; a body trickling out chunk by chunk), come from
their own seeded RNG (so the older faults' sequence is unchanged and runs repeat), and are counted.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from jobwidget.sim import SIM_BASE_URL, SimConfig, SimTransport, SimulatedReplicate, start_in_thread

from ..simhelpers import ManualClock, provider_for

AUTH = {"Authorization": "Bearer t"}


def _outcomes(base_url: str, n: int, timeout: float = 5.0) -> list[str]:
    """What each of `n` list requests met: a status code, or the httpx error's class name."""
    out: list[str] = []
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=timeout) as client:
        for _ in range(n):
            try:
                out.append(str(client.get("/v1/trainings").status_code))
            except httpx.TransportError as exc:
                out.append(type(exc).__name__)
    return out


def test_resets_reach_the_client_as_connection_errors_and_are_counted(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    sim = SimulatedReplicate(SimConfig(seed=3, fleet_size=300, reset_rate=1.0), clock=ManualClock())
    with start_in_thread(sim=sim) as running:
        outcomes = _outcomes(running.base_url, 12)
    # Before the headers (ReadError: "connection reset by peer") or mid-body (the body is cut short).
    assert set(outcomes) <= {"ReadError", "RemoteProtocolError"}, outcomes
    assert sim.stats_snapshot()["resets"] == 12
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")], caplog.text  # no server noise


def test_network_faults_repeat_per_seed_and_leave_the_older_fault_sequence_alone():
    def run(**knobs: object) -> list[str]:
        sim = SimulatedReplicate(
            SimConfig(seed=5, fleet_size=50, error_rate=0.3, **knobs), clock=ManualClock()
        )
        with start_in_thread(sim=sim) as running:
            return _outcomes(running.base_url, 40)

    first, again = run(reset_rate=0.3), run(reset_rate=0.3)
    assert first == again  # same seed, same faults
    assert any(o in ("ReadError", "RemoteProtocolError") for o in first)
    plain = run()
    # Wherever no reset happened, the 5xx sequence is the one the simulator drew without resets.
    assert [p for p, f in zip(plain, first, strict=True) if f.isdigit()] == [f for f in first if f.isdigit()]


def test_slow_bodies_arrive_whole_within_the_read_timeout_and_time_out_beyond_it():
    sim = SimulatedReplicate(SimConfig(seed=7, fleet_size=120), clock=ManualClock())
    with start_in_thread(sim=sim) as running:
        with httpx.Client(base_url=running.base_url, headers=AUTH, timeout=60) as client:
            normal = client.get("/v1/trainings").json()
        sim.configure(slow_body_rate=1.0, slow_body_seconds=1.0)
        t = time.perf_counter()
        # 0.25 s between chunks, well within a 10 s read timeout however busy the machine is.
        with httpx.Client(base_url=running.base_url, headers=AUTH, timeout=10) as client:
            slow = client.get("/v1/trainings").json()
        assert time.perf_counter() - t >= 0.9  # it did trickle (a lower bound: sleeps never end early)
        assert slow == normal
        sim.configure(slow_body_seconds=240.0)  # 60 s between chunks: far beyond a 0.5 s read timeout
        with (
            httpx.Client(base_url=running.base_url, headers=AUTH, timeout=0.5) as client,
            pytest.raises(httpx.ReadTimeout),
        ):
            client.get("/v1/trainings")
        assert sim.stats_snapshot()["slow_bodies"] == 2


def test_in_process_transport_raises_the_same_errors():
    async def main() -> tuple[str, str]:
        sim = SimulatedReplicate(SimConfig(seed=9, fleet_size=20, reset_rate=1.0), clock=ManualClock())
        async with httpx.AsyncClient(transport=SimTransport(sim), base_url=SIM_BASE_URL, headers=AUTH) as c:
            with pytest.raises(httpx.ReadError) as reset:
                await c.get("/v1/trainings")
            sim.configure(reset_rate=0.0, slow_body_rate=1.0, slow_body_seconds=2.0)
            with pytest.raises(httpx.ReadTimeout) as slow:
                await c.get("/v1/trainings", timeout=0.5)
        return str(reset.value), str(slow.value)

    reset, _slow = asyncio.run(main())
    assert "reset" in reset


def test_the_provider_retries_through_resets():
    sim = SimulatedReplicate(SimConfig(seed=11, fleet_size=250, reset_rate=0.4), clock=ManualClock())
    with start_in_thread(sim=sim) as running:

        async def main() -> int:
            async with provider_for(running, retries=8) as provider:
                jobs = await provider.list_jobs(all=True)
                return len(jobs)

        assert asyncio.run(main()) == 250
        assert sim.stats_snapshot()["resets"] > 0


@pytest.mark.parametrize(
    "bad", [{"reset_rate": 1.5}, {"slow_body_rate": -0.1}, {"slow_body_seconds": -1}, {"reset_rate": "x"}]
)
def test_new_knobs_are_validated(bad: dict[str, object]):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SimConfig(**bad)  # type: ignore[arg-type]


def test_new_knobs_are_settable_over_the_control_api():
    sim = SimulatedReplicate(SimConfig(seed=1, fleet_size=10), clock=ManualClock())
    with start_in_thread(sim=sim) as running:
        r = httpx.post(f"{running.base_url}/_sim/config", json={"reset_rate": 0.25, "slow_body_seconds": 2})
        assert r.status_code == 200 and r.json()["config"]["reset_rate"] == 0.25
        assert sim.config.slow_body_seconds == 2
        bad = httpx.post(f"{running.base_url}/_sim/config", json={"reset_rate": 2})
        assert bad.status_code == 400
