"""Engine-loop stalls (a 5 ms ticker on the loop, `StallMonitor`) in the heavy moments of issue 15.

- refreshing 1,000 active jobs among 10,000 (what a poll does: list pages, GETs, log reads);
- the first full sync of 10,000 jobs with the panel open (a `Jobs` engine whose panel writes to a
  recording comm, as bench_quiet does; the simulator in its own process, as Replicate would be);
- reading one training whose log is 50 MB (`ReplicateProvider.get_job`, a loopback server answering);
- building a 5,000-row `GET /api/cloud/jobs` answer (the real server on the engine loop, asked from a
  worker thread).

Each is measured RUNS times (median and spread). The machine is shared: the same ticker on an idle loop
for as long says how much of a stall is the machine's own (the floor row). Baselines (same run, same
code): the log read and the answer with the off-loop thresholds raised out of reach, so the body is
received and decoded (the answer built) on the loop as before.

Full garbage collections (generation 2) during each measurement are counted and timed apart (they stop
every thread, whoever triggers them; `python -m bench.gc_trace` says what brings them on). The full sync
and the answer are measured again with the process frozen as the opt-in `gc_freeze` setting leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.server
import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comm
import httpx

from bench._harness import Row, bench, spread
from bench.bench_fullsync import sim_process
from bench.bench_quiet import _RecordingComm
from bench.bench_store import _job
from bench.bench_sync import StallMonitor
from jobwidget import Jobs
from jobwidget.core.models import JobStatus
from jobwidget.engine import runtime
from jobwidget.engine.config import load_settings
from jobwidget.engine.events import EventBus
from jobwidget.engine.providers import json_big
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.engine.stores import JobStore
from jobwidget.engine.sync import SyncService
from jobwidget.surfaces import http_app as app_mod
from jobwidget.surfaces import server as server_mod

TRAINING_ID = "wj4is6lbdqqkdepnwpr6v2kuva"
RUNS = 5  # each stall is measured this many times: the machine is shared, single runs move


def _training_body(log_bytes: int) -> bytes:
    line = "flux_train_replicate:  42%|####      | 420/1000 [07:00<09:40,  1.00s/it, loss: 3.1e-01]\n"
    logs = line * (log_bytes // len(line))
    training = {
        "id": TRAINING_ID,
        "model": "ostris/flux-dev-lora-trainer",
        "version": "abc",
        "status": "processing",
        "created_at": "2025-06-01T12:00:00Z",
        "started_at": "2025-06-01T12:01:00Z",
        "logs": logs,
        "urls": {"web": f"https://replicate.com/p/{TRAINING_ID}"},
    }
    return json.dumps(training).encode()


@contextlib.contextmanager
def _serve(body: bytes) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def _log_stall(base_url: str) -> StallMonitor:
    provider = ReplicateProvider(token="r8_bench_token", base_url=base_url)
    try:
        await provider.get_job(TRAINING_ID)  # warm the connection
        with StallMonitor() as monitor:
            detail = await provider.get_job(TRAINING_ID)
            await asyncio.sleep(0.02)
        assert detail.logs and len(detail.logs) > 1_000_000
        return monitor
    finally:
        await provider.aclose()


async def _answer_stall(path: Path, rows: int) -> StallMonitor:
    settings = load_settings(store=str(path), config={}, env={})
    provider = ReplicateProvider(token="r8_bench_token", base_url="http://127.0.0.1:9")
    engine = runtime.Engine(JobStore(path), provider, settings)
    await engine.start(poll=False)
    handle = await server_mod.start_server(engine, "127.0.0.1", 0)
    try:
        url = f"{handle.url}/api/cloud/jobs?limit={rows}"
        await asyncio.to_thread(httpx.get, url, timeout=60)  # warm
        with StallMonitor() as monitor:
            answer = await asyncio.to_thread(httpx.get, url, timeout=60)
            await asyncio.sleep(0.02)
        assert answer.json()["count"] == rows
        return monitor
    finally:
        await handle.stop()
        await engine.aclose()


async def _idle(seconds: float) -> StallMonitor:
    with StallMonitor() as monitor:
        await asyncio.sleep(seconds)
    return monitor


async def _refresh_stall(base_url: str) -> StallMonitor:
    bus = EventBus()
    bus.start()
    store = JobStore(":memory:")
    service = SyncService(store, ReplicateProvider(token="r8_bench_token", base_url=base_url), bus)
    try:
        await service.sync(all=True)
        with StallMonitor() as monitor:
            await service.refresh_active()
            await asyncio.sleep(0.02)
        return monitor
    finally:
        await service.provider.aclose()
        store.close()


def _panel_sync_stall(base_url: str, path: Path) -> tuple[StallMonitor, int]:
    """The engine loop's stalls while a `Jobs` with its panel open syncs every page."""
    original = comm.create_comm
    comm.create_comm = lambda *a, **kw: _RecordingComm(*a, **kw)
    try:
        provider = ReplicateProvider(token="r8_bench_token", base_url=base_url)
        with Jobs(provider=provider, store=path, poll_interval=3600, autostart=False) as jobs:
            panel = jobs.panel
            panel._repr_mimebundle_()
            monitor = StallMonitor()
            jobs._loop.run(_enter(monitor))
            try:
                jobs.sync(all=True)
                panel.flush()
                time.sleep(0.05)
            finally:
                jobs._loop.run(_exit(monitor))
            return monitor, len(jobs.list(limit=None))
    finally:
        comm.create_comm = original


