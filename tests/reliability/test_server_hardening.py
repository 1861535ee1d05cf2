"""The HTTP server when someone means it harm, or just a lot of clients at once (issue 13).

Proves, each against a real server on 127.0.0.1: a burst of 1,000 events reaches a reading SSE client
whole and in order, and a reconnecting client gets exactly what it missed (from the server's log, and
from the store after a restart); half-sent headers and bodies are cut off after their timeouts; a
cross-site form cannot start a sync; 20 concurrent `sync_active` readers share one refresh and 20 syncs
with different limits share at most two; sixteen 31 MiB webhook posts with forged signatures do not
grow the server's memory by their size.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobwidget import Jobs, ReplicateProvider
from jobwidget.core.models import Job, JobStatus
from jobwidget.sim import SimConfig

from ..simhelpers import ManualClock, loopback_sim, provider_for
from ._server_process import rss_mb, server_process
from ._support import wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2026, 11, 28, 10, tzinfo=UTC)


def _jobs(tmp_path: Path, name: str) -> Jobs:
    """A `Jobs` whose provider is never called (events are made by writing to the engine directly)."""
    provider = ReplicateProvider(token="r8_unused_token_000000", base_url="http://127.0.0.1:9")
    return Jobs(
        provider=provider,
        store=tmp_path / f"{name}.sqlite3",
        config={"replicate": {"webhook_secret": SECRET}},
        autostart=False,
    )


def _serve(jobs: Jobs, **options: Any) -> str:
    """Serve, and wait until the server's one provider call of its own (the webhook secret) is done."""
    api = jobs.serve(port=0, **options)
    wait_until(
        lambda: httpx.get(f"{api}/api/health", timeout=10).json()["webhook_secret"] != "fetching",
        10,
        "the webhook secret fetch",
    )
    return api


def _job(i: int, status: JobStatus) -> Job:
    return Job(
        job_id=f"burst{i:05d}", provider="replicate", status=status, created_at=T0 + timedelta(seconds=i)
    )


def _write(jobs: Jobs, batch: list[Job]) -> None:
    """One store write through the engine (what a poll or a webhook does), announced as events."""
    jobs._loop.run(jobs._engine.service.apply(batch, source="test"))


class SseReader:
    """Reads an event stream in a thread: every `data:` event, and the id a browser would resume from."""

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.last_id: str | None = last_event_id
        self.status: int | None = None
        self._start_id = last_event_id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sse-reader", daemon=True)
        self._thread.start()
        assert self.connected.wait(10), f"the event stream did not open (status {self.status})"

    def _run(self) -> None:
        headers = {"Last-Event-ID": self._start_id} if self._start_id else {}
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=60)) as client,
            client.stream("GET", self.url, headers=headers) as response,
        ):
            self.status = response.status_code
            pending_id: str | None = None
            data: dict[str, Any] | None = None
            for line in response.iter_lines():
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("id: "):
                    pending_id = line[4:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and data is not None:
                    with self._lock:
                        self.events.append(data)
                        if pending_id is not None:
                            self.last_id = pending_id
                    pending_id, data = None, None
                if self._stop.is_set():
                    return

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self._stop.set()  # heartbeats (0.2 s in these tests) wake the reader to see it
        self._thread.join(10)
        assert not self._thread.is_alive(), "the SSE reader did not stop"


def _status_events(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["job_id"], e["status"]) for e in events if e["type"] == "job_status_changed"]


# ------------------------------------------------------------------------------------------ SSE


