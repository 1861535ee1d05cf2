"""SIGKILL mid-sync, 20 times: the store stays a valid SQLite database with no duplicate jobs, the dead
process's poll lease is taken over, and the next start converges to the provider's truth.

The child syncs every page of a 3,000-job fleet in a loop while its poller refreshes 600 running jobs,
so each sync writes hundreds of rows; kill times are spread over a whole sync (seeded, so every run kills
at the same offsets) and the child's last words show whether the kill landed mid-sync.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jobwidget import Jobs
from jobwidget.engine.stores import JobStore
from jobwidget.sim import SimConfig, SimulatedReplicate, start_in_thread

from ..simhelpers import provider_for
from ._support import converged, differences, duplicate_rows, sim_truth, wait_until

KILLS = 20

_CHILD = textwrap.dedent(
    """
    import sys
    import jobwidget
    from jobwidget.engine.providers.replicate import ReplicateProvider
    provider = ReplicateProvider(token="r8_test_token", base_url=sys.argv[1])
    jobs = jobwidget.Jobs(provider=provider, store=sys.argv[2], poll_interval=0.2)
    print("ready", flush=True)
    for n in range(1000):
        print("sync", n, flush=True)
        result = jobs.sync(all=True)
        print("done", n, result.synced, result.updated, flush=True)
    """
)


class PausableClock:
    """Wall time that can be frozen: the fleet moves during the kills and holds still for the comparison."""

    def __init__(self) -> None:
        self._frozen: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.time() if self._frozen is None else self._frozen

    def freeze(self) -> None:
        with self._lock:
            self._frozen = time.time()


def _wal_size(store: Path) -> int:
    try:
        return store.with_name(store.name + "-wal").stat().st_size
    except FileNotFoundError:
        return 0


def _kill_mid_sync(base_url: str, store: Path, delay: float, *, on_write: bool) -> str:
    """Start the child, SIGKILL it `delay` s after it is up (with `on_write`, at the first large write
    after that: the WAL growing by over 64 KB, which only a sync's upsert does); return its last line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, base_url, str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first == "ready", (first, proc.poll())
        time.sleep(delay)
        if on_write:
            start = _wal_size(store)
            deadline = time.monotonic() + 10
            while _wal_size(store) < start + 65536 and time.monotonic() < deadline:
                time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        out = proc.stdout.read()  # through the same buffer readline() used (communicate() would skip it)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    lines = [line for line in out.splitlines() if line.strip()]
    return lines[-1] if lines else "ready"


@pytest.mark.slow
def test_sigkill_mid_sync_twenty_times_then_the_next_start_converges(tmp_path: Path):
    clock = PausableClock()
    sim = SimulatedReplicate(
        SimConfig(seed=41, fleet_size=3000, active=600, arrival_interval=30, time_scale=60, latency=0.003),
        clock=clock,
    )
    store = tmp_path / "crash.sqlite3"
    rng = random.Random(41)
    last_words: list[str] = []
    previous = 0
    counts: list[int] = []
    with start_in_thread(sim=sim) as running:
        for i in range(KILLS):
            # Even kills: at a random moment of a sync (mostly while pages are fetched); odd kills: while
            # a sync's upsert is being written.
            delay = rng.uniform(0.1, 1.5)
            last_words.append(_kill_mid_sync(running.base_url, store, delay, on_write=i % 2 == 1))
            with JobStore(store) as s:
                assert s.integrity_check() == "ok", f"kill {i + 1}: {s.integrity_check()}"
                count = s.count()
            assert duplicate_rows(str(store)) == 0, f"kill {i + 1}"
            assert count >= previous, f"kill {i + 1}: the store lost jobs ({previous} -> {count})"
            previous = count
            counts.append(count)
        mid_sync = sum(1 for line in last_words if line.startswith("sync"))
        print(f"{mid_sync} of {KILLS} kills landed mid-sync; last words: {last_words}; jobs: {counts}")
        assert mid_sync >= KILLS * 3 // 4, last_words

        # The next start: the dead child's lease is taken over at once, and the store converges.
        clock.freeze()
        with Jobs(provider=provider_for(running), store=store, poll_interval=0.2) as jobs:
            wait_until(lambda: jobs._engine.poller.is_leader, 10, "the new process to take the poll lease")
            jobs.sync(all=True)
            truth = sim_truth(running.base_url)
            wait_until(lambda: converged(jobs.store, truth), 20, "the store to converge after the kills")
            assert differences(jobs.store, truth) == {"missing": [], "extra": [], "wrong": []}
            assert jobs.store.integrity_check() == "ok"
        assert duplicate_rows(str(store)) == 0
