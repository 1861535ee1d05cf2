"""What hostile or crowded clients cost the HTTP server (issue 13), with the server in its own process:

- memory while 16 clients post 31 MiB webhook bodies with forged signatures at once (baseline: the
  bytes a server reading each body whole before checking it would hold);
- 1,500 connections that never finish their request headers: how many the server closed, and when;
- provider calls made for 20 concurrent `GET /api/cloud/jobs?sync_active=true` readers, and for 20
  concurrent syncs with different limits (baseline: each caller's own calls, as when nothing is shared).
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench._harness import Row, bench

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REPO = Path(__file__).resolve().parents[1]

_SERVER = textwrap.dedent(
    """
    import asyncio, json, sys
    from jobwidget.engine.config import load_settings
    from jobwidget.engine.providers.replicate import ReplicateProvider
    from jobwidget.engine.runtime import Engine
    from jobwidget.engine.stores import JobStore
    from jobwidget.surfaces.server import start_server

    async def main():
        store = JobStore(sys.argv[1])
        config = {"replicate": {"webhook_secret": sys.argv[2]}}
        settings = load_settings(store=sys.argv[1], config=config, env={})
        provider = ReplicateProvider(token="r8_unused_token_000000", base_url=sys.argv[3])
        engine = Engine(store, provider, settings)
        await engine.start(poll=False)
        handle = await start_server(engine, "127.0.0.1", 0, **json.loads(sys.argv[4]))
        print(handle.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await handle.stop()
        await engine.aclose()

    asyncio.run(main())
    """
)


@contextlib.contextmanager
def _server(base_url: str = "http://127.0.0.1:9", **options: object) -> Iterator[tuple[int, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, f"{tmp}/jobs.sqlite3", SECRET, base_url, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            assert proc.stdout is not None
            yield int(proc.stdout.readline()), proc.pid
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def _forged_webhooks(clients: int, mib: int) -> list[Row]:
    body = b'{"x": "' + b"a" * (mib * 1024 * 1024) + b'"}'
    with _server() as (port, pid):
        url = f"http://127.0.0.1:{port}/api/webhooks/replicate"
        before = _rss_mb(pid)

        def post(i: int) -> None:
            headers = {
                "webhook-id": f"msg_{i}",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1," + "A" * 43 + "=",
            }
            with contextlib.suppress(httpx.TransportError):
                httpx.post(url, content=body, headers=headers, timeout=120)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        peak = _rss_mb(pid, "VmHWM")
    case = f"{clients} forged {mib} MiB webhooks at once"
    return [
        Row(
            "server_limits",
            case,
            peak - before,
            "MB",
            baseline=clients * len(body) / 1e6,
            target="< 64 MiB + overhead",
            note=f"RSS {before:.0f} MB before, peak {peak:.0f} MB",
        )
    ]


def _half_open(count: int, timeout: float) -> list[Row]:
    with _server(header_timeout=timeout) as (port, _pid):
        socks = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            s.setblocking(False)
            socks.append(s)
        opened = time.monotonic()
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        closed, last = 0, opened
        deadline = opened + timeout + 60
        while closed < count and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed += 1
                    last = time.monotonic()
                    sel.unregister(sock)
        sel.close()
        for s in socks:
            s.close()
    return [
        Row(
            "server_limits",
            f"{count} half-sent requests (header timeout {timeout:g} s)",
            closed,
            "closed",
            target=f"all {count}",
            note=f"the last closed {last - opened:.1f} s after they were all open (before: none, ever)",
        )
    ]


def _shared_calls(readers: int) -> list[Row]:
    from jobwidget import Jobs, ReplicateProvider
    from jobwidget.sim import SimConfig, SimulatedReplicate, start_in_thread

    frozen = time.time()
    config = SimConfig(seed=7, fleet_size=1000, active=250, latency=0.05)
    sim = SimulatedReplicate(config, clock=lambda: frozen)
    rows: list[Row] = []
    with start_in_thread(sim=sim) as running, tempfile.TemporaryDirectory() as tmp:
        provider = ReplicateProvider(token="r8_bench_token_0000000", base_url=running.base_url)
        with Jobs(provider=provider, store=Path(tmp) / "jobs.sqlite3", autostart=False) as jobs:
            jobs.sync(all=True)
            api = jobs.serve(port=0)

            def calls() -> int:
                return int(running.sim.stats_snapshot()["total"])

            def together(method: str, urls: list[str]) -> int:
                barrier = threading.Barrier(len(urls))

                def go(url: str) -> None:
                    barrier.wait(30)
                    httpx.request(method, url, timeout=120)

                start = calls()
                threads = [threading.Thread(target=go, args=(u,)) for u in urls]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(300)
                return calls() - start

            start = calls()
            httpx.get(f"{api}/api/cloud/jobs?sync_active=true", timeout=120)
            one = calls() - start
            shared = together("GET", [f"{api}/api/cloud/jobs?sync_active=true"] * readers)
            rows.append(
                Row(
                    "server_limits",
                    f"{readers} concurrent sync_active readers",
                    shared,
                    "calls",
                    baseline=readers * one,
                    target="one refresh",
                    note=f"one reader alone: {one} calls",
                )
            )
            limits = [10 * (i + 1) for i in range(readers)]
            synced = together("POST", [f"{api}/api/cloud/jobs/sync?limit={n}" for n in limits])
            rows.append(
                Row(
                    "server_limits",
                    f"{readers} concurrent syncs, limit 10..{limits[-1]}",
                    synced,
                    "calls",
                    baseline=sum(-(-n // 100) for n in limits),
                    target="<= 2 syncs",
                )
            )
    return rows


@bench("server_limits")
def run(quick: bool) -> list[Row]:
    rows = _forged_webhooks(4 if quick else 16, 8 if quick else 31)
    rows += _half_open(100 if quick else 1500, 2.0 if quick else 10.0)
    rows += _shared_calls(20)
    return rows