async def _enter(monitor: StallMonitor) -> None:
    monitor.__enter__()


async def _exit(monitor: StallMonitor) -> None:
    monitor.__exit__()


@contextlib.contextmanager
def _frozen() -> Iterator[None]:
    """What the opt-in `gc_freeze` setting does (engine/gc_freeze.py), undone afterwards for the next rows."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _row(
    case: str, runs: list[StallMonitor], baseline: list[StallMonitor] | None = None, note: str = ""
) -> Row:
    worst = [m.worst for m in runs]
    outside = [m.worst_outside_gc for m in runs]
    pauses = [p for m in runs for p in m.gc_pauses]
    gcs = (
        f"; {len(pauses)} full GC pauses in {len(runs)} runs, {spread(pauses, 1e3)}"
        if pauses
        else "; no full GC during the runs"
    )
    return Row(
        "stalls",
        case,
        statistics.median(worst) * 1e3,
        "ms",
        None if baseline is None else statistics.median([m.worst for m in baseline]) * 1e3,
        "< 25 ms" if not case.startswith("floor") else "",
        f"median, {spread(worst, 1e3)}; outside full GCs median {statistics.median(outside) * 1e3:.3g} ms, "
        f"{spread(outside, 1e3)}{gcs}" + (f"; {note}" if note else ""),
    )


@bench("stalls")
def run_stalls(quick: bool) -> list[Row]:
    log_mb, rows = (10, 1_000) if quick else (50, 5_000)
    fleet = 2_000 if quick else 10_000
    out: list[Row] = []
    idle = [asyncio.run(_idle(2.0)) for _ in range(RUNS)]
    out.append(_row("floor: the ticker on an idle loop, 2 s", idle, note="the machine's own delays"))
    with sim_process(fleet, fleet // 10) as base_url:
        refresh = [asyncio.run(_refresh_stall(base_url)) for _ in range(RUNS)]
        out.append(_row(f"refresh {fleet // 10:,} active among {fleet:,}", refresh))
        with tempfile.TemporaryDirectory() as tmp:
            panel = []
            for run in range(RUNS):
                monitor, n = _panel_sync_stall(base_url, Path(tmp) / f"jobs{run}.sqlite3")
                assert n == fleet, (n, fleet)
                panel.append(monitor)
            with _frozen():
                frozen = []
                for run in range(RUNS):
                    monitor, n = _panel_sync_stall(base_url, Path(tmp) / f"frozen{run}.sqlite3")
                    assert n == fleet, (n, fleet)
                    frozen.append(monitor)
        out.append(_row(f"full sync of {fleet:,} jobs, panel open", panel, note="recording comm"))
        out.append(_row(f"full sync of {fleet:,} jobs, panel open, gc_freeze on", frozen, note="opt-in"))
    with _serve(_training_body(log_mb * 1_000_000)) as base_url:
        offs = [asyncio.run(_log_stall(base_url)) for _ in range(RUNS)]
        saved = json_big.THREAD_BYTES
        json_big.THREAD_BYTES = 1 << 60
        try:
            ons = [asyncio.run(_log_stall(base_url)) for _ in range(RUNS)]
        finally:
            json_big.THREAD_BYTES = saved
    out.append(
        _row(f"read one job with a {log_mb} MB log", offs, ons, "baseline: received and decoded on the loop")
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jobs.sqlite3"
        rng = random.Random(5)
        with JobStore(path) as store:
            store.upsert([_job(i, rng, JobStatus.COMPLETED) for i in range(rows)])
        offs = [asyncio.run(_answer_stall(path, rows)) for _ in range(RUNS)]
        with _frozen():
            frozen = [asyncio.run(_answer_stall(path, rows)) for _ in range(RUNS)]
        saved_rows = app_mod._THREAD_ROWS
        app_mod._THREAD_ROWS = 1 << 60
        try:
            ons = [asyncio.run(_answer_stall(path, rows)) for _ in range(RUNS)]
        finally:
            app_mod._THREAD_ROWS = saved_rows
    out.append(
        _row(f"build a {rows:,}-row GET /api/cloud/jobs answer", offs, ons, "baseline: built on the loop")
    )
    out.append(_row(f"build a {rows:,}-row answer, gc_freeze on", frozen, note="opt-in"))
    return out
