"""The panel tells the truth, end to end over the simulated Replicate on 127.0.0.1.

- Provider errors stay on the panel (with the time of the last success) until the provider answers
  again, whether polling or a panel Sync met them.
- The header's counts and costs are the whole store's (`JobStore.totals`), not the cards loaded, and
  follow each view's search and the jobs' changes.
- A displayed panel beats until its `Jobs` closes.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobwidget import Jobs
from jobwidget.core.models import Job, JobStatus
from jobwidget.engine.stores import JobStore
from jobwidget.sim import SimConfig
from jobwidget.surfaces.widget import JobsPanel

from .deadlines import wait_for
from .simhelpers import ManualClock, loopback_sim, provider_for
from .test_widget import customs, from_view, recording_comm  # noqa: F401  (recording_comm: autouse)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
REVOKED = "r8_revokedrevokedrevokedrevoked0000"  # the sim now accepts only this: our token gets 401


# ----------------------------------------------------------------------------- the store's totals


def _job(i: int, status: str = "completed", **kw: Any) -> Job:
    fields: dict[str, Any] = {
        "job_id": f"t{i:05d}",
        "provider": "replicate",
        "status": JobStatus(status),
        "name": f"run {i}",
        "model": "ostris/flux-dev-lora-trainer",
        "created_at": T0 + timedelta(minutes=i),
    }
    fields.update(kw)
    return Job(**fields)


def test_store_totals_count_every_job_per_status_with_cost_and_estimates(tmp_path: Path):
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        store.upsert(
            [_job(i, cost_usd=0.5) for i in range(2000)]
            + [_job(i, "failed") for i in range(2000, 2100)]  # no cost known
            + [
                _job(i, "running", started_at=T0, cost_usd=0.25, metadata={"cost_estimate": True})
                for i in range(2100, 2110)
            ]
            + [_job(2110, "queued")]
        )
        totals = store.totals()
        clock_free = {"billed": 0.0, "rate": 0.0, "rate_t0": 0.0}
        assert totals == {
            "completed": {
                "count": 2000,
                "cost": 1000.0,
                "costed": 2000,
                "estimated": 0,
                **clock_free,
                "billed": 1000.0,
            },
            "failed": {"count": 100, "cost": 0.0, "costed": 0, "estimated": 0, **clock_free},
            "running": {"count": 10, "cost": 2.5, "costed": 10, "estimated": 10, **clock_free, "billed": 2.5},
            "queued": {"count": 1, "cost": 0.0, "costed": 0, "estimated": 0, **clock_free},
        }
        assert sum(t["count"] for t in totals.values()) == store.count()
        assert store.totals("   ") == totals  # blank: everything
        assert store.totals("no-such-thing") == {}


def test_store_totals_derive_running_costs_at_read_time_from_the_stored_price(tmp_path: Path):
    """A running job stores its price, not a cost: totals add elapsed x price when read, and say how."""
    price = 0.001
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        store.upsert(
            [_job(i, "running", started_at=T0, metadata={"price_per_s": price}) for i in range(3)]
            + [_job(3, cost_usd=2.0, started_at=T0, metadata={"price_per_s": price})]  # finished: billed
        )
        before = datetime.now(UTC).timestamp()
        totals = store.totals()
        after = datetime.now(UTC).timestamp()
        running = totals["running"]
        assert running["billed"] == 0.0 and running["costed"] == 3 and running["estimated"] == 3
        assert running["rate"] == pytest.approx(3 * price)
        assert running["rate_t0"] == pytest.approx(3 * price * T0.timestamp())
        low, high = 3 * price * (before - T0.timestamp()), 3 * price * (after - T0.timestamp())
        assert low - 1e-6 <= running["cost"] <= high + 1e-6, (low, running["cost"], high)
        assert totals["completed"]["cost"] == 2.0 and totals["completed"]["rate"] == 0.0


def test_store_totals_search_id_name_and_model_with_literal_wildcards(tmp_path: Path):
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        store.upsert(
            [
                _job(1, name="Flux Portraits 50%", cost_usd=1.0),
                _job(2, name="flux portraits 50x", cost_usd=2.0),
                _job(3, name="sdxl a_b", model="stability/SDXL", cost_usd=4.0),
                _job(4, name="sdxl axb", model="stability/sdxl", cost_usd=8.0),
                _job(5, name=r"path\to\data", cost_usd=16.0),
                _job(6, name=None, model=None, cost_usd=32.0),
            ]
        )

        def matching(search: str) -> tuple[int, float]:
            t = store.totals(search).get("completed", {"count": 0, "cost": 0.0})
            return t["count"], t["cost"]

        assert matching("FLUX PORTRAITS") == (2, 3.0)  # case-insensitive
        assert matching("50%") == (1, 1.0)  # % is a character, not "anything"
        assert matching("a_b") == (1, 4.0)  # _ is a character, not "any one"
        assert matching("\\to\\") == (1, 16.0)
        assert matching("stability/sdxl") == (2, 12.0)  # the model column
        assert matching("t00006") == (1, 32.0)  # the id, for a job with no name or model
        assert matching("  portraits ") == (2, 3.0)  # surrounding blanks ignored


# ----------------------------------------------------------------------------- totals in the panel


def _wire(totals: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        s: {"n": t["count"], "cost": round(t["cost"], 4), "costed": t["costed"], "est": t["estimated"]}
        for s, t in totals.items()
    }


def test_panel_totals_cover_the_whole_store_and_follow_search_and_changes(tmp_path: Path):
    clock = ManualClock()
    cfg = SimConfig(seed=12, fleet_size=1300, active=6, arrival_interval=0, time_scale=60)
    store_path = tmp_path / "jobs.sqlite3"
    with (
        loopback_sim(cfg, clock=clock) as running,
        Jobs(provider=provider_for(running), store=store_path, poll_interval=0.3) as jobs,
    ):
        jobs.sync(all=True)
        store = jobs.store
        assert store.count() == 1300
        panel = jobs.panel
        panel._repr_mimebundle_()
        assert len(panel.cards()) < store.count()  # the panel holds a window: the newest page, the active
        header = panel.totals["by_search"][""]
        assert sum(t["n"] for t in header.values()) == 1300
        # Running jobs' cost estimates grow with every poll: compare once polling has stopped.
        jobs.stop()

        def costs_agree() -> bool:
            frame_cost = float(jobs.to_dataframe()["cost_usd"].sum())
            now = time.time()  # the header carries running costs as rate x now - t0: the view ticks them
            header = panel.totals["by_search"][""].values()
            header_cost = sum(t["cost"] + t.get("rate", 0.0) * now - t.get("t0", 0.0) for t in header)
            # Within a cent: a running job's estimate moves by fractions of a cent between polls, and a
            # move too small to change its card does not trigger a recount.
            return abs(header_cost - frame_cost) < 0.01

        wait_for(costs_agree, "the header's total cost to equal the DataFrame's")
        df = jobs.to_dataframe()
        jobs.start()

        # A view searches by part of a model name, in capitals: the store's count, not the cards'.
        model = str(df["model"].value_counts().index[0])
        query = model.split("/")[-1][:8]
        from_view(panel, {"type": "search", "text": query.upper(), "view": "v1"})
        found = wait_for(lambda: panel.totals["by_search"].get(query.upper()), "the search's totals")
        expected = sum(
            query.lower() in f"{j.job_id}\n{j.name or ''}\n{j.model or ''}".lower()
            for j in store.list(limit=None)
        )
        assert sum(t["n"] for t in found.values()) == expected > 0

        # Jobs move on (the running ones finish): the header follows the store without a Sync.
        assert header.get("running", {}).get("n", 0) > 0
        clock.advance(7 * 24 * 3600)
        wait_for(lambda: store.count(status="running") == 0, "the poller to see the jobs finish")
        wait_for(
            lambda: panel.totals["by_search"][""] == _wire(store.totals()),
            "the panel's totals to match the store's after the jobs finished",
        )
        assert "running" not in panel.totals["by_search"][""]


# ----------------------------------------------------------------------------- errors stay up


def _error(panel: JobsPanel) -> str:
    return panel.status.get("error") or ""


def test_a_polling_error_stays_on_the_panel_until_the_provider_answers(tmp_path: Path):
    clock = ManualClock()
    cfg = SimConfig(seed=5, fleet_size=40, active=4, arrival_interval=0)
    store_path = tmp_path / "jobs.sqlite3"
    with (
        loopback_sim(cfg, clock=clock) as running,
        Jobs(provider=provider_for(running), store=store_path, poll_interval=0.2) as jobs,
    ):
        jobs.sync()
        poller = jobs._engine.poller
        panel = jobs.panel
        wait_for(lambda: poller.last_success is not None, "a successful poll round")
        running.sim.configure(token=REVOKED)
        wait_for(lambda: "401" in _error(panel), "the panel to show the 401")
        ok = panel.status["last_success"]
        assert isinstance(ok, int) and ok <= datetime.now(UTC).timestamp()
        # Round after round fails (backing off): the banner stays, with the same last success.
        wait_for(lambda: poller.errors >= 3, "three failed poll rounds")
        jobs._feed.update_status()  # what any engine event does
        panel.flush()
        assert "401" in _error(panel) and panel.status["last_success"] == ok
        assert "r8_test_token" not in json.dumps(panel.get_state(), default=str)
        running.sim.configure(token=None)
        wait_for(lambda: panel.status.get("error") is None, "the banner to clear once polling recovers")
        assert panel.status["last_success"] is None

        # Failing again, long enough to back off; then a sync gets through: the banner goes with it
        # (the poller, woken by the sync, retries then too).
        running.sim.configure(token=REVOKED)
        wait_for(lambda: poller.errors >= 3, "three failed poll rounds")
        running.sim.configure(token=None)
        jobs.sync()
        wait_for(lambda: panel.status.get("error") is None, "a successful sync to clear the banner")
        wait_for(lambda: poller.errors == 0, "the poller to recover")


def test_a_failed_panel_sync_leaves_a_banner_until_a_later_success(tmp_path: Path):
    clock = ManualClock()
    with loopback_sim(SimConfig(seed=6, fleet_size=40, active=4, arrival_interval=0), clock=clock) as running:
        store = tmp_path / "jobs.sqlite3"
        with Jobs(provider=provider_for(running, retries=0), store=store, autostart=False) as jobs:
            jobs.sync()
            panel = jobs.panel
            running.sim.configure(token=REVOKED)
            from_view(panel, {"type": "sync"})
            wait_for(lambda: any("Sync failed" in t["text"] for t in customs(panel, "toast")), "the toast")
            wait_for(lambda: "401" in _error(panel), "the failed Sync's banner")
            assert isinstance(panel.status["last_success"], int)  # the jobs.sync() before
            jobs._feed.update_status()  # later engine events leave it up
            panel.flush()
            assert "401" in _error(panel)
            running.sim.configure(token=None)
            from_view(panel, {"type": "sync"})
            wait_for(lambda: panel.status.get("error") is None, "a successful Sync to clear the banner")

            # With the poller on, its next successful round clears a failed Sync's banner too.
            running.sim.configure(token=REVOKED)
            from_view(panel, {"type": "sync"})
            wait_for(lambda: "401" in _error(panel), "the second failed Sync's banner")
            running.sim.configure(token=None)
            jobs.start()
            wait_for(lambda: panel.status.get("error") is None, "a poll round to clear the banner")


def test_a_displayed_panel_beats_until_jobs_closes(tmp_path: Path):
    with loopback_sim(SimConfig(seed=7, fleet_size=10, active=2, arrival_interval=0)) as running:
        jobs = Jobs(provider=provider_for(running), store=tmp_path / "jobs.sqlite3", autostart=False)
        panel = jobs.panel
        assert not panel.beating
        jobs._repr_mimebundle_()
        wait_for(lambda: customs(panel, "beat"), "a heartbeat after display")
        assert panel.beating
        from_view(panel, {"type": "search", "text": "x", "view": "v"})  # the totals worker starts
        wait_for(lambda: "x" in panel.totals["by_search"], "the search's totals")
        jobs.close()
        assert not panel.beating and not panel._totals_worker._thread.is_alive()
