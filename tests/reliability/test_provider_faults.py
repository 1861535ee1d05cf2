"""Provider faults over loopback: the poller survives each, the panel shows the error while it lasts and
clears it after, and once the faults stop every job converges to the provider's truth, none lost or
duplicated (store compared with the simulator job by job; the panel replayed from its wire messages).
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from jobwidget import Jobs
from jobwidget.core.errors import ProviderError
from jobwidget.core.models import ACTIVE_STATUSES
from jobwidget.sim import SimConfig
from jobwidget.surfaces.panel_window import ACTIVE_CAP, PAGE

from ..simhelpers import ManualClock, loopback_sim, provider_for
from ._support import ReplayedView, converged, differences, duplicate_rows, sim_truth, wait_until

OFF: dict[str, Any] = {
    "rate_limit": None,
    "error_rate": 0.0,
    "timeout_rate": 0.0,
    "malformed_rate": 0.0,
    "reset_rate": 0.0,
    "slow_body_rate": 0.0,
}
CLIENT_TIMEOUT = 1.0  # the provider's read timeout in these tests; hangs and slow bodies exceed it

FAULTS = [
    pytest.param({"rate_limit": 1}, True, id="429-storm"),
    pytest.param({"error_rate": 0.3}, False, id="30pct-5xx"),
    pytest.param({"timeout_rate": 1.0, "hang_seconds": 2.0}, True, id="timeouts"),
    pytest.param({"malformed_rate": 1.0}, True, id="malformed-json"),
    pytest.param({"reset_rate": 1.0}, True, id="connection-resets"),
    # 5 chunks over 5 s: 1.25 s between chunks, beyond the 1 s read timeout
    pytest.param({"slow_body_rate": 1.0, "slow_body_seconds": 5.0}, True, id="slow-bodies"),
]


class OffsetClock:
    """The provider's monotonic clock, which a test can move on (to end a pause the server asked for)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def _view_from(panel) -> ReplayedView:
    return ReplayedView().feed(list(panel.comm.messages))


def _status_errors(panel) -> list[str | None]:
    """The error banner in every status update the browser received, in order."""
    out = []
    for msg_type, data in list(panel.comm.messages):
        state = data.get("state", {}) if isinstance(data, dict) else {}
        if msg_type in ("comm_open", "comm_msg") and "status" in state:
            out.append(state["status"].get("error"))
    return out


def _check_converged(jobs: Jobs, running, store_path: Path, transitions: dict[str, list]) -> None:
    truth = sim_truth(running.base_url)
    wait_until(lambda: converged(jobs.store, truth), 20, "the store to converge to the simulator")
    diff = differences(jobs.store, truth)
    assert diff == {"missing": [], "extra": [], "wrong": []}
    assert duplicate_rows(str(store_path)) == 0
    assert jobs.store.integrity_check() == "ok"
    # Events: each job moved forward, never twice through the same transition (nothing re-announced).
    for job_id, moves in transitions.items():
        assert len(moves) == len(set(moves)), (job_id, moves)
    # What a browser view shows once it has applied every message: the kernel's cards, each with the
    # store's status, holding the store's newest page and every active job (the panel's window).
    jobs.panel.flush()
    view = wait_until(
        lambda: (v := _view_from(jobs.panel)) and _window_matches(v, jobs) and v,
        10,
        "the panel's replayed view to match the store",
    )
    assert not view.status.get("error")


ACTIVE_VALUES = {s.value for s in ACTIVE_STATUSES}


def _window_matches(view: ReplayedView, jobs: Jobs) -> bool:
    stored = {j.job_id: j.status.value for j in jobs.store.list(limit=None)}
    newest = {j.job_id for j in jobs.store.list(limit=PAGE)}
    active = {j for j, status in stored.items() if status in ACTIVE_VALUES}
    cards = view.cards
    return (
        cards == jobs.panel.cards()
        and all(stored.get(i) == c["status"] for i, c in cards.items())
        and newest <= cards.keys()
        and (active <= cards.keys() or len(active) > ACTIVE_CAP)
    )


def _recorder(jobs: Jobs) -> dict[str, list]:
    transitions: dict[str, list] = defaultdict(list)
    jobs.on("job_status_changed", lambda e: transitions[e["job_id"]].append((e["previous"], e["status"])))
    return transitions


