"""Webhook -> SSE latency over loopback at 200 webhooks/s, against `jobwidget serve` in its own process.

The server runs as a subprocess (as deployed), on a file store pre-seeded with queued jobs; each signed
webhook moves one job to `processing`, so each must come back as one `job_status_changed` on an SSE
stream. Webhooks are sent open-loop (on a fixed schedule, not waiting for answers), signed beforehand
so signing cost stays out of the figure. The load generator is a minimal HTTP/1.1 client over a pool
of keep-alive connections (raw asyncio streams): a full client library costs more CPU per request than
the server under test, and on a small machine it would measure itself.

Baseline, same run, same client, same rate: the HTTP round trip of `GET /api/health` (a trivial
route). The webhook path adds verification, a deduplication write, the job upsert, the event bus
and the SSE write on top of one such round trip; the ratio column shows how much.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench._harness import Row, bench
from jobwidget.core.models import Job, JobStatus
from jobwidget.core.webhooks import sign
from jobwidget.engine.stores import JobStore

RATE = 200.0  # webhooks per second
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(path: Path, n: int) -> list[str]:
    ids = [f"bench{i:021d}" for i in range(n)]
    store = JobStore(path)
    store.upsert(
        Job(
            job_id=job_id, provider="replicate", status=JobStatus.QUEUED, created_at=T0 + timedelta(seconds=i)
        )
        for i, job_id in enumerate(ids)
    )
    store.close()
    return ids


def _training(job_id: str) -> bytes:
    return json.dumps(
        {
            "id": job_id,
            "model": "ostris/flux-dev-lora-trainer",
            "version": "e440909d",
            "status": "processing",
            "input": {},
            "output": None,
            "logs": "flux_train_replicate:  30%|███ | 300/1000 [05:00<11:40,  1.00s/it, loss: 3.5e-01]",
            "error": None,
            "metrics": {},
            "created_at": "2026-11-01T12:00:00.000000Z",
            "started_at": "2026-11-01T12:00:30.000000Z",
            "completed_at": None,
            "urls": {"web": f"https://replicate.com/p/{job_id}"},
        }
    ).encode()


class _Pool:
    """Keep-alive HTTP/1.1 connections; `request` sends prepared bytes and returns the status code."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._all: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        for _ in range(self.size):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._all.append(writer)
            self._idle.put_nowait((reader, writer))

    async def request(self, raw: bytes) -> int:
        reader, writer = await self._idle.get()
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            return status
        finally:
            self._idle.put_nowait((reader, writer))

    async def close(self) -> None:
        for writer in self._all:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _raw(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _open_loop(n: int, fire: Callable[[int], Awaitable[None]]) -> list[float]:
    """Call `fire(i)` for i < n at RATE per second on a fixed schedule; return each call's duration."""
    durations: list[float] = []

    async def one(i: int) -> None:
        t = time.perf_counter()
        await fire(i)
        durations.append(time.perf_counter() - t)

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return durations


async def _measure(port: int, ids: list[str], drain_s: float) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    now = int(time.time())
    deliveries = []
    for i, job_id in enumerate(ids):
        body = _training(job_id)
        msg_id = f"msg_bench_{i}"
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(now),
            "webhook-signature": sign(SECRET, msg_id, now, body),
        }
        deliveries.append((job_id, _raw("POST", "/api/webhooks/replicate", port, headers, body)))
    health = _raw("GET", "/api/health", port, {})
    pool = _Pool("127.0.0.1", port, size=32)
    await pool.open()
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    statuses: list[int] = []
    try:
        for _ in range(50):
            await pool.request(health)  # warm up

        async def trivial(i: int) -> None:
            statuses.append(await pool.request(health))

        baseline = await _open_loop(len(ids), trivial)
        async with (
            httpx.AsyncClient(base_url=url, timeout=30) as client,
            client.stream("GET", "/api/events") as stream,
        ):
            lines = stream.aiter_lines()
            await lines.__anext__()  # ": connected"
            done = asyncio.Event()

            async def read() -> None:
                async for line in lines:
                    if line.startswith("data: "):
                        t = time.perf_counter()
                        event = json.loads(line[6:])
                        if event["type"] == "job_status_changed":
                            received.setdefault(event["job_id"], t)
                            if len(received) == len(ids):
                                done.set()
                                return

            reader = asyncio.create_task(read())

            async def webhook(i: int) -> None:
                job_id, raw = deliveries[i]
                sent[job_id] = time.perf_counter()
                statuses.append(await pool.request(raw))

            t_start = time.perf_counter()
            posts = await _open_loop(len(ids), webhook)
            elapsed = time.perf_counter() - t_start
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), drain_s)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    finally:
        await pool.close()
    latencies = [received[j] - sent[j] for j in received if j in sent]
    return {
        "latencies": latencies,
        "posts": posts,
        "baseline": baseline,
        "lost": len(ids) - len(received),
        "errors": sum(1 for s in statuses if s != 200),
        "rate": len(ids) / elapsed,
    }


@bench("webhooks")
def run(quick: bool) -> list[Row]:
    duration = 2.0 if quick else 10.0
    n = int(duration * RATE)
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "bench.sqlite3"
        ids = _seed(store_path, n)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "JOBWIDGET_"))}
        env["JOBWIDGET_WEBHOOK_SECRET"] = SECRET
        cmd = [sys.executable, "-m", "jobwidget.surfaces.cli", "serve", "--port", str(port)]
        cmd += ["--store", str(store_path), "--provider", "sim", "--no-poll", "--log-level", "warning"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"jobwidget serve did not start: {proc.stderr.read() if proc.stderr else ''}"
                    )
                time.sleep(0.1)
            result = asyncio.run(_measure(port, ids, drain_s=10.0))
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    lat = [x * 1e3 for x in result["latencies"]]
    posts = [x * 1e3 for x in result["posts"]]
    base = [x * 1e3 for x in result["baseline"]]
    mean = statistics.fmean(lat) if lat else float("nan")
    note = f"{n} webhooks at {result['rate']:.0f}/s, {duration:g} s"
    rows = [
        Row(
            "webhooks",
            "webhook -> SSE p50",
            _pct(lat, 0.5),
            "ms",
            _pct(base, 0.5),
            note=note + "; vs GET RTT",
        ),
        Row(
            "webhooks",
            "webhook -> SSE p99",
            _pct(lat, 0.99),
            "ms",
            _pct(base, 0.99),
            target="< 1000 ms",
            note="baseline: trivial GET round trip p99",
        ),
        Row("webhooks", "webhook POST RTT p50", _pct(posts, 0.5), "ms", _pct(base, 0.5)),
        Row("webhooks", "webhook POST RTT p99", _pct(posts, 0.99), "ms", _pct(base, 0.99)),
        Row(
            "webhooks",
            "events lost / non-200 answers",
            float(result["lost"] + result["errors"]),
            "count",
            target="0",
            note=f"lost {result['lost']}, non-200 {result['errors']}; mean {mean:.0f} ms",
        ),
    ]
    return rows
