"""Four processes with `Jobs` on one store, pollers on, as four open notebooks would be.

Proves: the provider is polled no more than by one process (the store's lease); while all four also
sync, list and export, no lock error or traceback reaches a user (exit codes and stderr); the store ends
with no duplicates, passes `integrity_check`, and matches the provider job by job; every process sees
the same jobs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jobwidget import Jobs
from jobwidget.sim import SimConfig

from ..simhelpers import GET, LIST, ManualClock, loopback_sim, provider_for, route_count
from ._support import converged, differences, duplicate_rows, sim_truth, wait_until

# A notebook that only watches: the poller runs; the user does nothing.
_WATCHER = textwrap.dedent(
    """
    import sys, time
    import jobwidget
    from jobwidget.engine.providers.replicate import ReplicateProvider
    provider = ReplicateProvider(token="r8_test_token", base_url=sys.argv[1])
    jobs = jobwidget.Jobs(provider=provider, store=sys.argv[2], poll_interval=0.2)
    print("up", flush=True)
    sys.stdin.readline()  # until the test says stop: all processes run over the same window
    jobs.close()
    """
)

# A busy notebook: poller on, and the user syncs, lists, exports and asks progress, over and over.
_BUSY = textwrap.dedent(
    """
    import json, sys, time
    import jobwidget
    from jobwidget.engine.providers.replicate import ReplicateProvider
    provider = ReplicateProvider(token="r8_test_token", base_url=sys.argv[1])
    jobs = jobwidget.Jobs(provider=provider, store=sys.argv[2], poll_interval=0.2)
    print("up", flush=True)
    deadline = time.monotonic() + float(sys.argv[3])
    rounds = 0
    while time.monotonic() < deadline and rounds < 500:
        jobs.sync(all=rounds % 3 == 0)
        running = jobs.list(status="running", limit=5)
        if running:
            jobs.inline_progress(running[0].job_id)
        frame = jobs.to_dataframe()
        assert frame["job_id"].is_unique
        rounds += 1
    ids = sorted(j.job_id for j in jobs.list(limit=None))
    jobs.close()
    print(json.dumps({"rounds": rounds, "ids": len(ids), "unique": len(set(ids))}), flush=True)
    """
)


def _run_watchers(running, store: Path, processes: int, seconds: float) -> int:
    """Provider calls made while `processes` watchers ran for `seconds` together."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WATCHER, running.base_url, str(store)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "up", p.stderr.read() if p.poll() is not None else ""
        running.sim.reset_stats()
        time.sleep(seconds)
        calls = route_count(running, LIST) + route_count(running, GET)
        outputs = [p.communicate("stop\n", timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert err.strip() == "", err  # no warning, lock error or traceback reached the user
    return calls


@pytest.mark.slow
def test_four_processes_poll_no_more_than_one(tmp_path: Path):
    clock = ManualClock()  # nothing changes at the provider: polling cost alone is measured
    with loopback_sim(
        SimConfig(seed=51, fleet_size=300, active=40, arrival_interval=0), clock=clock
    ) as running:
        store = tmp_path / "shared.sqlite3"
        with Jobs(provider=provider_for(running), store=store, autostart=False) as jobs:
            jobs.sync(all=True)
        one = _run_watchers(running, store, 1, 3.0)
        four = _run_watchers(running, store, 4, 3.0)
        print(f"provider calls in 3 s: one process {one}, four processes {four}")
        assert one >= 5  # the single poller did poll
        assert four <= one * 1.5 + 2, (one, four)
        assert duplicate_rows(str(store)) == 0


@pytest.mark.slow
def test_four_busy_processes_on_one_store_no_lock_errors_no_duplicates(tmp_path: Path):
    # Real time at 120x: runs start, progress and finish while the four processes work.
    with loopback_sim(
        SimConfig(seed=52, fleet_size=400, active=60, arrival_interval=20, time_scale=120),
        clock=time.time,
    ) as running:
        store = tmp_path / "shared.sqlite3"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _BUSY, running.base_url, str(store), "6"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            results = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
        summaries = []
        for p, (out, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err
            assert "locked" not in err.lower() and "Traceback" not in err, err
            assert err.strip() == "", err
            summaries.append(json.loads(out.strip().splitlines()[-1]))
        print(summaries)
        assert all(s["rounds"] >= 3 and s["ids"] == s["unique"] for s in summaries), summaries
        assert duplicate_rows(str(store)) == 0

        # Freeze the provider, then one more start converges the shared store to it.
        running.sim.configure(time_scale=1e-6)
        with Jobs(provider=provider_for(running), store=store, poll_interval=0.2) as jobs:
            jobs.sync(all=True)
            truth = sim_truth(running.base_url)
            wait_until(lambda: converged(jobs.store, truth), 20, "the shared store to converge")
            assert differences(jobs.store, truth) == {"missing": [], "extra": [], "wrong": []}
            assert jobs.store.integrity_check() == "ok"
