"""Bytes sent to the panel: none for a poll that changed nothing, one small patch for one job's progress,
a bounded window for a large store, and no flood when a full sync discovers the whole history.

A real engine (`Jobs`) with its panel open syncs a simulated Replicate on loopback whose clock stands
still, so a second poll sees exactly what the first did; a recording comm keeps what the panel would put
on the wire. Counted: messages carrying cards or totals (patches, snapshots, totals), not the 2-second
heartbeat or the status banner. Baselines (same run): the same running jobs as cards that carry a cost
moving with the clock, as jobwidget sent before running costs were derived where shown (one poll 30 s
later re-sends every running card's cost); the snapshot of the cards the panel started with before it
held a window (the newest 1,000 and every active job); every stored job as cards (what the panel held
after a full sync before it held a window).
"""

from __future__ import annotations

import json
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import comm
from comm.base_comm import BaseComm

from bench._harness import Row, bench
from jobwidget import Jobs
from jobwidget.core.models import ACTIVE_STATUSES
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.sim import SimConfig, SimulatedReplicate, start_in_thread
from jobwidget.surfaces.widget import JobsPanel, job_to_card

T0 = 1_750_000_000.0


class _Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class _RecordingComm(BaseComm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
    ) -> None:
        with self._lock:
            self.messages.append((msg_type, data))


def _card_bytes(messages: list[tuple[str, Any]]) -> int:
    total = 0
    for msg_type, data in messages:
        if msg_type != "comm_msg":
            continue
        cards = data.get("method") == "custom" and data["content"].get("type") in ("patch", "hello")
        state = data.get("method") == "update" and {"snapshot", "totals"} & set(data.get("state", {}))
        if cards or state:
            total += len(json.dumps(data, ensure_ascii=False).encode())
    return total


@bench("quiet")
def run_quiet(quick: bool) -> list[Row]:
    fleet, active = (2_000, 200) if quick else (10_000, 1_000)
    sim = SimulatedReplicate(
        SimConfig(seed=15, fleet_size=fleet, active=active, arrival_interval=0, time_scale=60), clock=_Clock()
    )
    original = comm.create_comm
    comm.create_comm = lambda *a, **kw: _RecordingComm(*a, **kw)
    rows: list[Row] = []
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            start_in_thread(sim=sim) as running,
            Jobs(
                provider=ReplicateProvider(token="r8_bench_token", base_url=running.base_url),
                store=Path(tmp) / "jobs.sqlite3",
                poll_interval=3600,
            ) as jobs,
        ):
            panel = jobs.panel  # open on the empty store: the full sync streams past it
            panel._repr_mimebundle_()
            wire: _RecordingComm = panel.comm  # type: ignore[assignment]
            mark = len(wire.messages)
            jobs.sync(all=True)
            jobs.list(sync_active=True)
            panel.flush()
            during_sync = _card_bytes(wire.messages[mark:])
            every_card = len(json.dumps([job_to_card(j) for j in jobs.list(limit=None)]).encode())
            panel._repr_mimebundle_()  # what a view displayed now starts from
            snapshot = len(json.dumps(panel.snapshot).encode())
            cards = len(panel.snapshot["jobs"])
            old_start = _old_start_snapshot(jobs)
            live = jobs.list(status="running", limit=None)
            # A poll of everything active (list pages and log reads) with nothing new at the provider.
            before = len(wire.messages)
            jobs.sync()
            jobs.list(sync_active=True)
            panel.flush()
            quiet = _card_bytes(wire.messages[before:])
            # One job's progress moves, as the engine hands it to the panel.
            one = live[0]
            moved = one.evolve(
                progress=(one.progress or 0) + 1.0,
                last_log=f"{one.last_log or ''} step+1",
                metadata={**one.metadata, "inline": {**one.metadata.get("inline", {}), "step": 10_001}},
            )
            before = len(wire.messages)
            panel.upsert([moved])
            panel.flush()
            one_change = _card_bytes(wire.messages[before:])
            # Baseline: the same running cards carrying a clock-driven cost, re-sent 30 s later.
            now = datetime.now(UTC)

            def old(job: Any, at: datetime) -> Any:
                meta = {k: v for k, v in job.metadata.items() if k != "price_per_s"}
                return job.evolve(cost_usd=job.cost_at(at), metadata=meta)

            panel.upsert([old(j, now) for j in live])
            panel.flush()
            before = len(wire.messages)
            panel.upsert([old(j, now + timedelta(seconds=30)) for j in live])
            panel.flush()
            old_quiet = _card_bytes(wire.messages[before:])
    finally:
        comm.create_comm = original
    case = f"{fleet:,} jobs, {len(live):,} running"
    rows.append(Row("quiet", f"no-change poll, {case}", quiet, "B", old_quiet, "0 B"))
    rows.append(Row("quiet", f"one job's progress change, {case}", one_change, "B", None, "< 1 KB"))
    rows.append(
        Row("quiet", f"panel snapshot, {case}", snapshot, "B", old_start, "< 100 KB",
            note=f"the window: {cards} cards; baseline: the newest 1,000 + every active job, as before")
    )  # fmt: skip
    rows.append(
        Row("quiet", f"bytes to an open panel during sync(all=True) of {fleet:,}", during_sync, "B",
            every_card, "not the store", note="baseline: every stored job as cards (the panel held them all)")
    )  # fmt: skip
    return rows


def _old_start_snapshot(jobs: Jobs) -> int:
    """Bytes of the snapshot the panel opened with before it held a window: newest 1,000 + every active."""
    shown = [*jobs.list(limit=1000), *jobs.list(status=ACTIVE_STATUSES, limit=None)]
    panel = JobsPanel()
    try:
        panel.set_jobs({j.job_id: j for j in shown}.values())
        panel.flush()
        return len(json.dumps(panel.snapshot).encode())
    finally:
        panel.close()