def test_a_burst_of_1000_events_reaches_a_reading_client_in_order_and_a_reconnect_gets_what_it_missed(
    tmp_path: Path,
):
    """Regression: the event bus publishes a burst before any stream runs, and with one 256-event queue
    per client a poll yielding 300 events dropped every client. Events also carried no id, so nobody
    could catch up."""
    with _jobs(tmp_path, "burst") as jobs:
        _write(jobs, [_job(i, JobStatus.QUEUED) for i in range(1000)])
        api = jobs.serve(port=0, heartbeat=0.2)
        hub = jobs._server.app.state.api.hub  # type: ignore[union-attr]
        reader = SseReader(f"{api}/api/events")
        _write(jobs, [_job(i, JobStatus.RUNNING) for i in range(1000)])  # 1,000 events in one burst
        wait_until(lambda: len(reader.snapshot()) >= 1000, 30, "1,000 events to reach the client")
        assert _status_events(reader.snapshot()) == [(f"burst{i:05d}", "running") for i in range(1000)]
        assert hub.dropped == 0 and hub.clients == 1
        stopped_at = reader.last_id
        assert stopped_at == str(jobs.store.revision())  # ids are store revisions
        reader.close()

        # While it is away: 20 writes, one job each. It reconnects with its Last-Event-ID.
        for i in range(20):
            _write(jobs, [_job(i, JobStatus.COMPLETED)])
        again = SseReader(f"{api}/api/events", last_event_id=stopped_at)
        _write(jobs, [_job(999, JobStatus.FAILED)])  # a live event after the replay, as a marker
        wait_until(lambda: ("burst00999", "failed") in _status_events(again.snapshot()), 10, "the marker")
        keys = ("type", "job_id", "status", "previous")
        missed = [{k: e[k] for k in keys} for e in again.snapshot() if e["type"] == "job_status_changed"]
        assert missed == [
            {
                "type": "job_status_changed",
                "job_id": f"burst{i:05d}",
                "status": "completed",
                "previous": "running",
            }
            for i in range(20)
        ] + [
            {"type": "job_status_changed", "job_id": "burst00999", "status": "failed", "previous": "running"}
        ]
        again.close()

        # After a restart the log is gone: the store replays the jobs written since the client's id.
        jobs.stop_serving()
        api = jobs.serve(port=0, heartbeat=0.2)
        replayed = SseReader(f"{api}/api/events", last_event_id=stopped_at)
        _write(jobs, [_job(998, JobStatus.CANCELLED)])
        wait_until(lambda: ("burst00998", "cancelled") in _status_events(replayed.snapshot()), 10, "a marker")
        events = _status_events(replayed.snapshot())
        assert events == [(f"burst{i:05d}", "completed") for i in range(20)] + [
            ("burst00999", "failed"),
            ("burst00998", "cancelled"),
        ]
        assert all(e.get("replayed") for e in replayed.snapshot()[:21])
        replayed.close()


def test_a_client_that_falls_off_the_log_while_waiting_is_caught_up_from_the_store(tmp_path: Path):
    """Twenty writes reach the stream in one go, far more than the log holds (here 64 KiB), while the
    client waits for its turn: it is not dropped; what fell off the log is replayed from the store."""
    with _jobs(tmp_path, "small-log") as jobs:
        _write(jobs, [_job(i, JobStatus.QUEUED) for i in range(2000)])
        api = jobs.serve(port=0, heartbeat=0.2, sse_buffer=64 * 1024)
        hub = jobs._server.app.state.api.hub  # type: ignore[union-attr]
        reader = SseReader(f"{api}/api/events")
        gate = jobs._loop.run(_make_event())

        async def hold(_event: dict[str, Any]) -> None:  # the event dispatcher waits here once
            await gate.wait()

        jobs._engine.bus.on("jobs_changed", hold)
        for n in range(20):  # queued behind the held dispatcher, then published at once
            _write(jobs, [_job(i, JobStatus.RUNNING) for i in range(100 * n, 100 * (n + 1))])
        jobs._loop.run(_release(gate))
        wait_until(lambda: len(_status_events(reader.snapshot())) >= 2000, 20, "every job's event")
        events = _status_events(reader.snapshot())
        assert {job_id for job_id, _ in events} == {f"burst{i:05d}" for i in range(2000)}
        assert {status for _, status in events} == {"running"}
        assert hub.dropped == 0 and hub.caught_up >= 1
        reader.close()


async def _make_event() -> Any:
    import asyncio

    return asyncio.Event()


async def _release(gate: Any) -> None:
    gate.set()