@pytest.mark.parametrize(("knobs", "total"), FAULTS)
def test_poller_survives_fault_shows_it_and_converges_after(knobs, total, tmp_path: Path, comms):
    clock = ManualClock()
    cfg = SimConfig(seed=31, fleet_size=250, active=25, arrival_interval=0, time_scale=60)
    store = tmp_path / "jobs.sqlite3"
    with loopback_sim(cfg, clock=clock) as running:
        mono = OffsetClock()
        provider = provider_for(running, retries=1, timeout=CLIENT_TIMEOUT, clock=mono)
        with Jobs(provider=provider, store=store, poll_interval=0.2) as jobs:
            jobs.sync(all=True)  # the poller may have discovered the newest page already
            assert jobs.store.count() == 250
            transitions = _recorder(jobs)
            panel = jobs.panel
            _from_view(panel, {"type": "visible", "visible": True})  # running jobs' logs are read too
            running.sim.configure(**knobs)
            wait_until(lambda: panel.status.get("error"), 20, "the panel to show the poll error")
            assert jobs.polling
            assert len(jobs.list(limit=None)) == 250  # the store keeps answering during the outage
            if total:  # a user's call meets a jobwidget error with a message, not an httpx exception
                with pytest.raises(ProviderError) as info:
                    jobs.sync()
                assert str(info.value) and "httpx" not in type(info.value).__module__
            # Most runs finish while the provider misbehaves (59 s x 60 = about an hour of nominal time;
            # under a minute of the simulator's clock, so a 429 storm's window does not reset).
            before = running.sim.stats_snapshot()["fleet"]["active"]
            clock.advance(59)
            asked = running.sim.stats_snapshot()["total"]
            assert running.sim.stats_snapshot()["fleet"]["active"] < before / 2
            if knobs.get("rate_limit"):
                # The storm asks for a pause (Retry-After: the rest of the simulator's minute). It is
                # honoured: the panel says so and no request goes out while it lasts.
                wait_until(lambda: "polling waits" in (panel.status.get("error") or ""), 10, "the wait")
                time.sleep(2.0)
                assert running.sim.stats_snapshot()["total"] == asked, "a request went out during the pause"
                running.sim.configure(**OFF)
                mono.offset += 3600  # the pause is over; polling starts again as it would after it
                jobs.stop()
                jobs.start()
            else:
                # the poller tries again after its backoff (and, for a total fault, fails again)
                wait_until(lambda: running.sim.stats_snapshot()["total"] > asked, 10, "another poll")
            running.sim.configure(**OFF)
            wait_until(lambda: not panel.status.get("error"), 30, "the panel's error to clear")
            assert jobs.polling
            _check_converged(jobs, running, store, transitions)
            errors = _status_errors(panel)
            assert any(errors), "the browser never received the error"
            assert errors[-1] is None, "the browser's last status still shows an error"


def test_mixed_faults_while_jobs_finish_at_different_times(tmp_path: Path, comms):
    """All faults at once while simulated time moves in steps (jobs finish and new ones start mid-storm),
    then a clean stretch: the store and the panel end where the provider is."""
    clock = ManualClock()
    cfg = SimConfig(seed=32, fleet_size=300, active=40, arrival_interval=0, time_scale=60, hang_seconds=2.0)
    store = tmp_path / "jobs.sqlite3"
    mixed = {
        "error_rate": 0.3,
        "timeout_rate": 0.05,
        "malformed_rate": 0.1,
        "reset_rate": 0.1,
        "slow_body_rate": 0.1,
        "slow_body_seconds": 2.0,
    }
    with loopback_sim(cfg, clock=clock) as running:
        provider = provider_for(running, retries=2, timeout=CLIENT_TIMEOUT)
        with Jobs(provider=provider, store=store, poll_interval=0.2) as jobs:
            jobs.sync(all=True)
            assert jobs.store.count() == 300
            transitions = _recorder(jobs)
            panel = jobs.panel
            _from_view(panel, {"type": "visible", "visible": True})
            running.sim.configure(**mixed)
            for _ in range(20):  # 20 steps of 90 s: runs finish at different moments mid-storm
                clock.advance(90)
                time.sleep(0.2)
            stats = running.sim.stats_snapshot()
            assert min(stats["server_errors"], stats["malformed"], stats["resets"]) > 0, stats
            assert jobs.polling
            running.sim.configure(**OFF)
            clock.advance(3600)
            wait_until(lambda: not panel.status.get("error"), 30, "the panel's error to clear")
            _check_converged(jobs, running, store, transitions)


def _from_view(panel, content: dict[str, Any]) -> None:
    """Deliver a message as the browser would (through ipywidgets' comm handler)."""
    panel._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})
