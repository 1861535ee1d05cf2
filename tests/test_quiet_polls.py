"""A poll in which nothing changed writes nothing and sends no card to the panel.

Running jobs keep their price per second, not a cost that moves with the clock (the view and the readers
derive it), so polling the same trainings again is a no-op for the store and for the browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobwidget import Jobs
from jobwidget.sim import SimConfig

from .simhelpers import ManualClock, loopback_sim, provider_for
from .test_widget import recording_comm, sent, wire_size  # noqa: F401  (recording_comm: autouse)


def _card_traffic(messages: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Messages that carry cards or totals (patches, snapshots, totals), not the heartbeat or the banner."""
    out = []
    for msg_type, data in messages:
        if msg_type != "comm_msg":
            continue
        cards = data.get("method") == "custom" and data["content"].get("type") in ("patch", "hello")
        state = data.get("method") == "update" and {"snapshot", "totals"} & set(data.get("state", {}))
        if cards or state:
            out.append((msg_type, data))
    return out


def test_polling_unchanged_running_jobs_writes_nothing_and_sends_no_card(tmp_path: Path) -> None:
    clock = ManualClock()  # the simulated trainings stand still: every poll sees the same thing
    cfg = SimConfig(seed=21, fleet_size=40, active=8, arrival_interval=0, time_scale=60)
    with (
        loopback_sim(cfg, clock=clock) as running,
        Jobs(provider=provider_for(running), store=tmp_path / "jobs.sqlite3", poll_interval=3600) as jobs,
    ):
        jobs.sync(all=True)
        jobs.list(sync_active=True)  # logs read once: progress is known
        live = jobs.list(status="running")
        assert live, "the simulated fleet has no running job to poll"
        assert all(j.metadata.get("price_per_s") for j in live), "running jobs should keep their price"
        assert all(j.cost_usd is not None for j in live), "list() should derive the cost so far"
        panel = jobs.panel
        panel._repr_mimebundle_()
        panel.flush()
        rev = jobs.store.revision()
        before = len(sent(panel))
        for _ in range(3):
            result = jobs.sync()
            jobs.list(sync_active=True)
            assert result.updated == 0 and result.synced == 0, result
        panel.flush()
        assert jobs.store.revision() == rev, "a poll with nothing new rewrote rows"
        traffic = _card_traffic(sent(panel)[before:])
        assert traffic == [], [wire_size(d) for _, d in traffic]
