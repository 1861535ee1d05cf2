"""Engine-loop stalls (a 5 ms ticker on the loop, `StallMonitor`) for the heavy answers of issue 15.

- reading one training whose log is 50 MB (`ReplicateProvider.get_job`, a loopback server answering);
- building a 5,000-row `GET /api/cloud/jobs` answer (the real server on the engine loop, asked from a
  worker thread).

Baselines (same run, same code): the same work with the off-loop threshold raised out of reach, so the
body is decoded (the answer built) on the loop as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import random
import statistics
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench._harness import Row, bench, spread
from bench.bench_store import _job
from bench.bench_sync import StallMonitor
from jobwidget.core.models import JobStatus
from jobwidget.engine import runtime
from jobwidget.engine.config import load_settings
from jobwidget.engine.providers import json_big
from jobwidget.engine.providers.replicate import ReplicateProvider
from jobwidget.engine.stores import JobStore
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


async def _log_stall(base_url: str) -> float:
    provider = ReplicateProvider(token="r8_bench_token", base_url=base_url)
    try:
        await provider.get_job(TRAINING_ID)  # warm the connection
        with StallMonitor() as monitor:
            detail = await provider.get_job(TRAINING_ID)
            await asyncio.sleep(0.02)
        assert detail.logs and len(detail.logs) > 1_000_000
        return monitor.worst
    finally:
        await provider.aclose()


async def _answer_stall(path: Path, rows: int) -> float:
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
        return monitor.worst
    finally:
        await handle.stop()
        await engine.aclose()


@bench("stalls")
def run_stalls(quick: bool) -> list[Row]:
    log_mb, rows = (10, 1_000) if quick else (50, 5_000)
    out: list[Row] = []
    with _serve(_training_body(log_mb * 1_000_000)) as base_url:
        offs = [asyncio.run(_log_stall(base_url)) for _ in range(RUNS)]
        saved = json_big.THREAD_BYTES
        json_big.THREAD_BYTES = 1 << 60
        try:
            ons = [asyncio.run(_log_stall(base_url)) for _ in range(RUNS)]
        finally:
            json_big.THREAD_BYTES = saved
    out.append(
        Row(
            "stalls",
            f"read one job with a {log_mb} MB log",
            statistics.median(offs) * 1e3,
            "ms",
            statistics.median(ons) * 1e3,
            "< 25 ms",
            f"median, {spread(offs, 1e3)}; baseline: received and decoded on the loop",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jobs.sqlite3"
        rng = random.Random(5)
        with JobStore(path) as store:
            store.upsert([_job(i, rng, JobStatus.COMPLETED) for i in range(rows)])
        offs = [asyncio.run(_answer_stall(path, rows)) for _ in range(RUNS)]
        saved_rows = app_mod._THREAD_ROWS
        app_mod._THREAD_ROWS = 1 << 60
        try:
            ons = [asyncio.run(_answer_stall(path, rows)) for _ in range(RUNS)]
        finally:
            app_mod._THREAD_ROWS = saved_rows
    out.append(
        Row(
            "stalls",
            f"build a {rows:,}-row GET /api/cloud/jobs answer",
            statistics.median(offs) * 1e3,
            "ms",
            statistics.median(ons) * 1e3,
            "< 25 ms",
            f"median, {spread(offs, 1e3)}; baseline: built on the loop",
        )
    )
    return out