def test_streams_are_capped_in_total_as_well_as_per_address(tmp_path: Path):
    with _jobs(tmp_path, "cap") as jobs:
        api = jobs.serve(port=0, heartbeat=0.2, sse_max_clients=3, sse_per_client=10)
        readers = [SseReader(f"{api}/api/events") for _ in range(3)]
        refused = httpx.get(f"{api}/api/events", timeout=10)
        assert refused.status_code == 503 and "3 event streams" in refused.json()["detail"]
        assert refused.headers["retry-after"]
        for reader in readers:
            reader.close()


# ------------------------------------------------------------------------------- timeouts


def _open_half_sent(port: int, count: int, payload: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(payload)
        s.setblocking(False)
        socks.append(s)
    return socks


def _wait_closed(socks: list[socket.socket], timeout: float) -> int:
    """How many of `socks` the server closed within `timeout` s (EOF or reset seen by the client)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    deadline = time.monotonic() + timeout
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                data = b"" if not isinstance(sock, BlockingIOError) else b"x"
            if not data:
                closed += 1
                sel.unregister(sock)
    sel.close()
    for s in socks:
        s.close()
    return closed


def test_connections_that_never_finish_their_headers_are_closed_after_the_timeout(tmp_path: Path):
    """Regression: 1,500 half-sent requests stayed open for good (uvicorn has no header timeout)."""
    with _jobs(tmp_path, "slowloris") as jobs:
        api = jobs.serve(port=0, header_timeout=1.0)
        port = int(api.rsplit(":", 1)[1])
        stats = jobs._server.app.state.api.header_timeouts  # type: ignore[union-attr]
        socks = _open_half_sent(port, 200, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        idle = _open_half_sent(port, 20, b"")  # connected, never a byte
        assert _wait_closed(socks + idle, 30) == 220
        assert stats.closed >= 220
        assert httpx.get(f"{api}/api/health", timeout=10).status_code == 200  # still serving


def test_a_body_that_never_finishes_is_answered_408_and_closed(tmp_path: Path):
    with _jobs(tmp_path, "slowbody") as jobs:
        api = jobs.serve(port=0, body_timeout=1.0)
        port = int(api.rsplit(":", 1)[1])
        for path in ("/api/cloud/jobs/sync", "/api/webhooks/replicate"):
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            now = int(time.time())
            s.sendall(
                (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
                    f"webhook-id: msg_slow\r\nwebhook-timestamp: {now}\r\nwebhook-signature: v1,AAAA\r\n\r\n"
                ).encode()
                + b"{" * 10
            )
            answer = b""
            while chunk := s.recv(65536):  # ends when the server closes the connection
                answer += chunk
            s.close()
            assert answer.startswith(b"HTTP/1.1 408"), (path, answer[:200])
            assert b"did not arrive within 1 s" in answer and b"connection: close" in answer.lower()


# ----------------------------------------------------------------------------- cross-site


def test_a_cross_site_form_cannot_start_a_sync(tmp_path: Path):
    """Regression: a page on another site could POST /api/cloud/jobs/sync?all=true (a form needs no
    JavaScript and no CORS). Requests that change something must now be same-origin or carry the token."""
    config = SimConfig(seed=2, fleet_size=20, active=2)
    with (
        loopback_sim(config, clock=ManualClock()) as running,
        Jobs(provider=provider_for(running), store=tmp_path / "csrf.sqlite3", autostart=False) as jobs,
    ):
        api = _serve(jobs)
        host = api.split("//", 1)[1]
        url = f"{api}/api/cloud/jobs/sync?all=true"
        form = {"content-type": "application/x-www-form-urlencoded"}
        before = running.sim.stats_snapshot()["total"]
        for headers in (
            {"origin": "https://evil.example", "sec-fetch-site": "cross-site"},
            {"origin": "https://evil.example"},  # an older browser: no Sec-Fetch-Site
            {"origin": "null"},  # a sandboxed frame or a file: page
            {"origin": f"http://{host}", "sec-fetch-site": "same-site"},  # another port of this host
        ):
            r = httpx.post(url, headers={**form, **headers}, content=b"x=1", timeout=20)
            assert r.status_code == 403 and "another site" in r.json()["detail"], (headers, r.text)
        assert running.sim.stats_snapshot()["total"] == before  # no provider call was made
        for headers in (
            {"origin": f"http://{host}", "sec-fetch-site": "same-origin"},
            {"origin": f"http://{host}"},
            {},  # curl, scripts
        ):
            r = httpx.post(url, headers=headers, timeout=20)
            assert r.status_code == 200, (headers, r.text)
        jobs.stop_serving()
        api = _serve(jobs, allowed_origins=("http://localhost:8888",))
        r = httpx.post(f"{api}/api/cloud/jobs/sync", headers={"origin": "http://localhost:8888"}, timeout=20)
        assert r.status_code == 200, r.text


# -------------------------------------------------------------------------- shared work


def test_twenty_concurrent_readers_share_one_refresh_and_syncs_share_one_flight(tmp_path: Path):
    """Regression: 20 concurrent `GET ?sync_active=true` made 200 provider calls, and 20 syncs with
    different `limit`s 600, because only identical syncs were shared."""
    config = SimConfig(seed=4, fleet_size=400, active=60, latency=0.05)
    with (
        loopback_sim(config, clock=ManualClock()) as running,
        Jobs(provider=provider_for(running), store=tmp_path / "share.sqlite3", autostart=False) as jobs,
    ):
        jobs.sync(all=True)
        api = _serve(jobs)

        def calls() -> int:
            return int(running.sim.stats_snapshot()["total"])

        start = calls()
        assert httpx.get(f"{api}/api/cloud/jobs?sync_active=true", timeout=60).status_code == 200
        one = calls() - start
        assert one > 0

        def together(requests: list[tuple[str, str]]) -> list[int]:
            barrier = threading.Barrier(len(requests))
            codes: list[int] = []

            def go(method: str, url: str) -> None:
                barrier.wait(10)
                codes.append(httpx.request(method, url, timeout=60).status_code)

            threads = [threading.Thread(target=go, args=r) for r in requests]
            for t in threads:
                t.start()
            for t in threads:
                t.join(90)
            return codes

        start = calls()
        codes = together([("GET", f"{api}/api/cloud/jobs?sync_active=true")] * 20)
        readers = calls() - start
        assert codes == [200] * 20
        start = calls()
        codes = together([("POST", f"{api}/api/cloud/jobs/sync?limit={10 * (i + 1)}") for i in range(20)])
        syncs = calls() - start
        assert codes == [200] * 20
        print(f"one refresh: {one} calls; 20 concurrent readers: {readers}; 20 syncs: {syncs}")
        assert readers <= 2 * one, (one, readers)
        assert syncs <= 4, syncs  # a first sync, then one of the largest limit for all who waited


# ------------------------------------------------------------------------------- memory


@pytest.mark.slow
def test_sixteen_31_mib_forged_webhooks_do_not_hold_their_size_in_memory(tmp_path: Path):
    """Regression: unsigned bodies were read whole before the signature check: 16 concurrent 31 MiB
    posts took the server from 91 to 507 MB. Bodies are now hashed as they stream in, and the bytes of
    all deliveries not verified yet are bounded together (64 MiB by default)."""
    body = b"{" + b'"x": "' + b"a" * (31 * 1024 * 1024) + b'"}'
    with server_process(tmp_path / "mem.sqlite3", SECRET) as (port, pid):
        url = f"http://127.0.0.1:{port}/api/webhooks/replicate"
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200
        before = rss_mb(pid)
        outcomes: list[str] = []
        lock = threading.Lock()

        def post(i: int) -> None:
            headers = {
                "content-type": "application/json",
                "webhook-id": f"msg_forged_{i}",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1," + "A" * 43 + "=",
            }
            try:
                outcome = str(httpx.post(url, content=body, headers=headers, timeout=120).status_code)
            except httpx.TransportError as exc:  # refused early: the server closed while we still sent
                outcome = type(exc).__name__
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        peak = rss_mb(pid, "VmHWM")
        growth = peak - before
        print(
            f"RSS {before:.0f} MB before, peak {peak:.0f} MB (+{growth:.0f} MB); answers: {sorted(outcomes)}"
        )
        assert len(outcomes) == 16 and "200" not in outcomes
        assert growth < 160, f"the server grew by {growth:.0f} MB under 16 forged 31 MiB webhooks"
        assert (
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).json()["webhooks"].get("applied", 0)
            == 0
        )
